"""What `tacleaner audit` decided, against the truth, on models whose truth is known.

    python research/audit_record.py demo RUN OUT_DIR OUT_JSON      # RUN: a `tacleaner demo` folder
    python research/audit_record.py heldout RUN OUT_DIR OUT_JSON [--controls DIR] [--worlds 11 12] [--jobs 2]

``demo``: the demo's backdoored model audited end to end (against its pretrained model as
``--base``, its training pairs, cleaning on the world's clean pairs), the same model without
``--base``, and the demo's clean (pretrained) model; then, apart from the audit, the true ASR@1
of the backdoored and of the chosen cleaned model (`tacleaner evaluate --trigger`), which the
audit never sees. Each audit's wall time is recorded.

``heldout``: every model of a finished experiments/trigger-free.yaml grid (and its clean
controls, research/clean_controls.sh) audited as shipped, scan only, against its world's pretrained
model as ``--base`` (the pretrained models themselves without one): how often the report's
decision agrees with the truth. Each world's pretrained model is audited first; its scan is the
same computation as the base scan of every other audit of that world (same model, images and
settings), so it is placed in their folders as ``scan_base/`` rather than recomputed 20 times.

Every step is a `tacleaner` command into OUT_DIR; a finished audit folder is resumed, not redone.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scan_grid import LEARNED, models, wilson  # noqa: E402

from tacleaner.fileio import write_json  # noqa: E402

TACLEANER = [sys.executable, "-m", "tacleaner", "--quiet"]


def audit(args: list[str], out: Path) -> tuple[dict, float]:
    """Run (or resume) one audit; its report.json and the seconds the audit took (kept in
    OUT_DIR/<audit>.seconds, written when the audit ran whole in one call)."""
    t = time.perf_counter()
    timing = out.parent / f"{out.name}.seconds"
    if not (out / "report.json").is_file():
        whole = not (out / "audit.json").exists()  # (a folder holding only the base's scan runs whole too)
        done = subprocess.run([*TACLEANER, "audit", *args, "--out", str(out), *(["--resume"] if out.exists() else [])],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"audit {out}: {done.stderr.strip()}")
        if whole:
            timing.write_text(f"{time.perf_counter() - t:.1f}\n")
    seconds = float(timing.read_text()) if timing.is_file() else None
    return json.loads((out / "report.json").read_text()), seconds


def asr(checkpoint: Path, data: Path, poison: Path, out: Path) -> float:
    if not out.is_file():
        subprocess.run([*TACLEANER, "evaluate", "--checkpoint", str(checkpoint), "--data", str(data / "zeroshot.csv"),
                        "--classes", str(data / "classes.json"), "--trigger", str(poison), "--out", str(out)],
                       check=True, capture_output=True)
    return json.loads(out.read_text())["asr_at_1"]


def demo(run: Path, out: Path) -> dict:
    world = run / "world0"
    data, unit = world / "data", next(world.glob("*/implant0"))
    target = json.loads((unit / "poison" / "manifest.json").read_text())["target"]
    backdoored, clean = unit / "backdoored" / "model.safetensors", world / "pretrain" / "model.safetensors"
    common = ["--zeroshot", str(data / "zeroshot.csv"), "--classes", str(data / "classes.json")]
    full, t_full = audit(["--checkpoint", str(backdoored), *common, "--base", str(clean), "--data",
                          str(unit / "poison" / "data.csv"), "--clean-data", str(data / "clean.csv")], out / "backdoored")
    alone, t_alone = audit(["--checkpoint", str(backdoored), *common], out / "backdoored-no-base")
    control, t_control = audit(["--checkpoint", str(clean), *common], out / "clean")
    cleaned = out / "backdoored" / "clean" / full["cleaning"]["chosen"] / "model.safetensors"
    before = asr(backdoored, data, unit / "poison", out / "asr_backdoored.json")
    after = asr(cleaned, data, unit / "poison", out / "asr_cleaned.json")
    change = full["cleaning"]["scan_after"]["before_after"]
    return {"true_target": target,
            "backdoored": {"decision": full["decision"], "suspected": full["suspected"], "target": full["target"],
                           "seconds": t_full, "chosen": full["cleaning"]["chosen"],
                           "attraction_before": change["attraction_before"], "attraction_after": change["attraction_after"],
                           "test_ca": full["cleaning"]["test_ca"], "flagged": full["detect"]["removed"],
                           "asr_at_1_before": before, "asr_at_1_after": after},
            "backdoored_without_base": {"decision": alone["decision"], "suspected": alone["suspected"],
                                        "target": alone["target"], "seconds": t_alone},
            "clean": {"decision": control["decision"], "suspected": control["suspected"], "seconds": t_control}}


def heldout(run: Path, out: Path, controls: Path | None, worlds: list[int], jobs: int) -> dict:
    wanted = {f"world{w}" for w in worlds}
    todo = [m for m in models([run], controls) if m[1].name in wanted]

    def one(m) -> dict:
        key, world, kind, attack, target, ck = m
        data = world / "data"
        pretrained = key.endswith("/pretrain")
        base = [] if pretrained else ["--base", str(world / "pretrain" / "model.safetensors")]
        folder = out / key.replace("/", "--")
        if not pretrained and not folder.exists():  # the base's scan, from its own audit
            own = out / f"{run.name}--{world.name}--pretrain"
            folder.mkdir(parents=True)
            shutil.copytree(own / "scan", folder / "scan_base")
            shutil.copy(own / ".tacleaner", folder / ".tacleaner")
        report, seconds = audit(["--checkpoint", str(ck), "--zeroshot", str(data / "zeroshot.csv"), "--classes",
                                 str(data / "classes.json"), *base], folder)
        fired = None
        if kind == "backdoored":
            fired = json.loads((ck.parent / "eval.json").read_text())["asr_at_1"] >= LEARNED
        return {"key": key, "kind": kind, "attack": attack, "target": target, "fired": fired, "base": bool(base),
                "suspected": report["suspected"], "named": report["target"], "seconds": seconds}

    first = [m for m in todo if m[0].endswith("/pretrain")]
    with ThreadPoolExecutor(jobs) as pool:
        rows = list(pool.map(one, first))
        rows += list(pool.map(one, [m for m in todo if m not in first]))
    return {"rows": rows, "counts": counts(rows)}


def counts(rows: list[dict]) -> dict:
    out = {}
    for label, keep in (("against the base", lambda r: r["base"]), ("pretrained, no base", lambda r: not r["base"])):
        sub = [r for r in rows if keep(r)]
        clean = [r for r in sub if r["kind"] == "clean"]
        fired = [r for r in sub if r["fired"]]
        entry = {"clean": len(clean), "clean_called_clean": sum(not r["suspected"] for r in clean),
                 "fired": len(fired), "fired_suspected": sum(r["suspected"] for r in fired),
                 "fired_toward_target": sum(r["suspected"] and r["named"] == r["target"] for r in fired)}
        for k, n in (("clean_called_clean", "clean"), ("fired_suspected", "fired"), ("fired_toward_target", "fired")):
            entry[k + "_ci"] = list(wilson(entry[k], entry[n]))
        out[label] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("demo", "heldout"))
    ap.add_argument("run", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("json", type=Path)
    ap.add_argument("--controls", type=Path)
    ap.add_argument("--worlds", type=int, nargs="+", default=[11, 12])
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    res = demo(args.run, args.out) if args.mode == "demo" else heldout(args.run, args.out, args.controls, args.worlds,
                                                                       args.jobs)
    write_json(args.json, res)
    print(json.dumps(res if args.mode == "demo" else res["counts"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
