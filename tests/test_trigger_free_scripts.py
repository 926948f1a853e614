"""The statistics of the trigger-free measurements (research/cleaning_evidence.py,
research/scan_grid.py), checked on hand-computed cases."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "research" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spearman_averages_ties_and_gives_a_fisher_interval():
    ev = script("cleaning_evidence")
    assert ev.ranks([5, 6, 7, 8, 7]) == [1, 2, 3.5, 5, 3.5]
    rho, lo, hi = ev.spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7])
    assert rho == pytest.approx(8 / math.sqrt(10 * 9.5))
    se = 1.06 / math.sqrt(5 - 3)
    assert lo == pytest.approx(math.tanh(math.atanh(rho) - 1.96 * se))
    assert hi == pytest.approx(math.tanh(math.atanh(rho) + 1.96 * se))
    assert ev.spearman([1, 2, 3, 4], [4, 3, 2, 1])[0] == pytest.approx(-1.0)


def record(kind: str, top: str, shares: dict[str, float], target: str | None = None, asr: float | None = None) -> dict:
    return {"key": top, "kind": kind, "target": target, "asr_at_1": asr, "attack": "a" if target else None,
            "attraction": {n: {"linf": s, "patch": s} for n, s in shares.items()}}


def test_the_scan_decision_counts_against_the_cut():
    sg = script("scan_grid")
    flat = {f"c{i}": 0.01 * (i % 3) for i in range(20)}  # median 0.01, MAD 0.01
    clean = record("clean", "x", {**flat, "c0": 0.1})  # anomaly (0.1 - 0.01) / 0.014826 = 6.1
    bad = record("backdoored", "y", {**flat, "c1": 0.5}, target="c1", asr=0.99)  # 33.0
    wrong = record("backdoored", "z", {**flat, "c2": 0.5}, target="c5", asr=0.9)  # suspected, wrong class
    weak = record("backdoored", "w", flat, target="c1", asr=0.1)  # did not learn: reported apart
    row = sg.decision_table([clean, bad, wrong, weak], ["linf", "patch"], 15.0)[0]
    assert row.startswith("| 1 clean, 2 learned backdoors (1 that did not learn theirs apart) | 1/1 ")
    cells = [c.strip() for c in row.split("|")]
    assert cells[3].startswith("2/2 ") and cells[4].startswith("1/2 ") and cells[5].startswith("1/2 ")
    assert sg.choose_cut([clean, bad], ["linf", "patch"]) == pytest.approx((6.07 + 33.05) / 2, abs=0.05)


def world_record(world: str, key: str, kind: str, shares: dict[str, float], target=None, asr=None) -> dict:
    return {**record(kind, key, shares, target, asr), "key": f"{world}/{key}", "world": world}


def test_the_reference_scan_is_chosen_on_the_tune_world_and_counted_on_the_others():
    """Every world has a natural attractor ``n`` (strong on its pretrained model and on every
    fine-tune) and background classes; a backdoor adds pull toward ``t``. Without a reference the
    clean fine-tunes' top class is ``n``; against the pretrained model their gain is flat, and
    only the backdoors stand out. The cut is the lowest whole number above the tune world's clean
    tops; a backdoor that did not fire (ASR@1 < 50%) is left out of the counts."""
    sr = script("scan_reference")
    base = {f"c{i}": 0.01 * (i % 3) for i in range(20)}
    records = []
    for world in ("world10", "world11"):
        records.append(world_record(world, "pretrain", "clean", {**base, "n": 0.3, "t": 0.0}))
        records.append(world_record(world, "ft", "clean", {**base, "n": 0.32, "t": 0.0, "c3": 0.07}))
        records.append(world_record(world, "bd", "backdoored", {**base, "n": 0.3, "t": 0.4}, "t", 0.99))
        records.append(world_record(world, "weak", "backdoored", {**base, "n": 0.3, "t": 0.02}, "t", 0.1))
    res = sr.measure(records)
    assert res["way"] == "difference" and res["tune_world"] == "world10"
    # ft's gains: c3 +0.07, n +0.02, the rest 0 -> median 0, MAD 0 -> the scale is floored at
    # 1e-3: c3's index 0.07 / 1e-3 = 70, so the cut is 71
    assert res["cut"] == 71.0
    t = res["test"]
    assert (t["clean_called_clean"], t["clean"], t["fired_suspected"], t["fired"]) == (1, 1, 1, 1)
    assert t["fired_toward_target"] == 1 and t["missed"] == []
    alone = res["without_reference"]  # at cut 15, the fine-tune's attractor n is a false alarm
    assert alone["clean_called_clean"] == 0


def test_the_shipped_reference_measurement_is_what_the_recorded_scans_give():
    import json

    sr = script("scan_reference")
    data = ROOT / "docs" / "research" / "data"
    got = sr.measure(json.loads((data / "trigger-free-scans.json").read_text())["records"])
    shipped = json.loads((data / "trigger-free-scan-reference.json").read_text())
    assert (got["way"], got["cut"]) == (shipped["way"], shipped["cut"])
    for key in ("clean_called_clean", "fired_suspected", "fired_toward_target", "clean", "fired", "missed"):
        assert got["test"][key] == shipped["test"][key]
    assert got["test"]["auroc"] == pytest.approx(shipped["test"]["auroc"])
