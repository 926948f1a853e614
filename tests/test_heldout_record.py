"""research/heldout_record.py --merge: a second grid on the same worlds replaces only its own
defenses in the shipped record, each entry naming its grid; different worlds are refused."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "research" / "heldout_record.py"
spec = importlib.util.spec_from_file_location("heldout_record", SCRIPT)
heldout_record = importlib.util.module_from_spec(spec)
spec.loader.exec_module(heldout_record)


def _record(command: str, defenses: list[str], test: list[int], chosen: str) -> dict:
    return {"command": command, "measured": "2026-12-03", "cpu_model": "cpu", "torch": "2",
            "worlds": {"tune": [0, 1, 2], "test": test}, "test_worlds_planned": [4, 5, 6],
            "defenses": [{"attack": "badnet", "defense": d, "chosen": f"{d}-{chosen}", "command": command}
                         for d in defenses]}


def test_merge_replaces_only_the_second_grids_defenses():
    base = _record("run a.yaml", ["finetune", "tacleaner"], [4, 5, 6], "a")
    for d in base["defenses"]:
        del d["command"]  # a record written before entries named their grid
    merged = heldout_record.merge(base, _record("run b.yaml", ["tacleaner"], [4, 5], "b"))
    by = {d["defense"]: d for d in merged["defenses"]}
    assert by["tacleaner"]["chosen"] == "tacleaner-b" and by["tacleaner"]["command"] == "run b.yaml"
    assert by["tacleaner"]["measured"] == "2026-12-03" and "measured" not in by["finetune"]  # the record's own date
    assert by["finetune"]["chosen"] == "finetune-a" and by["finetune"]["command"] == "run a.yaml"
    assert merged["worlds"]["test"] == [4, 5]  # only worlds both grids finished
    assert merged["command"] == "run a.yaml"


def test_merge_refuses_other_worlds():
    base = _record("run a.yaml", ["tacleaner"], [4, 5, 6], "a")
    other = {**_record("run b.yaml", ["tacleaner"], [4, 5, 6], "b"), "test_worlds_planned": [7, 8, 9]}
    with pytest.raises(SystemExit, match="planned test worlds"):
        heldout_record.merge(base, other)
