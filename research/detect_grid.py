"""Measure the detectors on the poisoned sets of a finished experiment grid: for every unit
(world, attack, implant seed), the implant set's poisoned rows are known; each detector scores
that set with the backdoored model and with the clean model from before the attack.

    python research/detect_grid.py RUN_FOLDER OUT_JSON [--page docs/research/results-detect.md] \
        [--tune-world 4 | --tune-world none] [--threads 1]

Embeddings are computed once per (unit, model) and shared by every detector setting. The
settings compared are fixed in SETTINGS below: the paper's (k 16 against a 4096-row
reference) for k-distance, SLOF and DAO, and ``density`` at k 64 against 1024 rows. The
latter was picked by looking at AUROC on one unit (world 4, BadNet: ``--tune-world``), so that
world is reported apart and the summary is over the other worlds only; ``--tune-world none``
for a grid none of whose worlds was looked at (experiments/detect-auroc.yaml).
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tacleaner.data.pairs import read_pairs
from tacleaner.detect.outputs import auroc
from tacleaner.detect.score import Reference, embed_rows, reference_rows
from tacleaner.models import load_model
from tacleaner.stats import summarize

SETTINGS = [("k-distance", 16, 4096), ("slof", 16, 4096), ("dao", 16, 4096), ("density", 64, 1024)]


def units(run: Path):
    """(world, attack, implant folder) of every finished implant in the run."""
    for world in sorted(run.glob("world*")):
        for unit in sorted(world.glob("*/implant*")):
            if (unit / "backdoored" / "model.safetensors").is_file() and (unit / "poison" / "poisoned_indices.json").is_file():
                yield int(world.name[5:]), unit.parent.name, unit


def measure(world_dir: Path, unit: Path) -> dict:
    table = read_pairs(unit / "poison" / "data.csv")
    truth = np.zeros(len(table), dtype=bool)
    truth[json.loads((unit / "poison" / "poisoned_indices.json").read_text())] = True
    out: dict = {"rows": len(table), "poisoned": int(truth.sum())}
    for which, ck in (("backdoored", unit / "backdoored" / "model.safetensors"),
                      ("clean", world_dir / "pretrain" / "model.safetensors")):
        t = time.perf_counter()
        _, emb = embed_rows(load_model(ck), table, range(len(table)), torch.device("cpu"), 256, 0, {})
        for name, k, size in SETTINGS:
            rows = reference_rows(len(table), size, 0)
            ref = Reference.build(rows, emb[rows], k)
            scores = torch.cat([ref.score(name, list(range(lo, min(lo + 2048, len(table)))), emb[lo:lo + 2048], k)
                                for lo in range(0, len(table), 2048)]).numpy()
            top = np.argsort(-scores, kind="mergesort")[:int(truth.sum())]
            out[f"{which}/{name}"] = {"auroc": round(auroc(scores, truth), 4),
                                      "recall_at_poison_count": round(float(truth[top].mean()), 4)}
        out[f"{which}/seconds"] = round(time.perf_counter() - t, 1)
    return out


def auroc_cell(vals: list[float]) -> str:
    """AUROCs over worlds as a table cell: the mean and its Student-t 95% interval from two on."""
    if len(vals) >= 2:
        sm = summarize(vals)
        return f"{sm.mean:.3f} [{sm.lo:.3f}, {sm.hi:.3f}]"
    return f"{vals[0]:.3f}" if vals else "—"


def units_label(rows: list[dict]) -> str:
    """What the n of a section counts: worlds when each world has one backdoored model, else the
    backdoored models themselves (several implant seeds of one world are not several worlds)."""
    if len({r["world"] for r in rows}) == len(rows):
        return "worlds: " + ", ".join(str(r["world"]) for r in rows)
    return "backdoored models: " + ", ".join(f"world {r['world']} {r['unit']}" for r in rows)


def page(results: list[dict], tune_world: int | None, command: str) -> str:
    from tacleaner.environment import cpu_model

    cpu = cpu_model()
    lines = ["# Finding the poison: detectors on the shipped grids' poisoned sets", "",
             f"Produced by `{command}` after the grid's own `tacleaner run` (one {cpu}, CPU only, "
             f"torch {torch.__version__}, one thread). AUROC of each detector's score for telling",
             "the poisoned rows of an implant set from the clean ones (1 = every poisoned row scores above",
             "every clean one; 0.5 = chance; below 0.5 = the detector ranks the poison *last*), with the",
             "backdoored model (trained on that set) and with the clean model from before the attack.",
             (f"`density`'s k and reference were picked on world {tune_world} (shown apart); the means are "
              "over the other worlds." if tune_world is not None else
              "`density`'s k and reference were picked on world 4 of the demo's held-out grid, BadNet "
              "(docs/detect.md), none of this grid's worlds: every world counts."),
             "Another machine's arithmetic changes the models themselves (the grid is",
             "retrained there), so expect the spread across worlds shown here, not these digits.", ""]
    for attack in sorted({r["attack"] for r in results}):
        test = [r for r in results if r["attack"] == attack and r["world"] != tune_world]
        tune = [r for r in results if r["attack"] == attack and r["world"] == tune_world]
        lines += [f"## {attack} (n = {len(test)} {units_label(test)}; "
                  f"{test[0]['poisoned'] if test else '?'} of {test[0]['rows'] if test else '?'} rows poisoned)", "",
                  "| model | detector (k, reference) | AUROC mean [95% CI] | min | recall at the poison count |"
                  + (f" world {tune_world} (tune) |" if tune else ""),
                  "|---|---|---|---|---|" + ("---|" if tune else "")]
        for which in ("backdoored", "clean"):
            for name, k, size in SETTINGS:
                key = f"{which}/{name}"
                vals = [r[key]["auroc"] for r in test]
                rec = [r[key]["recall_at_poison_count"] for r in test]
                cell = auroc_cell(vals)
                lines.append(f"| {which} | {name} ({k}, {size}) | {cell} | {min(vals):.3f} | "
                             f"{100 * statistics.mean(rec):.1f}% |" + (f" {tune[0][key]['auroc']:.3f} |" if tune else "")
                             if vals else f"| {which} | {name} | — | — | — |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--page", type=Path)
    p.add_argument("--tune-world", type=lambda v: None if v == "none" else int(v), default=4,
                   help="the world a detector setting was picked on, reported apart ('none': no such world)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--label", help="how the run folder is named on the page (default: its path)")
    args = p.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    done = {(r["world"], r["attack"], r["unit"]): r for r in json.loads(args.out.read_text())} if args.out.exists() else {}
    for world, attack, unit in units(args.run):
        key = (world, attack, unit.name)
        if key in done:
            continue
        done[key] = {"world": world, "attack": attack, "unit": unit.name, **measure(unit.parent.parent, unit)}
        args.out.write_text(json.dumps(list(done.values()), indent=1) + "\n")  # resumable: one unit at a time
        print(world, attack, unit.name, {k: v for k, v in done[key].items() if "/" in k and "seconds" not in k},
              flush=True)
    if args.page:
        command = (f"python research/detect_grid.py {args.label or args.run} DETECTORS.json "
                   f"--tune-world {'none' if args.tune_world is None else args.tune_world}")
        args.page.write_text(page(list(done.values()), args.tune_world, command) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
