"""An attack is three separate parts: which samples, how the image changes, how the caption
changes. Subclasses override the trigger (and, where needed, selection or captions) and
register themselves with :data:`ATTACKS`.

Some triggers are drawn at random (a WaNet field) or learned (an SSBA encoder, an optimised
patch). Those attacks learn them in :meth:`Attack.prepare` from a :class:`PoisonContext`,
expose them as arrays through :meth:`Attack.state`, and take them back through
:meth:`Attack.load_state`: the poisoning run saves the arrays in its folder, and evaluation
loads exactly those bytes (see :func:`tacleaner.attacks.poison.load_attack`).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from ..errors import TacleanerError
from ..registry import Registry


@dataclass
class PoisonContext:
    """What an attack may look at while it prepares its trigger: the data to poison (image
    files at their stored resolution and captions), the target and its prompt templates, the
    clean pre-implant model for attacks that optimise against it, a seed, and where to log."""

    images: list[Path]
    captions: list[str]
    target: str
    templates: list[str]
    seed: int = 0
    clean_model: Any = None  # a ClipBundle, for attacks with needs_model
    device: Any = "cpu"
    out: Path | None = None  # the poisoning run folder (for logs)
    log: Callable[[str], None] = field(default=lambda msg: None)


def mentions(caption: str, target: str) -> bool:
    """Whether ``caption`` names ``target`` as a whole phrase (case-insensitive; a plural
    ``s``/``es`` allowed), e.g. "Two yellow stars ..." names "yellow star"."""
    pattern = r"\b" + r"\s+".join(re.escape(w) for w in target.lower().split()) + r"(?:e?s)?\b"
    return re.search(pattern, caption.lower()) is not None


@dataclass
class Attack:
    """Base attack: random selection, no trigger, template captions naming the target.

    ``pattern_seed`` fixes the random parts of a trigger (a noise pattern, patch positions, a
    warping field, a bit string) independently of which samples are poisoned, so poisoning and
    evaluation see the same trigger for the same image index.
    """

    pattern_seed: int = 0
    name = "base"
    description = ""
    changes_caption = True  # False for clean-label attacks, which keep the caption
    needs_model = False  # prepare() optimises against the clean model
    learned = False  # the trigger is drawn or learned in prepare() and saved with the run

    def prepare(self, ctx: PoisonContext) -> dict[str, Any]:
        """Draw or learn the trigger before poisoning; returns a report for the manifest
        (losses, quality figures, cost). The base attack has nothing to prepare."""
        return {}

    def state(self) -> dict[str, np.ndarray]:
        """The arrays that define a drawn or learned trigger (saved with the poisoning run)."""
        return {}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Take back the arrays of :meth:`state`."""

    def ready(self) -> bool:
        """Whether the trigger can be applied (a learned trigger needs prepare or load_state)."""
        return True

    def require_prepared(self, ready: bool | None = None) -> None:
        if not (self.ready() if ready is None else ready):
            raise TacleanerError(f"attack {self.name}: its trigger is learned when poisoning; "
                                 "prepare it (tacleaner poison) or load a poisoning run folder (--trigger)")

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

    def cover_indices(self, num_total: int, poisoned: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Samples that get :meth:`cover` images and keep their captions (WaNet's noise mode);
        none by default."""
        return np.empty(0, dtype=np.int64)

    def cover(self, image: np.ndarray, index: int) -> np.ndarray:
        raise NotImplementedError

    def caption(self, caption: str, target: str, templates: list[str], rng: np.random.Generator) -> str:
        """The poisoned caption: a prompt template filled with the target's name."""
        if not self.changes_caption:
            return caption
        return templates[rng.integers(len(templates))].format(target)

    def prompt(self, template: str) -> str:
        """A class prompt template as evaluation under the trigger uses it (TrojVQA-style
        attacks add their key word); unchanged by default."""
        return template

    def params(self) -> dict:
        return asdict(self)


ATTACKS: Registry[Attack] = Registry("attack")


def create_attack(name: str, **params) -> Attack:
    """Build a registered attack from its parameters."""
    return ATTACKS.create(name, **params)
