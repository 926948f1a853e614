"""``tacleaner run`` and ``tacleaner demo``: an experiment grid, from a YAML file or the
shipped demo's."""
from __future__ import annotations

import argparse
import json
import os
import time
from importlib import resources

import yaml

from tacleaner.fileio import check_inputs_outside

from .common import is_main
from .options import AddCommand, add_run_folder_options, positive_int

HELD_OUT_RECORD = "demo.heldout.json"  # what experiments/demo-heldout.yaml measured (research/heldout_record.py)


def add_parsers(add: AddCommand) -> None:
    s = add("run", "run an experiment grid from a YAML config", run)
    s.add_argument("config", help="experiment YAML (keys: README, 'Experiment configs')")
    _add_grid_options(s, "runs/<name>")
    s = add("demo", "the whole story on the synthetic world, on a CPU in minutes", demo)
    s.add_argument("--quick", action="store_true", help="a smaller, faster version (~3 minutes)")
    _add_grid_options(s, "runs/<name>-<time>")


def _add_grid_options(s: argparse.ArgumentParser, default_out: str) -> None:
    s.add_argument("--out", help=f"experiment folder (default: {default_out})")
    s.add_argument("--jobs", type=positive_int, help="stages run in parallel processes (default: 1 for run, "
                   "min(2, CPU cores) for demo); results do not depend on it when the config fixes threads")
    add_run_folder_options(s)


def run(args: argparse.Namespace) -> int:
    from tacleaner.experiment import load_config

    cfg, raw = load_config(args.config)
    return _run_experiment(cfg, raw, args.out or f"runs/{cfg.name}", args)


def demo(args: argparse.Namespace) -> int:
    from tacleaner.experiment import parse_config

    name = "demo-quick.yaml" if args.quick else "demo.yaml"
    configs = resources.files("tacleaner.configs")
    raw = yaml.safe_load(configs.joinpath(name).read_text())
    out = args.out or f"runs/{raw['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    code = _run_experiment(parse_config(raw, name), raw, out, args)
    record = configs.joinpath(HELD_OUT_RECORD)
    if code == 0 and not args.quick and is_main() and record.is_file():
        from tacleaner.report import held_out_summary

        print(held_out_summary(json.loads(record.read_text())))
    return code


def _run_experiment(cfg, raw, out, args) -> int:
    from tacleaner.distributed import from_env
    from tacleaner.experiment import Experiment

    t0 = time.perf_counter()
    check_inputs_outside(out, [getattr(args, "config", None)]
                         + [v for v in cfg.data.values() if isinstance(v, str)] + [cfg.model.get("init")])
    jobs = args.jobs or (min(2, os.cpu_count() or 1) if args.command == "demo" and not from_env().enabled else 1)
    exp = Experiment(cfg, raw, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet, jobs=jobs)
    try:
        exp.run()
    finally:
        exp.close()
    if not is_main():
        return 0
    print((exp.out / "results.md").read_text())
    print(f"results in {exp.out} (results.json, aggregate.json, results.md, results.png); "
          f"{time.perf_counter() - t0:.0f} s")
    return 0
