"""Summarise a held-out grid (``tacleaner run`` of a config with ``conditions``) into the small
JSON record that ``tacleaner demo`` prints beside its own runs, and its results page:

    python research/heldout_record.py experiments/demo-heldout.yaml runs/demo-heldout \
        src/tacleaner/configs/demo.heldout.json --page docs/research/results-demo-heldout.md

The record keeps, per defense, the setting the selection chose on the tune set, its per-run
checks on the tune set and on the test set, and where and how it was measured. ``--merge
RECORD`` replaces only the defenses this grid chose in an existing record (same tune and test
worlds), each entry naming its own grid: a knob chosen by a second grid on the same worlds
(experiments/tacleaner-heldout.yaml: TA-Cleaner's w_ta and k at the rate the first chose). A grid still
running is summarised over the units it has finished (the record says how many of the planned
test worlds that is).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tacleaner.experiment import Experiment, load_config, selection_markdown
from tacleaner.fileio import read_json, write_json, write_text
from tacleaner.report import markdown_table, per_run_checks


def record(config: Path, run: Path, command: str) -> tuple[dict, str]:
    cfg, _ = load_config(config)
    exp = Experiment.reader(cfg, run)
    rows, cleans = exp.collect(complete_only=True)
    env = next(read_json(p)["environment"] for p in sorted(run.glob("world*/*/implant*/backdoored/eval.json")))
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
                         "rule": sel["reason"] if sel else None, "tune": checks["tune"].get(key), "test": test,
                         "config": config.as_posix(), "command": command})
    out = {"command": command, "measured": time.strftime("%Y-%m-%d"), "cpu_model": env["cpu_model"],
           "torch": env["packages"].get("torch"), "worlds": worlds,
           "test_worlds_planned": list(cfg.held_out.test.world), "defenses": defenses}
    test_rows = [r for r in rows if r["split"] == "test"]
    test_cleans = [c for c in cleans if c["world_seed"] in worlds["test"]]
    page = markdown_table(test_rows, test_cleans, f"{exp.plan.describe()}; {cfg.held_out.describe()} (the test set)",
                          selection_markdown(list(selections.values()), [r for r in rows if r["split"] == "tune"],
                                             test_rows))
    return out, page


def merge(base: dict, new: dict) -> dict:
    """``base`` with the defenses ``new`` measured replaced by ``new``'s entries. Both grids must
    have the same tune and planned test worlds, so the record's world lists stay true of every
    entry; the test worlds kept are those both have finished."""
    if base["worlds"]["tune"] != new["worlds"]["tune"]:
        raise SystemExit(f"error: --merge: tune worlds {base['worlds']['tune']} != {new['worlds']['tune']}")
    if base["test_worlds_planned"] != new["test_worlds_planned"]:
        raise SystemExit(f"error: --merge: planned test worlds {base['test_worlds_planned']} != {new['test_worlds_planned']}")
    replaced = {(d["attack"], d["defense"]) for d in new["defenses"]}
    kept = [d for d in base["defenses"] if (d["attack"], d["defense"]) not in replaced]
    for d in kept:  # entries from before --merge existed name the record's own grid
        d.setdefault("command", base["command"])
    done = [w for w in base["worlds"]["test"] if w in new["worlds"]["test"]]
    added = [{**d, "measured": new["measured"], "cpu_model": new["cpu_model"]} for d in new["defenses"]]
    return {**base, "worlds": {**base["worlds"], "test": done}, "defenses": kept + added}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("run", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--page", type=Path, help="also write the test set's report (Markdown) here")
    parser.add_argument("--command", default="tacleaner run experiments/demo-heldout.yaml --out runs/demo-heldout --jobs 2")
    parser.add_argument("--merge", type=Path, metavar="RECORD",
                        help="replace only this grid's defenses in an existing record (written to OUT)")
    args = parser.parse_args()
    rec, page = record(args.config, args.run, args.command)
    write_json(args.out, merge(read_json(args.merge), rec) if args.merge else rec)
    if args.page:
        done, planned = rec["worlds"]["test"], rec["test_worlds_planned"]
        header = (f"# Results: `{args.config.name}` (held-out conditions)\n\n"
                  f"Back to the [research record](index.md); how the settings are chosen: [selection.md](../selection.md).\n\n"
                  f"`{args.command}`, measured {rec['measured']} on {rec['cpu_model']} (torch {rec['torch']}), CPU "
                  f"only, one torch thread per stage. Test worlds finished: {', '.join(map(str, done))} of "
                  f"{', '.join(map(str, planned))}"
                  + (" (the grid resumes with `--resume`; this page is made from the finished units by "
                     "`research/heldout_record.py`)" if len(done) < len(planned) else "") + ". "
                  "Another machine's arithmetic moves every number by a few points (a world seed is a larger "
                  "perturbation: the spread across the test worlds is the spread to expect).\n\n")
        write_text(args.page, header + page)
    print(json.dumps(rec["worlds"]), json.dumps(rec["defenses"], indent=1))
    print(page)


if __name__ == "__main__":
    main()
