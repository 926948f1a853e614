"""Attacks: a registry of poisoning methods. Importing this package registers them all;
adding an attack is one new module imported here."""
from . import badclip, badnet, blended, label_consistent, sig, ssba, trojvqa, wanet  # noqa: F401  (registration side effects)
from .base import ATTACKS, Attack, PoisonContext, create_attack, mentions
from .poison import load_attack, poison_dataset

__all__ = ["ATTACKS", "Attack", "PoisonContext", "create_attack", "load_attack", "mentions", "poison_dataset"]
