"""Does the scan's measure for the suspected target tell whether cleaning worked? Over the
backdoored models of a finished grid (experiments/trigger-free.yaml): scan each model, clean it
with each defense, scan the cleaned model with ``--before``, evaluate the true ASR@1 (which the
scan never sees), and measure how well the after-cleaning measure ranks the true ASR@1
(Spearman's rho with a 95% interval).

    python research/cleaning_evidence.py RUN OUT_DIR [--worlds 11 12] [--attacks ID ...] [--defenses D ...] [--jobs 2]
    python research/cleaning_evidence.py RUN OUT_DIR --summary docs/research/data/cleaning-evidence.json

Every step is a `tacleaner` command (scan, clean, scan --before, evaluate) writing its folder
under OUT_DIR/<world>/<attack>/; a step whose output exists is skipped, so a stopped run resumes.
The defenses and schedules are fixed in DEFENSES below, before any result was seen: the demo's
CleanCLIP and TA-Cleaner settings, and plain fine-tuning at a third of the demo's rate (a weak
cleaning, so that the after-cleaning ASR@1 spans more than one outcome).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tacleaner.train import is_complete

SCHEDULE = ["--epochs", "4", "--batch-size", "64", "--warmup-steps", "20", "--threads", "1", "--seed", "0"]
DEFENSES = {
    "cleanclip": ["--defense", "cleanclip", "--lr", "1.5e-3", "--param", "w_inmodal=0.5"],
    "tacleaner": ["--defense", "tacleaner", "--lr", "1.5e-3", "--param", "w_inmodal=0.5", "--param", "w_ta=0.5",
                  "--param", "k=0.5"],
    "finetune-weak": ["--defense", "finetune", "--lr", "5e-4"],
}
TACLEANER = [sys.executable, "-m", "tacleaner", "--quiet"]


def backdoored_units(run: Path, worlds: list[int], attacks: list[str] | None):
    for w in worlds:
        for unit in sorted((run / f"world{w}").glob("*/implant0")):
            if attacks and unit.parent.name not in attacks:
                continue
            idx = unit / "poison" / "poisoned_indices.json"
            if is_complete(unit / "backdoored") and idx.is_file() and json.loads(idx.read_text()):
                yield w, unit


def sh(args: list[str]) -> None:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}\n{done.stderr}")


def scan_args(world_data: Path, checkpoint: Path, out: Path) -> list[str]:
    return [*TACLEANER, "scan", "--checkpoint", str(checkpoint), "--data", str(world_data / "zeroshot_val.csv"),
            "--classes", str(world_data / "classes.json"), "--param", "top=0", "--out", str(out)]


def one(world: int, unit: Path, out: Path, defense: str) -> None:
    data = unit.parent.parent / "data"
    before = out / "scan_before"
    if not (before / "scan.json").is_file():
        sh(scan_args(data, unit / "backdoored" / "model.safetensors", before))
    cleaned = out / defense / "clean"
    if not (cleaned / "model.safetensors").is_file():
        sh([*TACLEANER, "clean", *DEFENSES[defense], *SCHEDULE, "--checkpoint",
            str(unit / "backdoored" / "model.safetensors"), "--data", str(data / "clean.csv"), "--out", str(cleaned),
            *(["--resume"] if cleaned.exists() else [])])
    after = out / defense / "scan_after"
    if not (after / "scan.json").is_file():
        sh([*scan_args(data, cleaned / "model.safetensors", after), "--before", str(before / "scan.json")])
    for which, ck in (("eval_after.json", cleaned / "model.safetensors"),
                      ("eval_before.json", unit / "backdoored" / "model.safetensors")):
        target = (out / defense if which == "eval_after.json" else out) / which
        if not target.is_file():
            sh([*TACLEANER, "evaluate", "--checkpoint", str(ck), "--data", str(data / "zeroshot.csv"),
                "--classes", str(data / "classes.json"), "--trigger", str(unit / "poison"), "--out", str(target)])
    print(f"world{world} {unit.parent.name} {defense}: done", flush=True)


def ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    r = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for t in range(i, j + 1):
            r[order[t]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """Spearman's rho (Pearson's r of the ranks, ties averaged) and its 95% interval by Fisher's z
    with the standard error 1.06 / sqrt(n - 3) (Fieller, Hartley and Pearson 1957)."""
    rx, ry = ranks(x), ranks(y)
    n = len(x)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    rho = cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    z, se = math.atanh(max(min(rho, 0.999999), -0.999999)), 1.06 / math.sqrt(n - 3)
    return rho, math.tanh(z - 1.96 * se), math.tanh(z + 1.96 * se)


def summary(out: Path) -> dict:
    rows = []
    for after in sorted(out.glob("world*/*/*/scan_after/scan.json")):
        d = after.parent.parent
        ev = json.loads((d / "eval_after.json").read_text()) if (d / "eval_after.json").is_file() else None
        ev0 = json.loads((d.parent / "eval_before.json").read_text())
        if ev is None:
            continue
        s = json.loads(after.read_text())
        ba = s["before_after"]
        rows.append({"world": d.parent.parent.name, "attack": d.parent.name, "defense": d.name,
                     "asr_before": ev0["asr_at_1"], "asr_after": ev["asr_at_1"], "ca_before": ev0["clean_acc"],
                     "ca_after": ev["clean_acc"], "true_target": ev["target"], **ba,
                     "decision_after": s["decision"]["suspected"]})
    res: dict = {"rows": rows, "n": len(rows)}
    if len(rows) >= 4:
        for measure in ("attraction_after", "anomaly_after"):
            rho, lo, hi = spearman([r[measure] for r in rows], [r["asr_after"] for r in rows])
            res[f"spearman_{measure}"] = {"rho": round(rho, 3), "lo": round(lo, 3), "hi": round(hi, 3)}
    res["by_defense"] = {}
    for defense in sorted({r["defense"] for r in rows}):
        sub = [r for r in rows if r["defense"] == defense]
        if len(sub) >= 4:
            rho, lo, hi = spearman([r["attraction_after"] for r in sub], [r["asr_after"] for r in sub])
            res["by_defense"][defense] = {"n": len(sub), "rho": round(rho, 3), "lo": round(lo, 3), "hi": round(hi, 3)}
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--worlds", type=int, nargs="+", default=[11, 12])
    p.add_argument("--defenses", nargs="+", default=list(DEFENSES), choices=list(DEFENSES))
    p.add_argument("--attacks", nargs="+", help="attack ids (folder names) to clean (default: every one with poison)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--summary", type=Path, help="write the rows and Spearman's rho here instead of running")
    args = p.parse_args(argv)
    if args.summary:
        res = summary(args.out)
        args.summary.write_text(json.dumps(res, indent=1) + "\n")
        print({k: v for k, v in res.items() if k != "rows"})
        return 0
    work = [(w, u, args.out / f"world{w}" / u.parent.name, d) for w, u in backdoored_units(args.run, args.worlds, args.attacks)
            for d in args.defenses]
    # the first defense of each unit scans the backdoored model; the others wait for it by order
    with ThreadPoolExecutor(args.jobs) as pool:
        for f in [pool.submit(one, *job) for job in sorted(work, key=lambda j: (j[3] != args.defenses[0], j[0]))]:
            f.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
