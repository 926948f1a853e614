"""WaNet (Nguyen & Tran, ICLR 2021): an imperceptible, smooth warp of the whole image.

A ``k x k`` grid of random 2-D control displacements, normalised to mean magnitude 1, is
upsampled (bicubic) to the image size and added, times ``strength`` / size, to the identity
sampling grid; the image is resampled with ``grid_sample``. The control points are drawn once
from ``pattern_seed`` and saved with the poisoning run, so evaluation warps with the same field.
Noise mode (the paper's defence against detection) also warps ``cross_ratio`` x num other
samples with the field plus per-pixel random jitter and keeps their captions, so the model
learns that only the exact field means the target.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import TacleanerError
from .base import ATTACKS, Attack


@ATTACKS.register("wanet")
@dataclass
class WaNet(Attack):
    """Defaults from the WaNet paper: ``k`` = 4 control points per side, ``strength`` s = 0.5
    (displacements in pixels are about s / 2 times the control magnitudes, whose mean is 1:
    a quarter pixel on average at s = 0.5), noise mode off."""

    k: int = 4
    strength: float = 0.5
    noise_mode: bool = False
    cross_ratio: float = 2.0
    name = "wanet"
    description = "smooth warping field from k x k random control points (k 4, s 0.5), grid_sample; optional noise mode"
    learned = True  # drawn once per run and saved with it

    def __post_init__(self) -> None:
        if self.k < 2:
            raise TacleanerError(f"wanet k must be >= 2, got {self.k}")
        if self.strength <= 0:
            raise TacleanerError(f"wanet strength must be > 0, got {self.strength}")
        if self.cross_ratio < 0:
            raise TacleanerError(f"wanet cross_ratio must be >= 0, got {self.cross_ratio}")
        rng = np.random.default_rng([self.pattern_seed, 17])
        ins = rng.uniform(-1, 1, size=(2, self.k, self.k)).astype(np.float32)
        self._load_points(ins / np.abs(ins).mean())

    def _load_points(self, points: np.ndarray) -> None:
        self._points = points.astype(np.float32)
        self._fields: dict[tuple[int, int], torch.Tensor] = {}

    def state(self) -> dict[str, np.ndarray]:
        return {"control_points": self._points}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        points = arrays.get("control_points")
        if points is None or points.shape != (2, self.k, self.k):
            raise TacleanerError(f"wanet trigger: expected control_points of shape (2, {self.k}, {self.k})")
        self._load_points(points)

    def field(self, h: int, w: int) -> torch.Tensor:
        """The sampling grid ``[1, h, w, 2]`` (x, y in [-1, 1]) for an image of this size."""
        if (h, w) not in self._fields:
            ins = torch.from_numpy(self._points)[None]
            noise = F.interpolate(ins, size=(h, w), mode="bicubic", align_corners=True)[0]  # [2, h, w]
            ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
            # Grid units span 2 / (size - 1) per pixel; strength / size as in the paper's code.
            grid = torch.stack((xs + self.strength * noise[0] / w, ys + self.strength * noise[1] / h), dim=-1)
            self._fields[(h, w)] = grid.clamp(-1, 1)[None]
        return self._fields[(h, w)]

    def warp(self, image: np.ndarray, grid: torch.Tensor) -> np.ndarray:
        x = torch.tensor(image, dtype=torch.float32).permute(2, 0, 1)[None]
        out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return out[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()

    def displacement(self, h: int, w: int) -> np.ndarray:
        """Per-pixel displacement in pixels ``[h, w, 2]`` (dx, dy): for tests and reports."""
        grid = self.field(h, w)[0]
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        return torch.stack(((grid[..., 0] - xs) * (w - 1) / 2, (grid[..., 1] - ys) * (h - 1) / 2), -1).numpy()

    def trigger(self, image: np.ndarray, index: int) -> np.ndarray:
        h, w = image.shape[:2]
        return self.warp(image, self.field(h, w))

    def cover_indices(self, num_total: int, poisoned: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self.noise_mode:
            return np.empty(0, dtype=np.int64)
        rest = np.setdiff1d(np.arange(num_total), poisoned)
        n = min(len(rest), int(round(self.cross_ratio * len(poisoned))))
        return np.sort(rng.choice(rest, size=n, replace=False))

    def cover(self, image: np.ndarray, index: int) -> np.ndarray:
        h, w = image.shape[:2]
        g = torch.Generator().manual_seed(int(np.random.default_rng([self.pattern_seed, 18, index]).integers(2**62)))
        jitter = (torch.rand(1, h, w, 2, generator=g) * 2 - 1) * torch.tensor([1 / w, 1 / h])  # +-half a pixel, as the paper
        return self.warp(image, (self.field(h, w) + jitter).clamp(-1, 1))
