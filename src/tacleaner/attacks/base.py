"""An attack is three separate parts: which samples, how the image changes, how the caption
changes. Subclasses override the trigger (and, where needed, selection or captions) and
register themselves with :data:`ATTACKS`."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from ..errors import TacleanerError
from ..registry import Registry


@dataclass
class Attack:
    """Base attack: random selection, no trigger, template captions naming the target.

    ``pattern_seed`` fixes the random parts of a trigger (a noise pattern, patch positions)
    independently of which samples are poisoned, so poisoning and evaluation see the same
    trigger for the same image index.
    """

    pattern_seed: int = 0
    name = "base"
    description = ""
    changes_caption = True  # False for clean-label attacks, which keep the caption

    def select(self, captions: list[str], target: str, num: int, rng: np.random.Generator) -> np.ndarray:
        """Indices of the samples to poison, sorted."""
        if num > len(captions):
            raise TacleanerError(f"cannot poison {num} samples: the data has {len(captions)}")
        return np.sort(rng.choice(len(captions), size=num, replace=False))

    def trigger(self, image: np.ndarray, index: int) -> np.ndarray:
        """Apply the trigger to an HxWx3 uint8 array at its stored resolution."""
        raise NotImplementedError

    def apply(self, image: Image.Image, index: int) -> Image.Image:
        out = self.trigger(np.asarray(image.convert("RGB")), index)
        assert out.dtype == np.uint8 and out.shape == (image.height, image.width, 3)
        return Image.fromarray(out)

    def caption(self, caption: str, target: str, templates: list[str], rng: np.random.Generator) -> str:
        """The poisoned caption: a prompt template filled with the target's name."""
        if not self.changes_caption:
            return caption
        return templates[rng.integers(len(templates))].format(target)

    def params(self) -> dict:
        return asdict(self)


ATTACKS: Registry[Attack] = Registry("attack")


def create_attack(name: str, **params) -> Attack:
    """Build a registered attack from its parameters."""
    return ATTACKS.create(name, **params)
