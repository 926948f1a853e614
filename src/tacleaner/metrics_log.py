"""Where a training run's metrics go: ``metrics.jsonl`` always, and TensorBoard event files
(``tensorboard/`` in the run folder) when the ``tensorboard`` training setting is on.

Only the writing rank (rank 0) makes a sink. TensorBoard needs the ``tensorboard`` package
(pinned in constraints.txt); it is imported only when asked for, and a missing package is a
one-line error before training starts, not a traceback mid-run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import TacleanerError
from .fileio import append_jsonl

TENSORBOARD_DIR = "tensorboard"


def require_tensorboard() -> None:
    """A one-line error when the tensorboard package is missing (checked with the settings)."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        raise TacleanerError("training setting tensorboard=true needs the tensorboard package "
                             "(pip install tensorboard, version in constraints.txt)")


class MetricSink:
    """Append metric rows to ``out/metrics.jsonl`` (and to TensorBoard scalars)."""

    def __init__(self, out: Path, tensorboard: bool = False) -> None:
        self.out = Path(out)
        self._tb = None
        if tensorboard:
            require_tensorboard()
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.out / TENSORBOARD_DIR))

    def step(self, row: dict[str, Any]) -> None:
        """A row logged during an epoch; its numbers become scalars ``train/<key>`` at ``row['step']``."""
        append_jsonl(self.out / "metrics.jsonl", row)
        self._scalars("train", row, row["step"], skip=("epoch", "step"))

    def epoch(self, row: dict[str, Any], step: int) -> None:
        """An epoch's summary row; its numbers become scalars ``epoch/<key>`` at the epoch's last step."""
        append_jsonl(self.out / "metrics.jsonl", row)
        self._scalars("epoch", row, step, skip=("epoch", "summary"))
        if self._tb is not None:
            self._tb.flush()

    def _scalars(self, prefix: str, row: dict[str, Any], step: int, skip: tuple[str, ...]) -> None:
        """Every number of ``row`` but the ``skip`` keys as a TensorBoard scalar ``prefix/<key>``."""
        if self._tb is None:
            return
        for k, v in row.items():
            if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool):
                self._tb.add_scalar(f"{prefix}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
