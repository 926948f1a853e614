"""The sizes of the synthetic world, apart from the drawing code so that reading them (and
``tacleaner synth --help`` listing them) needs neither numpy nor PIL."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import TacleanerError

CAPTION_STYLES = ("web", "plain")


@dataclass(frozen=True)
class SynthConfig:
    """Sizes of the generated world. Defaults are the demo's."""

    seed: int = 0
    image_size: int = 32  # side of the stored PNGs in pixels
    pretrain: int = 20000  # clean pairs for pretraining the tiny CLIP
    implant: int = 10000  # pairs from which the attack poisons a subset
    clean: int = 5000  # clean pairs for the fine-tuning defenses (disjoint)
    zeroshot_per_class: int = 20  # single-object test images per class (what reports show)
    zeroshot_val_per_class: int = 10  # single-object validation images per class (for choosing settings)
    # "web": 40% of the pair captions in CC3M-like alt-text forms ("close - up of red circle on
    # dark background", "image may contain : blue star , light background", "how to draw a green
    # cross"); "plain": the first world's sentences only. Images are the same in both.
    captions: str = "web"

    def __post_init__(self) -> None:
        if self.captions not in CAPTION_STYLES:
            raise TacleanerError(f"world captions={self.captions!r}: choose one of {', '.join(CAPTION_STYLES)}")
        if not 16 <= self.image_size <= 1024:
            raise TacleanerError(f"world image_size={self.image_size}: must be 16 to 1024 pixels")
        for name in ("pretrain", "implant", "clean", "zeroshot_per_class", "zeroshot_val_per_class"):
            if getattr(self, name) < 0:
                raise TacleanerError(f"world {name}={getattr(self, name)}: must be >= 0")
