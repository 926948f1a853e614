"""BadNet (Gu et al. 2017): a small fixed patch pasted onto the image."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import ATTACKS, Attack


@ATTACKS.register("badnet")
@dataclass
class BadNet(Attack):
    """A patch of side ``patch_frac`` x the image's shorter side (16 px at 224 px by default).

    ``location``: ``random`` (a fresh place per image, fixed by image index and pattern seed,
    as in the CLIP backdoor literature), a corner (``bottom-right`` ...) or ``middle`` (the
    centre, where BadCLIP's scripts put their patch). ``pattern``:
    ``noise`` (a fixed random RGB patch) or ``checkerboard``.
    """

    patch_frac: float = 16 / 224
    location: str = "random"
    pattern: str = "noise"
    name = "badnet"
    description = "patch trigger (noise or checkerboard), random or fixed location; template captions"

    def __post_init__(self) -> None:
        from ..errors import TacleanerError

        corners = ("random", "top-left", "top-right", "bottom-left", "bottom-right", "middle")
        if self.location not in corners:
            raise TacleanerError(f"badnet location {self.location!r}; choose one of: {', '.join(corners)}")
        if self.pattern not in ("noise", "checkerboard"):
            raise TacleanerError(f"badnet pattern {self.pattern!r}; choose noise or checkerboard")
        if not 0 < self.patch_frac <= 1:
            raise TacleanerError(f"badnet patch_frac must be in (0, 1], got {self.patch_frac}")

    def side(self, h: int, w: int) -> int:
        return max(1, round(self.patch_frac * min(h, w)))

    def patch(self, side: int) -> np.ndarray:
        if self.pattern == "checkerboard":
            yy, xx = np.mgrid[0:side, 0:side]
            board = ((yy + xx) % 2 * 255).astype(np.uint8)
            return np.repeat(board[..., None], 3, axis=2)
        rng = np.random.default_rng([self.pattern_seed, side])
        return rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)

    def position(self, h: int, w: int, side: int, index: int) -> tuple[int, int]:
        if self.location == "random":
            rng = np.random.default_rng([self.pattern_seed, 1, index])
            return int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        if self.location == "middle":
            return (h - side) // 2, (w - side) // 2
        top = 0 if self.location.startswith("top") else h - side
        left = 0 if self.location.endswith("left") else w - side
        return top, left

    def trigger(self, image: np.ndarray, index: int) -> np.ndarray:
        h, w = image.shape[:2]
        side = self.side(h, w)
        y, x = self.position(h, w, side, index)
        out = image.copy()
        out[y:y + side, x:x + side] = self.patch(side)
        return out
