"""The defenses by name: each defense's module registers its class here, and a name of several
joined by ``+`` (``tacleaner+par``) is their combination (:mod:`.compose`)."""
from __future__ import annotations

from typing import Any

from ..registry import Registry
from .base import Objective
from .compose import SEPARATOR, Recipe

DEFENSES: Registry[Objective] = Registry("defense", compose=Recipe.of, separator=SEPARATOR)


def create_defense(name: str, **params: Any) -> Objective:
    """Build a registered defense (or a combination ``a+b``) from its parameters."""
    return DEFENSES.create(name, **params)
