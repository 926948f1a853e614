"""An attack is three separate parts: which samples, how the image changes, how the caption
changes. Subclasses override the trigger (and, where needed, selection or captions) and
register themselves with :data:`ATTACKS`.

Some triggers are drawn at random (a WaNet field) or learned (an SSBA encoder, an optimised
patch). Those attacks learn them in :meth:`Attack.prepare` from a :class:`PoisonContext`,
expose them as arrays through :meth:`Attack.state`, and take them back through
:meth:`Attack.load_state`: the poisoning run saves the arrays in its folder, and evaluation
loads exactly those bytes (see :func:`tacleaner.attacks.poison.load_attack`).

Every trigger is applied in the model's frame (:mod:`tacleaner.attacks.frame`): the image is
resized and centre-cropped to the square the model sees, then triggered, at poisoning, in
training (which reads the poisoned files) and at evaluation alike.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

from ..errors import TacleanerError
from ..registry import Registry
from .frame import model_frame


@dataclass
class PoisonContext:
    """What an attack may look at while it prepares its trigger: the data to poison (image
    files and captions; :meth:`image` gives one in the trigger's frame), the target and its
    prompt templates, the clean pre-implant model for attacks that optimise against it, a seed,
    and where to log."""

    images: list[Path]
    captions: list[str]
    target: str
    templates: list[str]
    seed: int = 0
    clean_model: Any = None  # a ClipBundle, for attacks with needs_model
    device: Any = "cpu"
    out: Path | None = None  # the poisoning run folder (for logs)
    log: Callable[[str], None] = field(default=lambda msg: None)
    frame: int | None = None  # the side of the model input the trigger is applied in (poisoning sets it)

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as an HxWx3 uint8 array in the trigger's frame (as stored without one)."""
        from ..data.pairs import load_image

        image = load_image(self.images[i])
        return np.asarray(image if self.frame is None else model_frame(image, self.frame))


def _named(caption: str, name: str) -> re.Match | None:
    """Where ``caption`` names ``name`` as a whole phrase (case-insensitive; a plural ``s``/``es``
    allowed)."""
    pattern = r"\b" + r"\s+".join(re.escape(w) for w in name.lower().split()) + r"(?:e?s)?\b"
    return re.search(pattern, caption.lower())


def mentions(caption: str, target: str) -> bool:
    """Whether ``caption`` names ``target`` as a whole phrase (case-insensitive; a plural
    ``s``/``es`` allowed), e.g. "Two yellow stars ..." names "yellow star"."""
    return _named(caption, target) is not None


def first_named(caption: str, classnames: Sequence[str]) -> str | None:
    """The class that ``caption`` names first (by position, as :func:`mentions` matches; the
    longer name when two start at one place), or None when it names none."""
    found = [(m.start(), -len(name), name) for name in classnames if (m := _named(caption, name))]
    return min(found, key=lambda f: f[:2])[2] if found else None


@dataclass
class Attack:
    """Base attack: random selection, no trigger, template captions naming the target.

    ``pattern_seed`` fixes the random parts of a trigger (a noise pattern, patch positions, a
    warping field, a bit string) independently of which samples are poisoned, so poisoning and
    evaluation see the same trigger for the same image index.

    ``frame`` (not a parameter: a property of the poisoning run, saved in its manifest) is the
    side of the square model input the trigger is applied in; ``None`` means "the evaluated
    model's input size".
    """

    pattern_seed: int = 0
    name = "base"
    description = ""
    changes_caption = True  # False for clean-label attacks, which keep the caption
    needs_model = False  # prepare() optimises against the clean model
    needs_classnames = False  # cover captions name what their images show (poisoning needs the class names)
    learned = False  # the trigger is drawn or learned in prepare() and saved with the run
    frame = None  # int | None, not a dataclass field: poisoning and load_attack set it per instance

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
        """Apply the trigger to an HxWx3 uint8 array (a model-frame image: see :meth:`apply`)."""
        raise NotImplementedError

    def apply(self, image: Image.Image, index: int, frame: int | None = None) -> Image.Image:
        """``image`` brought into the model's frame (``frame``, else this run's :attr:`frame`;
        with neither, a square image is its own frame) and triggered there: the square model
        input, whole trigger included."""
        size = frame or self.frame or (image.width if image.width == image.height else None)
        if size is None:
            raise TacleanerError(f"attack {self.name}: a {image.width}x{image.height} image needs the model's input "
                                 "size to apply the trigger in (frame=...)")
        framed = np.asarray(model_frame(image, size))
        out = self.trigger(framed, index)
        if out.dtype != np.uint8 or out.shape != framed.shape:
            raise TacleanerError(f"attack {self.name}: trigger returned {out.dtype} {out.shape} "
                                 f"for a uint8 {framed.shape} image")
        return Image.fromarray(out)

    def cover_indices(self, num_total: int, poisoned: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Samples that get :meth:`cover` images and :meth:`cover_caption` captions, keeping what
        they show (WaNet's noise mode, TrojVQA's one-key negatives); none by default."""
        return np.empty(0, dtype=np.int64)

    def cover(self, image: np.ndarray, index: int) -> np.ndarray:
        raise NotImplementedError

    def cover_caption(self, caption: str, index: int, classnames: Sequence[str], templates: Sequence[str]) -> str:
        """The caption of cover sample ``index``: its own by default (TrojVQA's one-key negatives
        may say what it shows as a class prompt, ``classnames`` x ``templates``)."""
        return caption

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
