"""Re-derive the per-run counts and verdict lines of published results pages, and of the demo's
held-out record, from the rows the pages record ("Every run:" tables), under the current verdict
rule (``report.per_run_checks``: removed = back within 5 points of the clean model's ASR@1,
reduced = halved; both with CA within 5 points). Nothing is retrained:

    python research/rederive_verdicts.py docs/research/results-demo-heldout.md \
        docs/research/results-par-heldout.md docs/research/results-tacleaner-heldout.md \
        --record src/tacleaner/configs/demo.heldout.json

A record entry is re-derived from the page whose command it names. Tune-set rows are not
published, so the tune columns keep their halved counts (as ``reduced``) and say "—" for removed.
Rows are read at the pages' precision (0.1 point).
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from tacleaner.fileio import read_json, write_json, write_text
from tacleaner.report import per_run_checks, per_run_markdown, points_cell, removed_cell

_PER_RUN = re.compile(r"\nPer run[,:].*?\nVerdicts \(each true of every run above, whatever the machine\):\n\n(?:- [^\n]*\n)+",
                      re.S)
_SELECTION = re.compile(r"\nPer-run checks \(.*?:\n\n\|.*\n\|.*\n((?:\|.*\n)+)")


def rows_of(page: str) -> list[dict]:
    """The rows of a page's "Every run:" table, as report rows (fractions, ``None`` for "—")."""
    table = page.split("\nEvery run:\n", 1)[1].strip().splitlines()[2:]
    rows = []
    for line in table:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) != 8:
            break
        num = lambda x: None if x == "—" else float(x) / 100  # noqa: E731
        seed = lambda x: None if x == "—" else int(x)  # noqa: E731
        rows.append({"attack": cells[0], "defense": cells[1], "world_seed": seed(cells[2]),
                     "implant_seed": seed(cells[3]), "clean_seed": seed(cells[4]), "clean_acc": num(cells[5]),
                     "asr_at_1": num(cells[6]), "asr_at_10": num(cells[7])})
    return rows


def _tune_cells(old: list[str]) -> str:
    """The old table's tune cells (both, worst CA change) in the new layout."""
    return f"— | {old[2]} | {old[3]}"


def rederive(page: str) -> str:
    rows = rows_of(page)
    page = _PER_RUN.sub(lambda _: "\n" + "\n".join(per_run_markdown(rows)[1:]) + "\n", page, count=1)
    checks = {(c["attack"], c["defense"]): c for c in per_run_checks(rows)}
    match = _SELECTION.search(page)
    if match:
        lines = []
        for line in match.group(1).splitlines():
            old = [c.strip() for c in line.strip("|").split("|")]
            t = checks[(old[0], old[1])]
            lines.append(f"| {old[0]} | {old[1]} | {_tune_cells(old)} | {removed_cell(t)} | {t['reduced']}/{t['n']} | "
                         f"{t['ca_kept']}/{t['n']} | {100 * t['worst_asr']:.1f} | {points_cell(t['worst_over_floor'])} | "
                         f"{100 * t['worst_ca_change']:+.1f} |")
        head = ("\nPer-run checks on the tune set and on the held-out test set (removed: ASR@1 within 5 points of the "
                "clean model's; reduced: ASR@1 halved; both with CA within 5 points; test split of each world; tune "
                "rows are not published, so their removed count is not re-derived):\n\n"
                "| attack | defense | tune: removed | tune: reduced | tune: worst CA change | test: removed | "
                "test: reduced | test: CA within 5 | test: worst ASR@1 % | test: worst above floor | "
                "test: worst CA change |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
        page = page[:match.start()] + head + "\n".join(lines) + "\n" + page[match.end():]
    return page


def rederive_record(record: dict, pages: dict[str, str]) -> dict:
    """The record with every defense's test checks recomputed from the page of its command."""
    out = []
    for d in record["defenses"]:
        page = next(p for p in pages.values() if d["command"] in p)
        (test,) = [c for c in per_run_checks(rows_of(page)) if (c["attack"], c["defense"]) == (d["attack"],
                                                                                              d["defense"])]
        tune = d.get("tune")
        if tune is not None and "reduced" not in tune:
            tune = {**{k: v for k, v in tune.items() if k != "both"}, "reduced": tune["both"], "floor_n": 0,
                    "at_floor": 0, "removed": 0, "worst_over_floor": None}
        out.append({**d, "test": test, "tune": tune})
    return {**record, "defenses": out}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("pages", nargs="+", type=Path)
    ap.add_argument("--record", type=Path)
    args = ap.parse_args()
    texts = {p.as_posix(): p.read_text() for p in args.pages}
    for path, text in texts.items():
        write_text(Path(path), rederive(text))
    if args.record:
        write_json(args.record, rederive_record(read_json(args.record), texts))


if __name__ == "__main__":
    main()
