"""Write the reliability record that `tacleaner detect`, `scan` and `clean --check` print beside
their answers (src/tacleaner/configs/reliability.json) from the measurements shipped in
docs/research/data/ (docs/research/results-trigger-free.md says how each was made):

    python research/reliability_record.py [--check]

--check compares the shipped record with what the data give and exits 1 on a difference (the
test suite runs it).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "docs" / "research" / "data"
RECORD = ROOT / "src" / "tacleaner" / "configs" / "reliability.json"
PAGE = "docs/research/results-trigger-free.md"
SIX = ("badnet", "blended", "sig", "wanet", "ssba", "badclip")
TUNE_WORLD = 10  # where detect's default was chosen


def detect_entry(rows: list[dict], detector: str = "norm + disagreement", cut: str = "z2.0") -> dict:
    test = [r for r in rows if r["world"] != TUNE_WORLD and r["attack"].rsplit("-", 1)[0] in SIX]
    aurocs = [r[detector]["auroc"] for r in test]
    pois = sum(r[detector][cut]["removed_poisoned"] for r in test) / sum(r["poisoned"] for r in test)
    clean = sum(r[detector][cut]["removed_clean"] for r in test) / sum(r["rows"] - r["poisoned"] for r in test)
    worlds = sorted({r["world"] for r in test})
    return {"where": f"{PAGE}#detection",
            "line": (f"on {len(test)} poisoned sets of worlds {', '.join(map(str, worlds))} (six attacks at 5% and 1% "
                     f"poison; no setting chosen there) AUROC {min(aurocs):.3f}-{max(aurocs):.3f}, median "
                     f"{statistics.median(aurocs):.3f}; the default cut removed {100 * pois:.1f}% of the poisoned pairs "
                     f"and {100 * clean:.1f}% of the clean ones")}


def scan_entry(records: list[dict], cut: float) -> dict:
    sys.path.insert(0, str(ROOT / "research"))
    from scan_grid import LEARNED, signal_rows

    kinds = ["linf", "patch"]
    top = {r["key"]: signal_rows(r, kinds) for r in records}
    clean = [r for r in records if r["kind"] == "clean"]
    bad = [r for r in records if r["kind"] == "backdoored" and (r.get("asr_at_1") or 0) >= LEARNED]
    fp = sum(top[r["key"]][2][0] >= cut for r in clean)
    found = sum(top[r["key"]][2][0] >= cut for r in bad)
    right = sum(top[r["key"]][2][0] >= cut and top[r["key"]][0][0] == r["target"] for r in bad)
    return {"where": f"{PAGE}#the-scans-decision",
            "line": (f"on {len(records)} models none of which chose the cut: {fp} of {len(clean)} clean models called "
                     f"suspected; {found} of {len(bad)} backdoors that fired (ASR@1 >= {100 * LEARNED:.0f}%) suspected, "
                     f"{right} toward their true target; a dual-key (text and image) trigger is not seen")}


def scan_reference_entry(res: dict) -> dict:
    t = res["test"]
    worlds = sorted({r["world"].removeprefix("world") for r in res["rows"]})
    return {"where": f"{PAGE}#against-a-reference-model",
            "line": (f"on {t['clean'] + t['fired']} models of worlds {', '.join(worlds)} (the cut chosen on another "
                     f"world), each against the model it was fine-tuned from: {t['clean'] - t['clean_called_clean']} of "
                     f"{t['clean']} clean fine-tunes called suspected; {t['fired_suspected']} of {t['fired']} backdoors "
                     f"that fired suspected, {t['fired_toward_target']} toward their true target; a dual-key (text and "
                     f"image) trigger is not seen")}


def cleaning_entry(evidence: dict) -> dict:
    rho = evidence["spearman_attraction_after"]
    return {"where": f"{PAGE}#evidence-that-cleaning-worked",
            "line": (f"over {evidence['n']} cleaned models of held-out worlds, the suspected class's attraction after "
                     f"cleaning ranks the true ASR@1 with Spearman's rho {rho['rho']:.2f} [{rho['lo']:.2f}, "
                     f"{rho['hi']:.2f}]")}


def build() -> dict:
    scans = json.loads((DATA / "trigger-free-scans.json").read_text())
    return {"scan": scan_entry(scans["records"], scans["cut"]),
            "scan_reference": scan_reference_entry(json.loads((DATA / "trigger-free-scan-reference.json").read_text())),
            "detect": detect_entry(json.loads((DATA / "trigger-free-detect.json").read_text())),
            "cleaning": cleaning_entry(json.loads((DATA / "cleaning-evidence.json").read_text()))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    record = build()
    text = json.dumps(record, indent=1) + "\n"
    if args.check:
        if RECORD.read_text() != text:
            print(f"{RECORD} differs from what {DATA} gives: run research/reliability_record.py", file=sys.stderr)
            return 1
        return 0
    RECORD.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
