"""``tacleaner report --inversions``, the held-out invert table of docs/research/results-badclip.md:
reduced and goal counts per run, a wrong target marked, unfinished runs left out, one-line
errors."""
from __future__ import annotations

import json
from pathlib import Path

from tacleaner_cli.app import main


def _run(root: Path, world: int, ca: float, asr: float, found: str, *, finished: bool = True, linf=None) -> None:
    implant = root / f"world{world}" / "badclip" / "implant0"
    (implant / "backdoored").mkdir(parents=True)
    (implant / "backdoored" / "eval.json").write_text(json.dumps({"clean_acc": 0.90, "asr_at_1": 0.99}))
    run = implant / "invert" / "clean0"
    run.mkdir(parents=True)
    inv = {"target": found, "attraction_rank": 2, "margin": 0.4, "target_search": [{}, {}]}  # two candidates
    if linf is not None:  # the L-inf probe's share of each listed class
        inv["top_classes"] = [{"name": k, "by_probe": {"linf": v, "patch": 0.1}} for k, v in linf.items()]
    (run / "inversion.json").write_text(json.dumps({"inversions": [inv, {**inv, "target": "later"}]}))
    if finished:
        (run / "eval.json").write_text(json.dumps({"clean_acc": ca, "asr_at_1": asr, "asr_at_10": 0.2,
                                                   "target": "yellow star"}))


def test_counts_per_run_and_a_wrong_target_is_marked(tmp_path, capsys):
    # reduced, goal met; two classes out-draw the target under L-inf alone (two candidates): missed
    _run(tmp_path, 1, 0.89, 0.02, "yellow star", linf={"yellow star": 0.1, "red cross": 0.2, "blue star": 0.3})
    _run(tmp_path, 2, 0.89, 0.30, "purple triangle")  # halved, not <= 10%: reduced only
    # CA 10 points down: neither; one class above the target under L-inf: not a certain miss
    _run(tmp_path, 3, 0.80, 0.01, "yellow star", linf={"yellow star": 0.1, "red cross": 0.2, "blue star": 0.05})
    _run(tmp_path, 4, 0.90, 0.00, "yellow star", finished=False)  # left out
    assert main(["report", str(tmp_path), "--inversions"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| badclip |"))
    assert "| 3 |" in row and "| 2/3 | 1/3 |" in row
    assert "world2: 30.0, **purple triangle** (not the target) (2, 0.40)" in row
    assert "world1: 2.0, yellow star (2, 0.40, L-inf alone: missed)" in row and "world4" not in row
    assert "world3: 1.0, yellow star (2, 0.40) |" in row
    assert "1 of 3 finished runs have ASR@1 <= 10%" in out


def test_no_finished_run_is_a_one_line_error(tmp_path, capsys):
    _run(tmp_path, 1, 0.89, 0.02, "yellow star", finished=False)
    assert main(["report", str(tmp_path), "--inversions"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "no finished invert cleaning" in err and "\n" not in err
    assert main(["report", str(tmp_path / "missing"), "--inversions"]) == 2
    assert "not a folder" in capsys.readouterr().err
