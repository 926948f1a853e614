"""One experiment folder: made (or resumed) and locked, its grid run, its reports written."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .. import distributed
from ..errors import TacleanerError
from ..fileio import prepare_run_dir, release_run_dir, write_yaml
from ..runlog import RunLog
from ..scheduler import Task, run_tasks
from .config import ExperimentConfig
from .grid import steps
from .layout import Layout
from .results import collect, write_results
from .stages import STAGES
from .world import check_poisonable, make_data


class Experiment:
    """Runs the stages of one experiment folder; see the package docstring."""

    def __init__(self, cfg: ExperimentConfig, raw: dict, out: str | Path, *, resume: bool = False,
                 overwrite: bool = False, progress: bool = True, jobs: int = 1) -> None:
        self.cfg, self.raw, self.progress, self.jobs = cfg, raw, progress, max(1, int(jobs))
        self.held, self.plan = cfg.held_out, cfg.plan
        # Under torchrun every process walks the same stages in the same order: training and
        # evaluation are shared (DDP, sharded images); rank 0 alone writes data, poisons and reports.
        self.dist, self.device = distributed.setup(cfg.train.get("device", "auto"))
        if self.dist.enabled and self.jobs > 1:
            raise TacleanerError(f"--jobs {self.jobs} with torchrun: the processes share each stage; use --jobs 1")
        # locked by rank 0 (stage folders inside hold locks of their own)
        self.out = self.dist.on_main(lambda: _start(out, raw, resume, overwrite))

    @classmethod
    def reader(cls, cfg: ExperimentConfig, out: str | Path) -> "Experiment":
        """An Experiment over an existing folder for reading its results only: no folder is made
        or locked, nothing runs (a report of a grid still running, :meth:`collect`)."""
        exp = cls.__new__(cls)
        exp.cfg, exp.held, exp.plan, exp.out, exp.jobs, exp.progress = cfg, cfg.held_out, cfg.plan, Path(out), 1, False
        return exp

    @property
    def layout(self) -> Layout:
        return Layout(self.out)

    def close(self) -> None:
        """Give back the experiment folder's lock (workers never take it: they write stage folders)."""
        if self.dist.is_main:
            release_run_dir(self.out)

    def log(self, msg: str) -> None:
        """A line to the experiment's log.txt and, with progress shown, to the console (rank 0 only)."""
        RunLog(self.layout.log, quiet=not self.progress, enabled=self.dist.is_main)(msg)

    def tasks(self) -> list[Task]:
        """Every stage of the grid as a task for the scheduler, in the grid's order."""
        return [Task(s.key, STAGES.get(s.stage), (self, *s.args), s.deps) for s in steps(self.cfg)]

    def run(self) -> list[dict[str, Any]]:
        for w in self.cfg.plan.world:
            make_data(self, w)
        for w in self.cfg.plan.world:
            check_poisonable(self, w)
        self.log(f"{self.cfg.plan.describe()}; {self.jobs} parallel job(s)")
        run_tasks(self.tasks(), self.jobs)
        return self.dist.on_main(self.report)

    def report(self) -> list[dict[str, Any]]:
        rows, table = write_results(self.cfg, self.layout, self.device)
        # To log.txt only: the command prints results.md itself, once, quiet or not.
        RunLog(self.layout.log, quiet=True, enabled=self.dist.is_main)("\n" + table)
        return rows

    def collect(self, complete_only: bool = False) -> tuple[list[dict], list[dict]]:
        """The rows and the clean models' evaluations (:func:`.results.collect`)."""
        return collect(self.cfg, self.layout, complete_only)


def _start(out: str | Path, raw: dict, resume: bool, overwrite: bool) -> Path:
    """The experiment folder, made or resumed; a resumed one must have been started with the
    same config."""
    folder = prepare_run_dir(out, resume=resume, overwrite=overwrite)
    saved = Layout(folder).config
    if saved.is_file() and yaml.safe_load(saved.read_text()) != raw:
        release_run_dir(folder)
        raise TacleanerError(f"{saved}: the experiment config changed since this folder was started; "
                             "use a new --out or --overwrite")
    write_yaml(saved, raw)
    return folder
