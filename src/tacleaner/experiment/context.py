"""What a stage reads from the experiment running it (:class:`tacleaner.experiment.Experiment`)."""
from __future__ import annotations

from typing import Protocol

import torch

from ..distributed import Dist
from .config import ExperimentConfig
from .layout import Layout


class Context(Protocol):
    """The config, the folder's layout, this process's place in a torchrun job and its device,
    the number of parallel stages, whether to show progress, and the experiment's log."""

    cfg: ExperimentConfig
    layout: Layout
    dist: Dist
    device: torch.device
    jobs: int
    progress: bool

    def log(self, msg: str) -> None: ...
