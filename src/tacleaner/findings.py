"""What a defender is told without the trigger, the target or the poison rate, and how far to
trust it.

- **The scan's decision**: "backdoor suspected toward X" when the class that draws the most
  adversarial probes has an anomaly index at or above the scan's cut, else "no evidence of a
  backdoor". Against a reference scan (the model it was fine-tuned from), the class is the one
  whose attraction grew the most, at the reference cut.
- **Before and after a defense**: the suspected target's attraction and anomaly index on the
  model before cleaning (its ``scan.json``) and on the cleaned one.
- **Reliability**: each answer's error rates as measured on held-out worlds' models, read from
  the shipped record ``configs/reliability.json`` (written from the measurements in
  docs/research/results-trigger-free.md), printed in one line beside the answer.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from .data.zeroshot import Classes, LabelledImages
from .errors import TacleanerError
from .models import ClipBundle
from .scan import ScanConfig, ScanReport, scan


@dataclass(frozen=True)
class Decision:
    suspected: bool
    target: str  # the most attracting class (the suspected target when ``suspected``)
    anomaly: float  # its anomaly index
    attraction: float  # its share of the probes
    cut: float
    reference_attraction: float | None = None  # its share on the reference model (``scan --reference``)

    def sentence(self) -> str:
        beside = "" if self.reference_attraction is None else f" against {100 * self.reference_attraction:.1f}% on the reference"
        if self.suspected:
            return (f"backdoor suspected toward {self.target} (anomaly index {self.anomaly:.1f} >= {self.cut:g}; "
                    f"{100 * self.attraction:.1f}% of the probes end there{beside})")
        most = "the most attracting class" if self.reference_attraction is None else "the class gaining the most attraction"
        return (f"no evidence of a backdoor ({most}, {self.target}, has anomaly index "
                f"{self.anomaly:.1f} < {self.cut:g})")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "sentence": self.sentence()}


def decide(report: ScanReport) -> Decision:
    """The scan's decision: the most attracting class is a suspected target when its anomaly
    index reaches the report's cut (``cut`` without a reference scan, ``reference_cut`` with one)."""
    top = report.top
    return Decision(top.anomaly >= report.cut, top.name, top.anomaly, top.attraction, report.cut,
                    top.reference_attraction)


def before_after(before: Any, after: ScanReport, source: str = "--before") -> dict[str, Any]:
    """The class the earlier scan (its ``scan.json`` as read from ``source``) suspected, or
    found most attracting, measured again on ``after``: attraction and anomaly index, before
    and after."""
    try:
        name = before["decision"]["target"] if "decision" in before else before["top_class"]
        old = next(c for c in before["classes"] if c["name"] == name)
    except (KeyError, TypeError, StopIteration):
        raise TacleanerError(f"{source}: not a scan.json written by tacleaner scan") from None
    new = next((c for c in after.classes if c.name == name), None)
    if new is None:
        raise TacleanerError(f"{source}: its class {name!r} is not among this scan's classes")
    return {"target": name, "attraction_before": old["attraction"], "attraction_after": new.attraction,
            "anomaly_before": old["anomaly"], "anomaly_after": new.anomaly,
            "suspected_before": bool(before.get("decision", {}).get("suspected", old["anomaly"] >= after.settings["cut"]))}


def before_after_line(change: dict[str, Any]) -> str:
    return (f"{change['target']}, suspected before cleaning: attraction {100 * change['attraction_before']:.1f}% -> "
            f"{100 * change['attraction_after']:.1f}%, anomaly index {change['anomaly_before']:.1f} -> "
            f"{change['anomaly_after']:.1f}")


def check_cleaning(before: ClipBundle, after: ClipBundle, data: LabelledImages, classes: Classes,
                   device: str = "auto") -> dict[str, Any]:
    """Scan the model before and after a defense (default settings) and compare the class the
    first scan found most attracting: what ``tacleaner clean --check`` writes."""
    from .environment import resolve_device

    dev = resolve_device(device)
    first, _ = scan(before, data, classes, ScanConfig(top=0), dev)
    second, _ = scan(after, data, classes, ScanConfig(top=0), dev)
    start = {**first.to_json(), "decision": decide(first).to_json()}
    return {"before": start["decision"], "after": decide(second).to_json(),
            "before_after": before_after(start, second)}


@lru_cache(maxsize=1)
def record() -> dict[str, Any]:
    """The shipped reliability record (``configs/reliability.json``)."""
    return json.loads(resources.files("tacleaner.configs").joinpath("reliability.json").read_text(encoding="utf-8"))


def reliability_line(answer: str) -> str:
    """One line: how often ``answer`` (``scan``, ``detect`` or ``cleaning``) was right on the
    held-out models it was measured on, and where the measurement is."""
    entry = record().get(answer)
    if entry is None:
        raise KeyError(answer)
    return f"reliability ({entry['where']}): {entry['line']}"
