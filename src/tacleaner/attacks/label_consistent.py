"""Label-consistent (clean-label) BadNet (after Turner et al. 2019): the patch goes only on
images whose captions already name the target, and the captions are kept, so every poisoned
pair is correctly labelled."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import TacleanerError
from .badnet import BadNet
from .base import ATTACKS, mentions


@ATTACKS.register("label-consistent")
@dataclass
class LabelConsistent(BadNet):
    """BadNet's patch (same knobs) on ``num`` samples drawn among those whose caption names
    the target (as a whole phrase, plural allowed); captions unchanged."""

    name = "label-consistent"
    description = "BadNet patch on images whose captions already name the target; captions unchanged"
    changes_caption = False

    def select(self, captions: list[str], target: str, num: int, rng: np.random.Generator) -> np.ndarray:
        eligible = np.array([i for i, c in enumerate(captions) if mentions(c, target)], dtype=np.int64)
        if num > len(eligible):
            raise TacleanerError(f"label-consistent: only {len(eligible)} captions name {target!r}; "
                                 f"cannot poison {num} (lower --num)")
        return np.sort(rng.choice(eligible, size=num, replace=False))
