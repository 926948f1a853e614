"""Measure detection settings that need no poison rate on the poisoned sets of a finished grid
(experiments/trigger-free.yaml): for every implant unit with poison, each candidate's AUROC with
the backdoored model, its recall at the poison count, and what the distribution's own cut
(robust z-score, no rate) removes.

    python research/detect_rate_free.py RUN OUT_JSON [--tune-world 10] [--page PAGE.md] [--threads 1]

Each unit's raw image features and caption features are computed once, into FEATURES/ (kept,
so that other code scores the same features), and scored by every candidate; OUT_JSON is
rewritten after each unit, and a unit already in it is not scored again (delete OUT_JSON to
rescore every unit, e.g. after changing the candidates). ``--tune-world`` is the world on which the default was chosen: the
page reports it apart and summarises the others.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from tacleaner.data.pairs import read_pairs
from tacleaner.detect.cut import robust_z
from tacleaner.detect.outputs import auroc
from tacleaner.detect.score import Reference, embed_rows, reference_rows
from tacleaner.models import load_model
from tacleaner.train import is_complete

# (detector, features, k, reference): the paper's three at its k on both feature spaces, the
# norm, and density at the two (k, reference) settings looked at before
CANDIDATES = [(d, f, 16, 4096) for d in ("k-distance", "slof", "dao") for f in ("raw", "normalised")] + [
    ("norm", "raw", 16, 4096), ("density", "normalised", 16, 4096), ("density", "normalised", 64, 1024),
    ("density", "raw", 16, 4096)]
Z_CUTS = (1.5, 2.0, 2.5, 3.0, 3.5, 5.0)
# two signals joined by adding their robust z-scores (each on its own scale, no rate needed)
COMBINATIONS = [("norm", "disagreement"), ("norm", "density normalised (16, 4096)"),
                ("norm", "k-distance raw (16, 4096)"), ("norm", "disagreement", "k-distance raw (16, 4096)")]


def auroc_cell(vals: list[float]) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from detect_grid import auroc_cell as cell

    return cell(vals)


def units(run: Path):
    for world in sorted(run.glob("world*")):
        for unit in sorted(world.glob("*/implant*")):
            idx = unit / "poison" / "poisoned_indices.json"
            if is_complete(unit / "backdoored") and idx.is_file() and json.loads(idx.read_text()):
                yield int(world.name[5:]), unit.parent.name, unit


def label(c) -> str:
    d, f, k, r = c
    return d if d == "norm" else f"{d} {f} ({k}, {r})"


@torch.no_grad()
def text_features(bundle, captions: list[str], batch: int = 512) -> torch.Tensor:
    model = bundle.model.eval()
    return torch.cat([model.encode_text(bundle.tokenizer(captions[i:i + batch])).float()
                      for i in range(0, len(captions), batch)])


def scores_of(c, emb: torch.Tensor) -> np.ndarray:
    d, f, k, size = c
    rows = reference_rows(len(emb), size, 0)
    ref = Reference.build(rows, emb[rows], k, f)
    return torch.cat([ref.score(d, list(range(lo, min(lo + 2048, len(emb)))), emb[lo:lo + 2048], k)
                      for lo in range(0, len(emb), 2048)]).double().numpy()


def rates(scores: np.ndarray, truth: np.ndarray) -> dict:
    top = np.argsort(-scores, kind="mergesort")[:int(truth.sum())]
    out = {"auroc": round(auroc(scores, truth), 4), "recall_at_poison_count": round(float(truth[top].mean()), 4)}
    z = robust_z(scores)
    for cut in Z_CUTS:
        removed = z >= cut
        out[f"z{cut}"] = {"removed_poisoned": int((removed & truth).sum()), "removed_clean": int((removed & ~truth).sum())}
    return out


def extract(unit: Path, path: Path) -> None:
    """The unit's raw image features, caption features and poisoned rows, with its backdoored
    model, into ``path`` (.npz): computed once, scored by every candidate."""
    table = read_pairs(unit / "poison" / "data.csv")
    truth = np.zeros(len(table), dtype=bool)
    truth[json.loads((unit / "poison" / "poisoned_indices.json").read_text())] = True
    bundle = load_model(unit / "backdoored" / "model.safetensors")
    _, emb = embed_rows(bundle, table, range(len(table)), torch.device("cpu"), 256, 0, {}, normalize=False)
    txt = text_features(bundle, list(table.captions))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, image=emb.numpy(), text=txt.numpy(), truth=truth)
    tmp.replace(path)


def measure(features: Path) -> dict:
    d = np.load(features)
    emb, txt, truth = torch.from_numpy(d["image"]), torch.from_numpy(d["text"]), d["truth"]
    out: dict = {"rows": len(truth), "poisoned": int(truth.sum())}
    scores = {label(c): scores_of(c, emb) for c in CANDIDATES}
    agree = torch.nn.functional.cosine_similarity(emb, txt).double().numpy()
    scores["agreement"], scores["disagreement"] = agree, -agree
    for parts in COMBINATIONS:
        scores[" + ".join(parts)] = np.sum([robust_z(scores[p]) for p in parts], axis=0)
    for name, s in scores.items():
        out[name] = rates(s, truth)
    return out


DEFAULT = "norm + disagreement"  # the shipped detector (tacleaner.detect.score.DEFAULT_DETECTOR)
DEFAULT_CUT = 2.0  # the shipped cut (tacleaner.detect.cut.DEFAULT_Z)


def headline(results: list[dict], tune_world: int | None, reference: dict | None = None) -> str:
    """Per attack: the default detector's AUROC on each test world and on the tune world, and
    what its default cut removed on the test worlds; beside it the best of the paper's
    detectors computed here and, given ``reference`` (AUROC per unit from Huang et al.'s code on
    the same features), theirs."""
    worlds = sorted({r["world"] for r in results if r["world"] != tune_world})
    cols = [f"world {w}" for w in worlds]
    lines = ["| attack | poisoned | " + " | ".join(cols) + f" | world {tune_world} (tune) | removed at z >= "
             f"{DEFAULT_CUT:g}: poisoned / clean (test worlds) | `norm` alone | `dao` raw (ours) |"
             + (" Huang et al.'s code: k-distance / slof / dao |" if reference else ""),
             "|---|---:|" + "---:|" * (len(cols) + 4) + ("---|" if reference else "")]
    for attack in sorted({r["attack"] for r in results}):
        rows = {r["world"]: r for r in results if r["attack"] == attack}
        test = [rows[w] for w in worlds if w in rows]
        cells = [f"{rows[w][DEFAULT]['auroc']:.3f}" if w in rows else "—" for w in worlds]
        tune = f"{rows[tune_world][DEFAULT]['auroc']:.3f}" if tune_world in rows else "—"
        cut = f"z{DEFAULT_CUT}"
        pois = sum(r[DEFAULT][cut]["removed_poisoned"] for r in test)
        clean = sum(r[DEFAULT][cut]["removed_clean"] for r in test)
        npois = sum(r["poisoned"] for r in test)
        nclean = sum(r["rows"] - r["poisoned"] for r in test)
        removed = f"{100 * pois / npois:.1f}% / {100 * clean / nclean:.1f}%" if test else "—"
        alone = ", ".join(f"{r['norm']['auroc']:.3f}" for r in test)
        dao = ", ".join(f"{r['dao raw (16, 4096)']['auroc']:.3f}" for r in test)
        line = (f"| {attack} | {(test or [rows[tune_world]])[0]['poisoned']} | " + " | ".join(cells)
                + f" | {tune} | {removed} | {alone} | {dao} |")
        if reference:
            refs = [reference.get(f"world{r['world']}-{attack}-{r['unit']}") for r in test]
            line += " " + "; ".join(f"{x['k-distance']:.2f} / {x['slof']:.2f} / {x['dao']:.2f}" for x in refs if x) + " |"
        lines.append(line)
    return "\n".join(lines)


def page(results: list[dict], tune_world: int | None, command: str) -> str:
    from tacleaner.environment import cpu_model

    names = [label(c) for c in CANDIDATES] + ["agreement", "disagreement"] + [" + ".join(c) for c in COMBINATIONS]
    lines = [f"Produced by `{command}` (one {cpu_model()}, CPU only, torch {torch.__version__}, one thread).", ""]
    for attack in sorted({r["attack"] for r in results}):
        test = [r for r in results if r["attack"] == attack and r["world"] != tune_world]
        tune = [r for r in results if r["attack"] == attack and r["world"] == tune_world]
        lines += [f"### {attack} ({test[0]['poisoned'] if test else tune[0]['poisoned']} of "
                  f"{(test or tune)[0]['rows']} poisoned; test worlds {', '.join(str(r['world']) for r in test)})", "",
                  "| detector | AUROC, test worlds | min | recall at the poison count |"
                  + (f" world {tune_world} (tune) |" if tune else ""), "|---|---|---|---|" + ("---|" if tune else "")]
        for name in names:
            vals = [r[name]["auroc"] for r in test]
            cell = auroc_cell(vals)
            rec = f"{100 * np.mean([r[name]['recall_at_poison_count'] for r in test]):.1f}%" if test else "—"
            lines.append(f"| {name} | {cell} | {min(vals):.3f} | {rec} |" if vals else f"| {name} | — | — | — |")
            if tune:
                lines[-1] += f" {tune[0][name]['auroc']:.3f} |"
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--tune-world", type=lambda v: None if v == "none" else int(v), default=10)
    p.add_argument("--page", type=Path)
    p.add_argument("--reference", type=Path, help="AUROC per unit from Huang et al.'s code on the same features "
                   "(JSON keyed by feature file name), shown beside ours on the page")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--features", type=Path, help="folder of each unit's features (.npz; default OUT_JSON's folder/"
                   "features)")
    args = p.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    feats = args.features or args.out.parent / "features"
    # resumable: units already in OUT_JSON are kept as they are (was: every run started from none
    # and rewrote OUT_JSON with only the units it had reached)
    done = {(r["world"], r["attack"], r["unit"]): r for r in json.loads(args.out.read_text())} if args.out.exists() else {}
    for world, attack, unit in units(args.run):
        if (world, attack, unit.name) in done:
            continue
        path = feats / f"world{world}-{attack}-{unit.name}.npz"
        if not path.is_file():
            extract(unit, path)
        done[(world, attack, unit.name)] = {"world": world, "attack": attack, "unit": unit.name, **measure(path)}
        args.out.write_text(json.dumps(list(done.values()), indent=1) + "\n")
        print(world, attack, {k: v["auroc"] for k, v in done[(world, attack, unit.name)].items() if isinstance(v, dict)},
              flush=True)
    if args.page:
        command = f"python research/detect_rate_free.py {args.run} {args.out} --tune-world {args.tune_world}"
        ref = json.loads(args.reference.read_text()) if args.reference else None
        args.page.write_text(headline(list(done.values()), args.tune_world, ref) + "\n\n"
                             + page(list(done.values()), args.tune_world, command) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
