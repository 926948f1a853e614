"""Peak memory of `tacleaner clean` and `tacleaner detect` as the CSV grows: 10,000 rows
against 1,000,000.

Each measurement is a fresh process running the real command line, its peak RSS read from the
kernel (getrusage of the finished child). `clean`: setup (reading the CSV, tokenising every
caption, for cleanclip also EDA on every caption), then a few training steps (`--max-steps`).
`detect` (`--detect`): every row embedded and scored in chunks, `scores.csv`, `clean.csv` and
the figure written. The rows
point at a few hundred real PNG files of the embedded world, the captions are CC3M's (the
shared 400-caption sample, each row numbered so no two are equal). The tiny model's 24-token
context; RN50's 77 tokens add 77 x 4 bytes per row (int32).

    python benchmarks/bench_memory.py [--rows 10000 1000000] [--defenses finetune cleanclip] [--detect]
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CAPTIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "cc3m_val_captions_sample.txt"

PROBE = """
import resource, subprocess, sys, time
t = time.perf_counter()
code = subprocess.run(sys.argv[1:]).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, time.perf_counter() - t)
"""


def write_csv(path: Path, rows: int, images: list[str], captions: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("image", "caption"))
        for i in range(rows):
            w.writerow((images[i % len(images)], f"{captions[i % len(captions)]} {i}"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, nargs="+", default=[10_000, 1_000_000])
    ap.add_argument("--defenses", nargs="+", default=["finetune", "cleanclip"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--images", type=int, default=300)
    ap.add_argument("--detect", action="store_true", help="also `tacleaner detect` (dao, --remove 0.01)")
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    import torch

    from tacleaner.data.synth import SynthConfig, generate
    from tacleaner.models import create_model, save_model

    captions = [line.strip() for line in CAPTIONS.read_text().splitlines() if line.strip()]
    results = []
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        generate(root / "w", SynthConfig(pretrain=0, implant=0, clean=args.images, zeroshot_per_class=0), progress=False)
        with open(root / "w" / "clean.csv", newline="") as f:
            images = [f"w/{row['image']}" for row in csv.DictReader(f)]
        torch.manual_seed(0)
        save_model(create_model("tacleaner-tiny-rn"), root / "tiny.safetensors")
        for rows in args.rows:
            data = root / f"rows{rows}.csv"
            write_csv(data, rows, images, captions)
            runs = [(defense, ["clean", "--defense", defense, "--checkpoint", str(root / "tiny.safetensors"),
                               "--max-steps", str(args.steps), "--batch-size", "64", "--threads", "2",
                               "--epochs", "1"]) for defense in args.defenses]
            if args.detect:
                runs.append(("detect", ["detect", "--checkpoint", str(root / "tiny.safetensors"),
                                        "--remove", "0.01"]))
            for name, argv in runs:
                out = root / f"run-{name}-{rows}"
                cmd = [sys.executable, "-m", "tacleaner", "--quiet", *argv, "--data", str(data), "--out", str(out)]
                probe = subprocess.run([sys.executable, "-c", PROBE, *cmd], capture_output=True, text=True, check=True)
                code, rss_kb, seconds = probe.stdout.split()[-3:]  # after the command's own output
                if code != "0":
                    sys.exit(f"tacleaner {argv[0]} failed on {rows} rows ({name}):\n{probe.stderr}")
                row = {"rows": rows, "defense": name, "peak_rss_mb": round(int(rss_kb) / 1024, 1),
                       "seconds": round(float(seconds), 1), "csv_mb": round(data.stat().st_size / 2**20, 1)}
                results.append(row)
                print(json.dumps(row), flush=True)
            data.unlink()
    for defense in args.defenses + (["detect"] if args.detect else []):
        by = {r["rows"]: r["peak_rss_mb"] for r in results if r["defense"] == defense}
        if len(by) >= 2:
            lo, hi = min(by), max(by)
            print(json.dumps({"defense": defense, "ratio": round(by[hi] / by[lo], 3), "rows": [lo, hi]}))


if __name__ == "__main__":
    t = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t:.0f} s", file=sys.stderr)
