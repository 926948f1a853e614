"""What ``invert`` did on each backdoored model of an experiment folder (``tacleaner report
--inversions``).

Per attack: n, the backdoored models' CA / ASR@1, invert's CA, ASR@1 and ASR@10 (mean ±
half-width of the Student-t 95% interval over backdoored models), the runs reduced (ASR@1 at
most half the backdoored model's, CA no more than 5 points below it), the runs meeting the goal
(ASR@1 at most ``goal`` with CA within 5 points), and per world the ASR@1 and the target the
first inversion settled on, with its attraction rank and its flip-rate margin over the
runner-up (``inversion.json``), and "L-inf alone: missed" where, by the attraction of the
L-inf probe alone (``by_probe``, when the search probed with more than one kind), at least
``candidates`` listed classes out-drew the true target, so an L-inf-only search would not have
inverted it (a certain miss; fewer listed above it is not a certain find). Only finished
cleanings (an ``eval.json``) are read, so a grid still running can be tabled.
"""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .fileio import read_json
from .report import CA_TOLERANCE, NO_DEFENSE, per_run_checks
from .stats import format_summary, summarize


def runs(root: Path, defense: str | None) -> dict[str, list[dict]]:
    """Each attack's finished invert cleanings: <world>/<attack>/<implant>/<defense>/<clean>/."""
    found: dict[str, list[dict]] = defaultdict(list)
    for inv in sorted(root.glob("*/*/*/*/*/inversion.json")):
        run = inv.parent
        if defense is not None and run.parent.name != defense:
            continue
        if not (run / "eval.json").exists():
            continue
        backdoored = run.parents[1] / "backdoored" / "eval.json"
        first = read_json(inv)["inversions"][0]
        found[run.parents[2].name].append({"world": run.parents[3].name, "implant": run.parents[1].name, "eval": read_json(run / "eval.json"),
                                           "backdoored": read_json(backdoored), "inversion": first})
    return dict(found)


def _linf_note(inv: dict, target: str | None) -> str:
    """, L-inf alone: missed" when the L-inf probe alone ranks >= candidates listed classes above the target."""
    shares = {c["name"]: c.get("by_probe", {}).get("linf") for c in inv.get("top_classes", [])}
    if target not in shares or shares[target] is None or len(inv.get("target_search", [])) < 1:
        return ""
    above = sum(1 for name, v in shares.items() if v is not None and name != target and v > shares[target])
    return ", L-inf alone: missed" if above >= len(inv["target_search"]) else ""


def _cell(values: list[float]) -> str:
    return format_summary(summarize(values))


def table(found: dict[str, list[dict]], goal: float) -> list[str]:
    lines = ["| attack | n | backdoored CA / ASR@1 | invert CA | invert ASR@1 | invert ASR@10 | reduced | "
             f"ASR@1 <= {goal:.0%}, CA within 5 | per world: ASR@1, target (attraction rank, margin) |",
             "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    total = met = 0
    for attack, rs in sorted(found.items()):
        ok_goal = 0
        per_world = []
        rows = []  # the report's rows, so "removed" is the report's own per-run check
        for r in rs:
            e, b, inv = r["eval"], r["backdoored"], r["inversion"]
            for defense, ev in ((NO_DEFENSE, b), ("invert", e)):
                rows.append({"attack": attack, "defense": defense, "world_seed": r["world"], "implant_seed": r["implant"],
                             "clean_acc": ev["clean_acc"], "asr_at_1": ev["asr_at_1"]})
            ok_goal += e["clean_acc"] >= b["clean_acc"] - CA_TOLERANCE / 100 and e["asr_at_1"] <= goal
            right = inv["target"] == e.get("target")
            name = inv["target"] if right else f"**{inv['target']}** (not the target)"
            per_world.append(f"{r['world']}: {100 * e['asr_at_1']:.1f}, {name} "
                             f"({inv['attraction_rank']}, {inv.get('margin') or 0:.2f}{_linf_note(inv, e.get('target'))})")
        (check,) = per_run_checks(rows)  # no clean-model rows here: the reduced count
        total += len(rs)
        met += ok_goal
        bd = f"{_cell([r['backdoored']['clean_acc'] for r in rs])} / {_cell([r['backdoored']['asr_at_1'] for r in rs])}"
        lines.append(f"| {attack} | {len(rs)} | {bd} | {_cell([r['eval']['clean_acc'] for r in rs])} | "
                     f"{_cell([r['eval']['asr_at_1'] for r in rs])} | {_cell([r['eval']['asr_at_10'] for r in rs])} | "
                     f"{check['reduced']}/{len(rs)} | {ok_goal}/{len(rs)} | {'; '.join(per_world)} |")
    lines.append("")
    lines.append(f"{met} of {total} finished runs have ASR@1 <= {goal:.0%} with CA within 5 points.")
    return lines
