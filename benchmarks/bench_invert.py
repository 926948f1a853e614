"""Where a cleaning by ``invert`` spends its time, against CleanCLIP's, measured in one process.

An invert cleaning is: the target search (PGD probes of ``probe_images`` clean images, the
:func:`tacleaner.scan.rank_classes` of the scan), the inversion of patch triggers toward each
of ``candidates`` classes (every size x every place, ``patch_steps`` Adam steps each), repeated
at every epoch start (``reinvert``; later epochs keep the first target), and the cleaning steps
themselves (the CLIP loss plus the two distances, on the image and its stamped twin, and the
frozen model). This times each part once (the inversions) or as the median of ``--repeats``
interleaved steps (the training steps of invert and CleanCLIP on the same batches), and adds
them up for a cleaning of ``--epochs`` epochs of ``--pairs`` pairs:

    invert   = inversion(epoch 0) + (epochs - 1) x inversion(later epoch) + steps x step(invert)
    cleanclip = steps x step(cleanclip)

The model's weights do not change the work done (a fixed number of steps everywhere), so the
tiny model is used at random initialisation. Printed as JSON; the ratio is what the goal
"invert within 2x CleanCLIP's wall time" is checked against.

    python benchmarks/bench_invert.py [--pairs 5000] [--epochs 4] [--batch-size 64] [--repeats 5]
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from tacleaner.data.pairs import PairDataset, read_pairs
from tacleaner.data.synth import SynthConfig, generate
from tacleaner.defenses import create_defense
from tacleaner.models import create_model
from tacleaner.train import param_groups


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tacleaner-tiny-rn")
    ap.add_argument("--pairs", type=int, default=5000, help="clean pairs of the cleaning (the demo's 5,000)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="an invert parameter")
    args = ap.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    params = dict(p.split("=", 1) for p in args.param)
    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "w"
        generate(root, SynthConfig(pretrain=0, implant=0, clean=max(args.pairs // 10, 300), zeroshot_per_class=0,
                                   zeroshot_val_per_class=0), progress=False)
        table = read_pairs(root / "clean.csv")
        base = create_model(args.model)
        invert = create_defense("invert", classes=str(root / "classes.json"), **params)
        bundle = copy.deepcopy(base)
        parts: dict[str, float] = {}
        parts["setup_and_first_inversion_s"] = timed(lambda: invert.setup(bundle, table, seed=0))
        first = invert.triggers.found
        parts["later_inversion_s"] = timed(lambda: invert.on_epoch_start(1))
        # the first inversion's parts: the target search alone (probes), and the rest (inversions)
        from tacleaner.evaluate import build_classifier
        from tacleaner.scan import ScanConfig, ZeroShotLogits, rank_classes

        model = bundle.model.eval().requires_grad_(False)
        logits = ZeroShotLogits(bundle, build_classifier(bundle, invert.triggers.class_list, "cpu").float())
        x = invert.triggers.probe
        cfg = ScanConfig(images=len(x), probe=invert.probe)
        with torch.no_grad():
            own = logits(x).argmax(1)
        parts["target_search_s"] = timed(lambda: rank_classes(logits, x, own, cfg, invert.triggers.class_list.classnames))
        model.requires_grad_(True).train()

        cleanclip = create_defense("cleanclip", w_inmodal=0.25)
        cc_bundle = copy.deepcopy(base)
        cleanclip.setup(cc_bundle, table, seed=0)
        runs = {"invert": (bundle.model, invert), "cleanclip": (cc_bundle.model.train(), cleanclip)}
        opts = {n: torch.optim.AdamW(param_groups(m, 0.1), lr=1e-5, fused=True) for n, (m, _) in runs.items()}
        ds = PairDataset(table)
        g = torch.Generator().manual_seed(0)
        batches = [[ds[int(i)] for i in torch.randperm(len(ds), generator=g)[:args.batch_size]]
                   for _ in range(args.repeats + 1)]

        def step(name: str, samples: list[dict]) -> float:
            model, objective = runs[name]
            t = time.perf_counter()
            batch = objective.collate(samples)
            loss = sum(v for k, v in objective.losses(model, batch).items() if k.endswith("_loss"))
            opts[name].zero_grad(set_to_none=True)
            loss.backward()
            opts[name].step()
            return time.perf_counter() - t

        for name in runs:
            step(name, batches[0])
        times: dict[str, list[float]] = {n: [] for n in runs}
        for samples in batches[1:]:
            for name in runs:
                times[name].append(step(name, samples))
    med = {n: statistics.median(v) for n, v in times.items()}
    steps = (args.pairs // args.batch_size) * args.epochs
    inversions = parts["setup_and_first_inversion_s"] + (args.epochs - 1) * parts["later_inversion_s"]
    total = {"invert": inversions + steps * med["invert"], "cleanclip": steps * med["cleanclip"]}
    out = {
        "model": args.model, "pairs": args.pairs, "epochs": args.epochs, "batch_size": args.batch_size,
        "threads": torch.get_num_threads(), "invert_params": {**params},
        "candidates_inverted_first": len(first["target_search"]), "triggers_kept": len(first["triggers"]),
        "parts_s": {k: round(v, 2) for k, v in parts.items()},
        "median_step_s": {n: round(v, 4) for n, v in med.items()},
        "projected_cleaning_s": {n: round(v, 1) for n, v in total.items()},
        "share_of_invert": {"inversions": round(inversions / total["invert"], 3),
                            "steps": round(steps * med["invert"] / total["invert"], 3)},
        "invert_over_cleanclip": round(total["invert"] / total["cleanclip"], 2),
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
