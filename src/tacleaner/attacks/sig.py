"""SIG (Barni et al. 2019): an additive horizontal sinusoid over the whole image."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import TacleanerError
from .base import ATTACKS, Attack


@ATTACKS.register("sig")
@dataclass
class SIG(Attack):
    """``image + amplitude * sin(2 pi * cycles * x / width)``, the same on every row and
    channel, clipped to [0, 255]. ``amplitude`` is in pixel units (60 = 60/255), ``cycles``
    the number of periods across the width. ``pattern_seed`` shifts the phase (0 for seed 0,
    the paper's signal)."""

    amplitude: float = 60.0
    cycles: float = 6.0
    name = "sig"
    description = "additive horizontal sinusoid (amplitude 60/255, 6 cycles), clipped; template captions"

    def __post_init__(self) -> None:
        if not 0 < self.amplitude <= 255:
            raise TacleanerError(f"sig amplitude must be in (0, 255] (pixel units), got {self.amplitude}")
        if self.cycles <= 0:
            raise TacleanerError(f"sig cycles must be > 0, got {self.cycles}")

    def signal(self, width: int) -> np.ndarray:
        phase = 0.0 if self.pattern_seed == 0 else np.random.default_rng(self.pattern_seed).uniform(0, 2 * np.pi)
        x = np.arange(width, dtype=np.float64)
        return self.amplitude * np.sin(2 * np.pi * self.cycles * x / width + phase)

    def trigger(self, image: np.ndarray, index: int) -> np.ndarray:
        out = image.astype(np.float64) + self.signal(image.shape[1])[None, :, None]
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
