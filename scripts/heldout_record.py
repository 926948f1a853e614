"""Summarise a finished held-out grid (``tacleaner run`` of a config with ``conditions``) into
the small JSON record that ``tacleaner demo`` prints beside its own runs:

    python scripts/heldout_record.py runs/demo-heldout src/tacleaner/configs/demo.heldout.json

The record keeps, per defense, the setting the selection chose on the tune set, its per-run
checks on the tune set and on the test set, and where and how it was measured.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tacleaner.fileio import read_json, write_json
from tacleaner.report import per_run_checks


def record(run: Path, command: str) -> dict:
    rows = read_json(run / "results.json")
    env = read_json(run / "environment.json")
    selections = {p.stem: read_json(p) for p in sorted((run / "selection").glob("*.json"))}
    chosen = {s["chosen"]: g for g, s in selections.items()}
    tune = [{**r, "defense": chosen.get(r["defense"], r["defense"])} for r in rows if r["split"] == "tune"]
    checks = {split: {(c["attack"], c["defense"]): c for c in per_run_checks(rs)}
              for split, rs in (("tune", tune), ("test", [r for r in rows if r["split"] == "test"]))}
    worlds = {s: sorted({r["world_seed"] for r in rows if r["split"] == s}) for s in ("tune", "test")}
    defenses = []
    for key, test in checks["test"].items():
        sel = selections.get(key[1])
        defenses.append({"attack": key[0], "defense": key[1], "chosen": sel["chosen"] if sel else None,
                         "rule": sel["reason"] if sel else None, "tune": checks["tune"].get(key), "test": test})
    return {"command": command, "measured": time.strftime("%Y-%m-%d"), "cpu_model": env["cpu_model"],
            "torch": env["packages"].get("torch"), "worlds": worlds, "defenses": defenses}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--command", default="tacleaner run experiments/demo-heldout.yaml --out runs/demo-heldout --jobs 2")
    args = parser.parse_args()
    write_json(args.out, record(args.run, args.command))
    print(json.dumps(read_json(args.out)["defenses"], indent=1))


if __name__ == "__main__":
    main()
