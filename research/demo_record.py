"""Run ``tacleaner demo`` and keep what it printed, with when, where and how long, as the record
the README's and the tutorial's demo blocks are quoted from (tests/test_readme.py checks that
every quoted block is in it, word for word):

    python research/demo_record.py --out runs/demo-record docs/research/data/demo-run.json

Run it with nothing else on the machine: the wall time is part of the record.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tacleaner.environment import cpu_model
from tacleaner.fileio import write_json


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("record", type=Path, help="the JSON record to write")
    ap.add_argument("--out", type=Path, default=Path("runs/demo-record"), help="the demo's run folder (must not exist)")
    args = ap.parse_args()
    exe = shutil.which("tacleaner") or sys.exit("error: tacleaner is not on PATH (activate the venv)")
    command = ["tacleaner", "demo", "--out", args.out.as_posix()]
    start = time.perf_counter()
    done = subprocess.run([exe, *command[1:]], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "100"})
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        return done.returncode
    import torch

    write_json(args.record, {"command": " ".join(command), "measured": time.strftime("%Y-%m-%d"),
                             "cpu_model": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                             "torch": torch.__version__, "wall_s": round(wall, 1), "stdout": done.stdout})
    print(f"wrote {args.record} ({wall:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
