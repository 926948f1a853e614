"""Defenses that compose: ``a+b`` is the objective whose losses are those of ``a`` plus the
extra terms of ``b`` (every term but its CLIP loss, which ``a`` has already counted).

``tacleaner+par`` is TA-Cleaner's subtext alignment with PAR's push away from the starting
model, without a class of its own. How the parts combine:

- **Parameters** are the union of the parts' parameters, flat (``w_ta``, ``tau``, ...); a
  parameter that several parts have (``w_clip``) goes to each of them, and its default is the
  first part's.
- **Batches**: each part builds its own batch from the same samples (its own augmentations:
  PAR's noise and erasing do not touch TA-Cleaner's images), held in the combination's batch
  as the list ``parts``, and computes its losses on it with its own forward pass, so a
  combination costs about the sum of its parts.
- **Losses**: the first part's, then each later part's except ``clip_loss``; a name that is
  already taken is prefixed with the part's name.
- **Training defaults** (PAR's learning-rate schedule, for one) are the union, the first part
  winning where two set the same setting; the user's settings override them all.
- Whatever a part does to the model in its setup applies to all (PAR fixes the logit scale).
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

import torch

from ..data.pairs import PairTable
from ..errors import TacleanerError
from ..models import ClipBundle
from ..params import convert, default_of, field_types
from .base import ClipObjective, Objective, check_weights

SEPARATOR = "+"


class Recipe:
    """The registry's entry for ``"a+b[+c...]"``: the parts' classes, what the combination
    takes from them (training defaults, world files, cost), and, called with the union of their
    parameters, the :class:`Combination` itself. ``dataclasses.fields`` of a recipe lists that
    union, as it lists a single defense's parameters (path parameters, ``tacleaner defenses``)."""

    _made: dict[str, Recipe] = {}

    def __init__(self, name: str, classes: tuple[type[ClipObjective], ...]) -> None:
        self.name, self.classes = name, classes
        fields: dict[str, dataclasses.Field] = {}
        for cls in classes:  # a parameter several parts have: the first part's field
            for f in dataclasses.fields(cls):
                fields.setdefault(f.name, f)
        self.__dataclass_fields__ = fields
        self.train_defaults: dict[str, Any] = {}
        self.world_files: dict[str, str] = {}
        for cls in reversed(classes):  # the first part wins
            self.train_defaults.update(cls.train_defaults)
            self.world_files.update(cls.world_files)
        self.relative_cost = sum(c.relative_cost for c in classes)
        self.description = " plus ".join(f"[{c.description}]" for c in classes) + " (terms summed, the CLIP loss once)"

    @classmethod
    def of(cls, name: str, lookup: Callable[[str], type[ClipObjective]]) -> Recipe:
        """The recipe for ``name``; ``lookup`` maps a part's name to its class."""
        if name not in cls._made:
            names = [n.strip() for n in name.split(SEPARATOR)]
            if len(names) < 2 or not all(names):
                raise TacleanerError(f"defense {name!r}: a combination is two or more defense names joined by "
                                     f"'{SEPARATOR}', e.g. tacleaner{SEPARATOR}par")
            if len(set(names)) != len(names):
                raise TacleanerError(f"defense {name!r} names a part twice")
            classes = tuple(lookup(n) for n in names)  # an unknown part is the registry's error
            alone = [c.name for c in classes if not c.combinable]
            if alone:
                raise TacleanerError(f"defense {name!r}: {alone[0]} trains on data of its own and cannot be combined")
            cls._made[name] = cls(name, classes)
        return cls._made[name]

    def __call__(self, **values: Any) -> Combination:
        """The combination with ``values`` (converted to the parameters' types; every parameter
        a part has goes to it, a shared one to each)."""
        fields = self.__dataclass_fields__
        typed = convert({k: t for cls in reversed(self.classes) for k, t in field_types(cls).items()},
                        values, f"defense {self.name!r}")
        params = {k: typed[k] if k in typed else default_of(f) for k, f in fields.items()}
        check_weights(self.name, params)
        parts = [cls(**{f.name: params[f.name] for f in dataclasses.fields(cls)}) for cls in self.classes]
        return Combination(self, params, parts)


class Combination(Objective):
    """Objective of several defenses (see the module docstring): the parts' lifecycles in turn,
    a batch of each part's own, and their losses together, the CLIP loss once."""

    def __init__(self, recipe: Recipe, params: dict[str, Any], parts: list[ClipObjective]) -> None:
        self.recipe, self._params, self.parts = recipe, params, parts
        self.name = recipe.name
        self.train_defaults, self.world_files = recipe.train_defaults, recipe.world_files
        self.relative_cost, self.description = recipe.relative_cost, recipe.description

    def setup(self, bundle: ClipBundle, table: PairTable, seed: int) -> None:
        for part in self.parts:
            part.dist = self.dist
            part.setup(bundle, table, seed)
        self.truncated = max(int(getattr(part, "truncated", 0) or 0) for part in self.parts)  # the same captions

    def check_ready(self) -> None:
        for part in self.parts:
            part.check_ready()

    def lr_factor(self) -> float:
        factor = 1.0
        for part in self.parts:
            factor *= part.lr_factor()
        return factor

    def write_report(self, out) -> None:
        for part in self.parts:
            part.write_report(out)

    def epoch_note(self) -> str:
        return "; ".join(note for part in self.parts if (note := part.epoch_note()))

    def run_metadata(self) -> dict[str, Any]:
        return {k: v for part in self.parts for k, v in part.run_metadata().items()}

    def state(self) -> dict[str, Any] | None:
        states = {str(i): st for i, part in enumerate(self.parts) if (st := part.state()) is not None}
        return states or None

    def load_state(self, state: dict[str, Any]) -> None:
        for i, part in enumerate(self.parts):
            if str(i) in state:
                part.load_state(state[str(i)])

    def on_epoch_start(self, epoch: int) -> None:
        for part in self.parts:
            part.on_epoch_start(epoch)

    def close(self) -> None:
        for part in self.parts:
            part.close()

    def collate(self, samples: list[dict]) -> dict[str, Any]:
        """Each part's batch of the samples, in ``parts``; the counts are the first part's."""
        parts = [part.collate(samples) for part in self.parts]
        return {"size": parts[0]["size"], "skipped": parts[0]["skipped"], "missing": parts[0].get("missing", 0),
                "parts": parts}

    def losses(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The first part's losses, then each later part's but its ``clip_loss``; a name already
        taken is prefixed with the part's name."""
        out: dict[str, torch.Tensor] = {}
        for i, (part, own) in enumerate(zip(self.parts, batch["parts"])):
            own = {**own, "row_offset": batch.get("row_offset", 0)}  # set by the loop, on the whole batch
            for key, value in part.losses(model, own).items():
                if i and key == "clip_loss":
                    continue  # counted once, by the first part
                out[key if key not in out else f"{part.name}_{key}"] = value
        return out

    def params(self) -> dict[str, Any]:
        return copy.deepcopy(self._params)
