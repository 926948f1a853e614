"""Defenses: fine-tuning objectives by name. ``finetune`` is the plain CLIP loss, which also
serves pretraining and backdoor implanting. Importing this package registers them all."""
from . import cleanclip, finetune, invert, par, rvpt, safeclip, tacleaner  # noqa: F401  (registration side effects)
from .base import ClipObjective, Objective
from .registry import DEFENSES, create_defense

__all__ = ["DEFENSES", "ClipObjective", "Objective", "create_defense"]
