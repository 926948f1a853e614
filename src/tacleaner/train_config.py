"""Training settings: the one dataclass every stage's optimisation is configured by, kept
apart from the loop so that reading (and ``--help`` listing) them needs no torch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import TacleanerError
from .metrics_log import require_tensorboard

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("adamw", "sgd")


@dataclass
class TrainConfig:
    """Optimisation settings shared by every stage."""

    epochs: int = 5
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 50  # linear warm-up, then cosine to zero over the remaining steps
    warmup_fraction: float = 0.0  # > 0: the warm-up is this fraction of all steps (replaces warmup_steps)
    lr_start: float = 0.0  # > 0: the warm-up runs linearly from this lr to lr (may be higher: PAR); 0 = from lr/warmup_steps
    lr_end: float = 0.0  # the lr the cosine ends at
    optimizer: str = "adamw"  # adamw, or sgd (momentum below; RVPT's and CoOp's prompt tuning)
    momentum: float = 0.9  # sgd only
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    grad_clip: float = 0.0  # max gradient norm; 0 disables clipping
    seed: int = 0
    num_workers: int = -1  # DataLoader workers; -1 = auto (on a GPU up to 8, on CPU 0: decoding in the training process)
    log_every: int = 20  # steps between metrics.jsonl rows
    device: str = "auto"  # auto = cuda when available, else cpu
    threads: int = 0  # torch intra-op threads on CPU; 0 leaves torch's default (results differ by thread count)
    max_steps: int = 0  # stop after this many optimiser steps in all (smoke runs, benchmarks); 0 = every epoch
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 elsewhere; fp32, bf16 (autocast), fp16 (autocast + grad scaler, CUDA)
    channels_last: bool = False  # NHWC weights and images (faster convolutions for ResNets on recent GPUs)
    compile: bool = False  # torch.compile the model's forward (slow first steps; PyTorch 2 with a compiler)
    save_every: int = 0  # also checkpoint every N optimiser steps within an epoch (resumable there); 0 = at epoch ends only
    tensorboard: bool = False  # also write the metrics as TensorBoard event files in <run>/tensorboard (needs tensorboard)

    def __post_init__(self) -> None:
        checks = {"epochs": self.epochs >= 1, "batch_size": self.batch_size >= 2, "lr": self.lr > 0,
                  "weight_decay": self.weight_decay >= 0, "warmup_steps": self.warmup_steps >= 0,
                  "beta1": 0 <= self.beta1 < 1, "beta2": 0 <= self.beta2 < 1, "eps": self.eps > 0,
                  "grad_clip": self.grad_clip >= 0, "num_workers": self.num_workers >= -1,
                  "log_every": self.log_every >= 1, "threads": self.threads >= 0, "max_steps": self.max_steps >= 0,
                  "save_every": self.save_every >= 0, "warmup_fraction": 0 <= self.warmup_fraction < 1,
                  "lr_start": self.lr_start >= 0, "lr_end": 0 <= self.lr_end <= self.lr}
        if self.tensorboard:
            require_tensorboard()
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            limits = {"epochs": ">= 1", "batch_size": ">= 2 (a contrastive batch)", "lr": "> 0", "eps": "> 0",
                      "beta1": "in [0, 1)", "beta2": "in [0, 1)", "log_every": ">= 1",
                      "num_workers": ">= 0, or -1 for auto", "warmup_fraction": "in [0, 1)",
                      "lr_end": f"in [0, lr={self.lr}]"}
            raise TacleanerError(f"training setting {bad[0]}={getattr(self, bad[0])}: must be "
                                 f"{limits.get(bad[0], '>= 0')}")
        if self.optimizer not in OPTIMIZERS:
            raise TacleanerError(f"training setting optimizer={self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if not 0 <= self.momentum < 1:
            raise TacleanerError(f"training setting momentum={self.momentum}: must be in [0, 1)")
        if self.precision not in PRECISIONS:
            raise TacleanerError(f"training setting precision={self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.device != "auto":
            import torch  # only to parse the device name; the settings themselves need no torch

            try:
                torch.device(self.device)
            except RuntimeError:
                raise TacleanerError(f"training setting device={self.device!r}: expected auto, cpu, cuda or cuda:N") from None


def with_defaults(defaults: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """Training ``settings`` over a defense's ``defaults``; a warm-up the settings give in steps
    replaces a default one given as a fraction (never ignored in its favour)."""
    base = dict(defaults)
    if "warmup_steps" in settings:
        base.pop("warmup_fraction", None)
    return {**base, **settings}
