"""``tacleaner report``: an experiment's results read again from its rows: the report, every
defense paired against a baseline, extra pairs, and what ``invert`` did per world."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tacleaner.errors import TacleanerError

from .options import AddCommand


def add_parsers(add: AddCommand) -> None:
    r = add("report", "read an experiment's results again: the report (means with intervals, paired comparisons, "
            "removed / reduced counts, verdicts), or every defense paired against --baseline", report)
    r.add_argument("results", nargs="+", type=Path, metavar="RUN",
                   help="a run folder (`tacleaner run --out`; its finished units), its results.json or saved rows; "
                   "several are merged")
    r.add_argument("--baseline", help="pair every other defense against this one, attack by attack (default: the "
                   "experiment's own report)")
    r.add_argument("--pair", action="append", default=[], metavar="A:B",
                   help="also pair defense A against defense B (repeatable; with --baseline)")
    r.add_argument("--ca-equal", type=float, default=1.0,
                   help="points of mean CA below the baseline still counted as equal CA (with --baseline)")
    r.add_argument("--inversions", action="store_true",
                   help="table what invert did per world instead of the report: the target it found and its ASR (run "
                   "folders only)")
    r.add_argument("--defense", help="with --inversions: the invert defense's id in the grid (default: every run "
                   "with an inversion.json)")
    r.add_argument("--goal", type=float, default=0.10,
                   help="with --inversions: the ASR@1 a run must reach, as a fraction")
    r.add_argument("--save-rows", type=Path, metavar="FILE", help="also write the merged rows (JSON) to FILE (default: none)")


def _pairs(specs: list[str]) -> list[tuple[str, str]]:
    pairs = []
    for spec in specs:
        a, sep, b = spec.partition(":")
        if not sep or not a or not b:
            raise TacleanerError(f"--pair {spec!r}: expected A:B, two defense names")
        pairs.append((a, b))
    return pairs


def report(args: argparse.Namespace) -> int:
    from tacleaner.comparison import merge, tables
    from tacleaner.fileio import write_json
    from tacleaner.report import markdown_table

    pairs = _pairs(args.pair)
    if pairs and not args.baseline:
        raise TacleanerError("--pair needs --baseline (the experiment's own report pairs every defense already)")
    if args.inversions:
        return _inversions(args)
    rows = merge(args.results)
    defenses = {r["defense"] for r in rows}
    for name in [*([args.baseline] if args.baseline else []), *(x for ab in pairs for x in ab)]:
        if name not in defenses:
            raise TacleanerError(f"{', '.join(map(str, args.results))}: no defense {name!r} "
                                 f"(it has {', '.join(sorted(defenses))})")
    if args.save_rows:
        write_json(args.save_rows, rows)
    text = tables(rows, args.baseline, pairs, args.ca_equal) if args.baseline else markdown_table(rows)
    sys.stdout.write(text)
    return 0


def _inversions(args: argparse.Namespace) -> int:
    """The invert table of each input, a run folder with at least one finished invert cleaning."""
    from tacleaner.inversion_table import runs, table

    for folder in args.results:
        if not folder.is_dir():
            raise TacleanerError(f"{folder}: --inversions reads run folders, and this is not a folder")
        if not runs(folder, args.defense):
            raise TacleanerError(f"{folder}: no finished invert cleaning (an inversion.json beside an eval.json)"
                                 + (f" of defense {args.defense!r}" if args.defense else ""))
        print("\n".join(table(runs(folder, args.defense), args.goal)))
    return 0
