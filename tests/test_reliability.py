"""The reliability lines that `detect`, `scan` and `clean --check` print come from the shipped
measurements (docs/research/data/), computed by research/reliability_record.py: the record in the package
must be what those data give, and must describe the shipped defaults."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_script():
    spec = importlib.util.spec_from_file_location("reliability_record", ROOT / "research" / "reliability_record.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_record_is_what_the_shipped_measurements_give():
    script = load_script()
    assert script.main(["--check"]) == 0
    from tacleaner import findings

    for answer in ("scan", "scan_reference", "detect", "cleaning"):
        line = findings.reliability_line(answer)
        assert line.startswith("reliability (docs/research/results-trigger-free.md#") and "not measured" not in line


def test_the_measurements_are_of_the_shipped_defaults():
    from tacleaner.detect.cut import DEFAULT_Z
    from tacleaner.detect.score import DEFAULT_DETECTOR
    from tacleaner.scan import DECISION_CUT, REFERENCE_CUT

    scans = json.loads((ROOT / "docs" / "research" / "data" / "trigger-free-scans.json").read_text())
    assert scans["cut"] == DECISION_CUT
    reference = json.loads((ROOT / "docs" / "research" / "data" / "trigger-free-scan-reference.json").read_text())
    assert reference["cut"] == REFERENCE_CUT and reference["way"] == "difference"
    rows = json.loads((ROOT / "docs" / "research" / "data" / "trigger-free-detect.json").read_text())
    script = load_script()
    entry = script.detect_entry(rows, DEFAULT_DETECTOR.replace("+", " + "), f"z{DEFAULT_Z}")
    assert entry == script.build()["detect"]
    # a detector other than the shipped one gives other figures: the record is not generic
    assert script.detect_entry(rows, "norm")["line"] != entry["line"]
