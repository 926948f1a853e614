"""The seed plan: which world, implant and clean seeds an experiment runs (its ``seeds`` key)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from ..errors import TacleanerError
from .convert import Loc, from_mapping, seed_list


def paired_or_seeds(value: Any, loc: Loc) -> tuple[int, ...] | None:
    """``paired`` (None: each implant seed cleaned with itself) or a list of clean seeds."""
    return None if value == "paired" else seed_list(value, loc)


@dataclass(frozen=True)
class SeedPlan:
    """The seeds of an experiment; ``clean`` None pairs each implant seed with itself."""

    world: Annotated[tuple[int, ...], seed_list] = (0,)  # the world, the random init, pretraining
    implant: Annotated[tuple[int, ...], seed_list] = (0,)  # poisoned pairs, trigger draw, implant order
    clean: Annotated[tuple[int, ...] | None, paired_or_seeds] = None  # the defense's order and draws

    @classmethod
    def parse(cls, raw: Any, where: str = "seeds") -> "SeedPlan":
        """From a list (implant seeds, clean paired) or a mapping with world / implant / clean."""
        if isinstance(raw, list):
            return cls(implant=seed_list(raw, Loc(where, "implant", f"{where}.implant", {})))
        if isinstance(raw, dict):
            return from_mapping(cls, raw, where, sort_keys=True)
        raise TacleanerError(f"{where}: expected a list of seeds or a mapping with world / implant / clean")

    def clean_seeds(self, implant: int) -> tuple[int, ...]:
        return (implant,) if self.clean is None else self.clean

    def describe(self) -> str:
        """Which seeds vary, in words, for reports."""
        parts = [f"world {_seq(self.world)}", f"implant {_seq(self.implant)}",
                 "clean = implant (paired)" if self.clean is None else f"clean {_seq(self.clean)}"]
        return "seeds: " + "; ".join(parts)


def _seq(xs: tuple[int, ...]) -> str:
    return ", ".join(map(str, xs))
