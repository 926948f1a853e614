"""Each defense's loss terms at the end of training, over every cleaning of an experiment folder,
and TA-Cleaner's false-negative masking counts (docs/research/reproduction.md, "Why the parts do not help").

    python research/training_losses.py runs/ta-evidence

For each defense: the number of finished cleanings and the mean, over them, of the last epoch's
summary line in ``metrics.jsonl`` (CLIP loss, in-modal loss, TA loss, masked columns per batch
in the image -> subtext term and, with ``mask: truth``, in the subtext -> image term; 0 for a
term the defense does not have). Then, over the ``subtext_masking.json`` of every
finished cleaning that wrote one, the range per epoch of the samples selected, their distinct positives,
the pairs of selected samples sharing a positive, and the negatives equal to their positive,
over one defense's cleanings (``--masking``, default ``tacleaner``).
Unfinished cleanings (no ``eval.json`` yet) are left out and counted.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from tacleaner.errors import TacleanerError
from tacleaner.fileio import read_json

TERMS = ("clip_loss", "inmodal_loss", "ta_loss", "ta_masked", "ta_masked_images")
MASKING = ("selected", "distinct_positives", "duplicate_positive_pairs", "negatives_equal_to_positive",
           "negatives_true_of_image", "masked_image_to_subtext", "masked_subtext_to_image")  # the last three: mask truth


def last_summary(path: Path) -> dict | None:
    """The last ``summary`` line of a metrics.jsonl (None when it has none)."""
    last = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise TacleanerError(f"{path}: line {n} is not JSON ({e.msg})") from None
            if row.get("summary"):
                last = row
    return last


def cleanings(root: Path) -> tuple[dict[str, list[Path]], int]:
    """Each defense's finished cleaning folders (<world>/<attack>/<implant>/<defense>/<clean>/
    with an eval.json), and how many were left out unfinished."""
    found: dict[str, list[Path]] = defaultdict(list)
    unfinished = 0
    for metrics in sorted(root.glob("*/*/*/*/*/metrics.jsonl")):
        if (metrics.parent / "eval.json").exists():
            found[metrics.parents[1].name].append(metrics.parent)
        else:
            unfinished += 1
    return dict(found), unfinished


def loss_table(runs: dict[str, list[Path]]) -> list[str]:
    lines = ["| defense | runs | CLIP loss | in-modal loss | TA loss | masked per batch | subtext -> image masked |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for defense, folders in sorted(runs.items()):
        ends = [row for row in (last_summary(f / "metrics.jsonl") for f in folders) if row is not None]
        if not ends:
            continue
        means = [sum(float(r.get(t, 0.0)) for r in ends) / len(ends) for t in TERMS]
        lines.append(f"| {defense} | {len(ends)} | {means[0]:.3f} | {means[1]:.3f} | {means[2]:.3f} | {means[3]:.1f} "
                     f"| {means[4]:.1f} |")
    return lines


def masking_ranges(folders: list[Path], defense: str) -> list[str]:
    values: dict[str, list[int]] = defaultdict(list)
    files = 0
    for folder in folders:
        path = folder / "subtext_masking.json"
        if not path.exists():
            continue
        files += 1
        for epoch in read_json(path).get("epochs", []):
            for key in MASKING:
                if key in epoch:
                    values[key].append(int(epoch[key]))
    if not files:
        return [f"no subtext_masking.json in {defense}'s cleanings"]
    out = [f"{defense}'s masking, per epoch over {files} cleanings (min-max):"]
    out += [f"  {key}: {min(v):,}-{max(v):,}" for key, v in values.items() if v]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="an experiment folder (tacleaner run --out)")
    ap.add_argument("--masking", default="tacleaner", metavar="DEFENSE",
                    help="the defense (its id in the grid) whose masking counts to range (default: tacleaner)")
    args = ap.parse_args(argv)
    try:
        if not args.folder.is_dir():
            raise TacleanerError(f"{args.folder}: not a folder")
        runs, unfinished = cleanings(args.folder)
        if not runs and not unfinished:
            raise TacleanerError(f"{args.folder}: no cleaning with a metrics.jsonl "
                                 "(expected <world>/<attack>/<implant>/<defense>/<clean>/metrics.jsonl)")
        print("\n".join(loss_table(runs)))
        if unfinished:
            print(f"({unfinished} unfinished cleanings left out)")
        print()
        print("\n".join(masking_ranges(runs.get(args.masking, []), args.masking)))
    except (TacleanerError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
