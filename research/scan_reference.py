"""The scan against a reference model (``tacleaner scan --reference``), measured on the models of
experiments/trigger-free.yaml from their recorded scans (docs/research/data/trigger-free-scans.json:
every class's attraction under each probe, as `tacleaner scan` measured it):

    python research/scan_reference.py docs/research/data/trigger-free-scans.json docs/research/data/trigger-free-scan-reference.json

Each world's reference is its pretrained model, the model every other model of the world was
fine-tuned from (a downloaded fine-tune's public base plays this part for a user). The pretrained
model itself is left out (it is its own reference). Two ways to measure a class against the
reference were set down before choosing: the attraction's difference and the log of its ratio
(each +0.01). The way and the cut are chosen on the tune world alone: the way by the AUROC of the
top anomaly index (fired backdoors against clean models), the cut as the lowest whole number above
every clean model's top index there; both are then reported on the other worlds. Classes are
ranked by ``tacleaner.scan.rank``, the code `tacleaner scan --reference` runs.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from tacleaner.detect.outputs import auroc
from tacleaner.fileio import write_json
from tacleaner.scan import DECISION_CUT, anomaly_index, rank

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scan_grid import LEARNED, bootstrap_auroc, wilson  # noqa: E402

TUNE_WORLD = "world10"
PROBES = ("linf", "patch")


def mean_share(rec: dict) -> dict[str, float]:
    return {name: sum(by[k] for k in PROBES) / len(PROBES) for name, by in rec["attraction"].items()}


def log_ratio_top(rec: dict, ref: dict[str, float]) -> tuple[str, float]:
    names = list(rec["attraction"])
    own = mean_share(rec)
    z = anomaly_index([math.log((own[n] + 0.01) / (ref[n] + 0.01)) for n in names])
    i = int(np.argmax(z))
    return names[i], z[i]


def difference_top(rec: dict, ref: dict[str, float]) -> tuple[str, float]:
    names = list(rec["attraction"])
    rows = rank({k: [rec["attraction"][n][k] for n in names] for k in PROBES}, names, ref)
    return rows[0].name, rows[0].anomaly


def alone_top(rec: dict, ref: dict[str, float]) -> tuple[str, float]:
    names = list(rec["attraction"])
    rows = rank({k: [rec["attraction"][n][k] for n in names] for k in PROBES}, names)
    return rows[0].name, rows[0].anomaly


WAYS = {"difference": difference_top, "log ratio": log_ratio_top}


def rows_for(records: list[dict], way: str) -> list[dict]:
    refs = {r["world"]: mean_share(r) for r in records if r["key"].endswith("/pretrain")}
    out = []
    for r in records:
        if r["key"].endswith("/pretrain"):
            continue
        name, top = (WAYS.get(way) or alone_top)(r, refs[r["world"]])
        out.append({"key": r["key"], "world": r["world"], "kind": r["kind"], "attack": r["attack"],
                    "target": r["target"], "asr_at_1": r.get("asr_at_1"), "top_class": name, "top_anomaly": top,
                    "fired": r["kind"] == "backdoored" and (r.get("asr_at_1") or 0) >= LEARNED})
    return out


def separation(rows: list[dict]) -> float:
    kept = [r for r in rows if r["kind"] == "clean" or r["fired"]]
    return auroc(np.array([r["top_anomaly"] for r in kept]), np.array([r["fired"] for r in kept]))


def counts(rows: list[dict], cut: float) -> dict:
    clean = [r for r in rows if r["kind"] == "clean"]
    fired = [r for r in rows if r["fired"]]
    kept = clean + fired
    scores = np.array([r["top_anomaly"] for r in kept])
    positive = np.array([r["fired"] for r in kept])
    out = {"clean_called_clean": sum(r["top_anomaly"] < cut for r in clean), "clean": len(clean),
           "fired_suspected": sum(r["top_anomaly"] >= cut for r in fired),
           "fired_toward_target": sum(r["top_anomaly"] >= cut and r["top_class"] == r["target"] for r in fired),
           "fired": len(fired), "auroc": auroc(scores, positive), "auroc_ci": list(bootstrap_auroc(scores, positive)),
           "missed": [f"{r['world']} {r['attack']} ({r['top_class']}, {r['top_anomaly']:.1f})" for r in fired
                      if not (r["top_anomaly"] >= cut and r["top_class"] == r["target"])],
           "clean_tops": sorted(round(r["top_anomaly"], 1) for r in clean)}
    for k, n in (("clean_called_clean", "clean"), ("fired_suspected", "fired"), ("fired_toward_target", "fired")):
        out[k + "_ci"] = list(wilson(out[k], out[n]))
    return out


def measure(records: list[dict]) -> dict:
    tune = {way: [r for r in rows_for(records, way) if r["world"] == TUNE_WORLD] for way in WAYS}
    chosen = max(WAYS, key=lambda way: separation(tune[way]))
    cut = float(math.floor(max(r["top_anomaly"] for r in tune[chosen] if r["kind"] == "clean")) + 1)
    test = [r for r in rows_for(records, chosen) if r["world"] != TUNE_WORLD]
    alone = [r for r in rows_for(records, "none") if r["world"] != TUNE_WORLD]
    return {"tune_world": TUNE_WORLD, "tune_auroc": {way: separation(tune[way]) for way in WAYS}, "way": chosen,
            "cut": cut, "test": counts(test, cut), "without_reference": counts(alone, DECISION_CUT), "rows": test}


def table(res: dict) -> str:
    return "\n".join([
        "| scan (test worlds) | clean called clean | fired backdoors suspected | toward the true target | "
        "AUROC, top anomaly index |",
        "|---|---|---|---|---|",
        line(f"`--reference`, cut {res['cut']:g}", res["test"]),
        line(f"no reference, cut {DECISION_CUT:g} (as shipped before)", res["without_reference"])])


def line(label: str, t: dict) -> str:
    def frac(k: str, n: str) -> str:
        lo, hi = t[k + "_ci"]
        return f"{t[k]}/{t[n]} [{100 * lo:.0f}%, {100 * hi:.0f}%]"

    lo, hi = t["auroc_ci"]
    return (f"| {label} | {frac('clean_called_clean', 'clean')} | {frac('fired_suspected', 'fired')} | "
            f"{frac('fired_toward_target', 'fired')} | {t['auroc']:.3f} [{lo:.2f}, {hi:.2f}] |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scans", type=Path, help="docs/research/data/trigger-free-scans.json")
    ap.add_argument("out", type=Path, nargs="?", help="JSON to write (default: print only)")
    args = ap.parse_args(argv)
    res = measure(json.loads(args.scans.read_text())["records"])
    print(f"chosen on {res['tune_world']}: {res['way']} (AUROC there "
          + ", ".join(f"{k} {v:.3f}" for k, v in res["tune_auroc"].items()) + f"), cut {res['cut']:g}")
    print(table(res))
    print("missed:", "; ".join(res["test"]["missed"]) or "none")
    print("clean models' top index:", res["test"]["clean_tops"])
    if args.out:
        write_json(args.out, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
