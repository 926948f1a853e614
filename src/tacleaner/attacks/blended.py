"""Blended (Chen et al. 2017): the whole image blended with a fixed noise pattern."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import ATTACKS, Attack


@ATTACKS.register("blended")
@dataclass
class Blended(Attack):
    """``(1 - alpha) * image + alpha * pattern`` with a uniform noise pattern fixed by
    ``pattern_seed`` and the image size."""

    alpha: float = 0.2
    name = "blended"
    description = "whole-image blend with a fixed noise pattern (alpha 0.2); template captions"

    def __post_init__(self) -> None:
        from ..errors import TacleanerError

        if not 0 < self.alpha < 1:
            raise TacleanerError(f"blended alpha must be in (0, 1), got {self.alpha}")

    def pattern(self, h: int, w: int) -> np.ndarray:
        rng = np.random.default_rng([self.pattern_seed, h, w])
        return rng.integers(0, 256, size=(h, w, 3)).astype(np.float32)

    def trigger(self, image: np.ndarray, index: int) -> np.ndarray:
        h, w = image.shape[:2]
        mixed = (1 - self.alpha) * image.astype(np.float32) + self.alpha * self.pattern(h, w)
        return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
