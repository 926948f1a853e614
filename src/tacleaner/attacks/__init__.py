"""Attacks: a registry of poisoning methods. Importing this package registers them all;
adding an attack is one new module imported here."""
from . import badnet, blended  # noqa: F401  (registration side effects)
from .base import ATTACKS, Attack, create_attack
from .poison import poison_dataset

__all__ = ["ATTACKS", "Attack", "create_attack", "poison_dataset"]
