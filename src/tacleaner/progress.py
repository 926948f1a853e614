"""A training run's checkpoint: ``train_state.pt`` in the run folder, with everything a resumed
run needs to go on exactly where the interrupted one stopped; removed once the run is complete.

Written after every epoch and, with ``save_every``, partway through one; then it also holds an
:class:`EpochProgress`, the record of how far into the next epoch the run had come (batches
consumed, the epoch's running sums), so that a resumed run skips those batches and its epoch
summary is that of an uninterrupted run. Each rank's random state (its augmentations) is saved
by rank 0 with the rest; a rank the saved run did not have starts a fresh stream of its own.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import torch

from . import distributed
from .defenses import Objective
from .errors import TacleanerError
from .fileio import atomic_path
from .models import ClipBundle, save_model

STATE_FILE = "train_state.pt"


@dataclass
class EpochProgress:
    """How far an epoch has come; saved mid-epoch as the checkpoint's ``within_epoch``."""

    batches: int = 0  # batches the sampler has handed out (a resumed epoch skips them unloaded)
    sums: dict[str, float] = field(default_factory=dict)  # running sums of the logged losses
    seen: int = 0  # pairs trained on
    skipped: int = 0  # images that failed to load
    missing: int = 0  # of those, the ones that were not there
    steps: int = 0  # optimiser steps taken
    seconds: float = 0.0  # time spent in the epoch so far

    @classmethod
    def from_saved(cls, saved: dict[str, Any]) -> EpochProgress:
        """The record as a checkpoint holds it (one written before ``missing`` existed lacks it)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in known})

    def add(self, losses: dict[str, torch.Tensor], loss: torch.Tensor) -> None:
        """Add a step's losses (and their sum as ``loss``) to the epoch's running sums."""
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach())
        self.sums["loss"] = self.sums.get("loss", 0.0) + float(loss.detach())


@dataclass
class Resumed:
    """Where a resumed run starts: ``epoch`` epochs complete and, when it was saved mid-epoch,
    how far into the next one it had come."""

    epoch: int = 0
    within: EpochProgress | None = None


@dataclass
class Checkpoint:
    """Saves and restores one run's ``train_state.pt`` (and ``model.safetensors`` beside it)."""

    out: Path
    bundle: ClipBundle
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None = None
    objective: Objective | None = None
    dist: distributed.Dist = distributed.SINGLE

    @property
    def path(self) -> Path:
        return self.out / STATE_FILE

    def save(self, epoch: int, within: EpochProgress | None = None) -> None:
        """Checkpoint after ``epoch`` complete epochs and, with ``within``, partway through the next."""
        # Every rank's random state (its augmentations), saved by rank 0 with the rest.
        rngs = self.dist.all_gather_object((torch.get_rng_state(), random.getstate()))
        if not self.dist.is_main:
            return
        # The resume state holds its own copy of the weights, so the pair can never disagree.
        state = {"epoch": epoch, "model": self.bundle.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "torch_rng": rngs[0][0], "python_rng": rngs[0][1]}
        if self.scaler is not None and self.scaler.is_enabled():
            state["grad_scaler"] = self.scaler.state_dict()
        if within is not None:
            state["within_epoch"] = asdict(within)
        own = self.objective.state() if self.objective is not None else None
        if own is not None:  # what the objective found during training (the invert defense's triggers)
            state["objective"] = own
        if self.dist.enabled:
            state["rank_torch_rng"] = [r[0] for r in rngs]
            state["rank_python_rng"] = [r[1] for r in rngs]
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)
        save_model(self.bundle, self.out / "model.safetensors", epoch=epoch)

    def discard(self) -> None:
        """Remove the resume state of a completed run: ``metadata.json`` now says the run is
        complete, ``--resume`` returns it as is, and the state (weights, optimiser moments: three
        times the model) would only fill the disk, once per stage of every experiment."""
        if self.dist.is_main:
            self.path.unlink(missing_ok=True)

    def resume(self, log: Callable[[str], None], seed: int = 0) -> Resumed:
        """Load the run's checkpoint, if it has one, into the model, optimiser, schedule, scaler,
        objective and this rank's random streams."""
        if not self.path.is_file():
            return Resumed()
        state = self._read()
        self.bundle.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and self.scaler.is_enabled() and "grad_scaler" in state:
            self.scaler.load_state_dict(state["grad_scaler"])
        if self.objective is not None and state.get("objective") is not None:
            self.objective.load_state(state["objective"])
        saved_ranks = self._restore_rng(state, seed)
        within = EpochProgress.from_saved(state["within_epoch"]) if state.get("within_epoch") else None
        where = (f"in epoch {state['epoch'] + 1} after {within.batches} batches" if within
                 else f"after epoch {state['epoch']}")
        log(f"resuming {where}" + (f" on {self.dist.world_size} processes (saved by {saved_ranks})"
                                   if saved_ranks != self.dist.world_size else ""))
        return Resumed(int(state["epoch"]), within)

    def _read(self) -> dict[str, Any]:
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - a truncated or corrupt file raises many kinds
            first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
            raise TacleanerError(f"{self.path}: unreadable resume state ({first}); remove it to restart the run "
                                 "from its last model, or start a new --out") from None

    def _restore_rng(self, state: dict[str, Any], seed: int) -> int:
        """This rank's saved random streams (a fresh one for a rank the saved run did not have);
        returns how many ranks the saved run had."""
        ranks = state.get("rank_torch_rng") or [state["torch_rng"]]
        rank = self.dist.rank
        if rank < len(ranks):  # this rank's own stream
            torch.set_rng_state(ranks[rank])
            random.setstate((state.get("rank_python_rng") or [state["python_rng"]])[rank])
        else:
            fresh = distributed.rank_seed(seed, rank) * 1_000 + int(state["epoch"])
            torch.manual_seed(fresh)
            random.seed(fresh)
        return len(ranks)
