"""Cost of a TA-Cleaner training step against CleanCLIP's (and plain fine-tuning's) on the same
batches, measured side by side in one process.

Each objective collates the same dataset samples into its batch (TA-Cleaner's includes the
subtexts of this epoch's selected samples), then a timed step runs collate + forward + backward
+ AdamW. Repeats are interleaved so machine drift hits all alike; medians are reported with the
ratios to CleanCLIP. Subtext generation happens at epoch start, outside the step: its cost is
reported separately (captions/s) by benchmarks/bench_subtexts.py.

    python benchmarks/bench_defenses.py [--batch-size 128] [--repeats 7]
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tacleaner-tiny-rn")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--pairs", type=int, default=2000, help="size of the clean set (k is a fraction of it)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--k", type=float, default=None, help="TA-Cleaner's k (default: the defense's default)")
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    names = ("finetune", "cleanclip", "tacleaner")
    with tempfile.TemporaryDirectory() as d:
        generate(Path(d) / "w", SynthConfig(pretrain=0, implant=0, clean=args.pairs, zeroshot_per_class=0),
                 progress=False)
        table = read_pairs(Path(d) / "w" / "clean.csv")
        base = create_model(args.model)
        ds = PairDataset(table)
        runs = {}
        for name in names:
            bundle = copy.deepcopy(base)
            params = {"k": args.k} if name == "tacleaner" and args.k is not None else {}
            objective = create_defense(name, **params)
            objective.setup(bundle, table, seed=0)
            objective.on_epoch_start(0)
            opt = torch.optim.AdamW(param_groups(bundle.model, 0.1), lr=1e-5, fused=True)
            runs[name] = (bundle.model.train(), objective, opt)
        g = torch.Generator().manual_seed(0)
        batches = [[ds[int(i)] for i in torch.randperm(len(ds), generator=g)[:args.batch_size]]
                   for _ in range(args.repeats + 1)]

        def step(name: str, samples: list[dict]) -> float:
            model, objective, opt = runs[name]
            t = time.perf_counter()
            batch = objective.collate(samples)
            loss = sum(v for k, v in objective.losses(model, batch).items() if k.endswith("_loss"))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return time.perf_counter() - t

        for name in names:
            step(name, batches[0])  # warm-up
        times = {n: [] for n in names}
        selected = []
        for samples in batches[1:]:
            for name in names:
                times[name].append(step(name, samples))
            selected.append(sum(int(s["index"]) in runs["tacleaner"][1].subtexts.selected for s in samples))
    med = {n: statistics.median(v) for n, v in times.items()}
    print(json.dumps({
        "model": args.model, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
        "selected_per_batch": statistics.median(selected),
        "median_step_s": {n: round(v, 4) for n, v in med.items()},
        "pairs_per_s": {n: round(args.batch_size / v, 1) for n, v in med.items()},
        "tacleaner_over_cleanclip": round(med["tacleaner"] / med["cleanclip"], 3),
        "cleanclip_over_finetune": round(med["cleanclip"] / med["finetune"], 3),
    }, indent=2))


if __name__ == "__main__":
    main()
