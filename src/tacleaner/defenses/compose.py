"""Defenses that compose: ``a+b`` is the objective whose losses are those of ``a`` plus the
extra terms of ``b`` (every term but its CLIP loss, which ``a`` has already counted).

``tacleaner+par`` is TA-Cleaner's subtext alignment with PAR's push away from the starting
model, without a class of its own. How the parts combine:

- **Parameters** are the union of the parts' parameters, flat (``w_ta``, ``tau``, ...); a
  parameter that several parts have (``w_clip``) goes to each of them, and its default is the
  first part's.
- **Batches**: each part builds its own batch from the same samples (its own augmentations:
  PAR's noise and erasing do not touch TA-Cleaner's images), and computes its losses on it
  with its own forward pass, so a composite costs about the sum of its parts.
- **Losses**: the first part's, then each later part's except ``clip_loss``; a name that is
  already taken is prefixed with the part's name.
- **Training defaults** (PAR's learning-rate schedule, for one) are the union, the first part
  winning where two set the same setting; the user's settings override them all.
- Whatever a part does to the model in its setup applies to all (PAR fixes the logit scale).
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, ClassVar

import torch

from ..data.pairs import PairTable
from ..errors import TacleanerError
from ..models import ClipBundle
from .base import Objective

SEPARATOR = "+"


@dataclasses.dataclass
class Composite(Objective):
    """Base of the generated ``a+b`` classes (see the module docstring)."""

    parts_classes: ClassVar[tuple[type[Objective], ...]] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        self.parts = [cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})
                      for cls in self.parts_classes]

    def setup(self, bundle: ClipBundle, table: PairTable, seed: int) -> None:
        self.bundle = bundle
        for part in self.parts:
            part.dist = self.dist
            part.setup(bundle, table, seed)

    def check_ready(self) -> None:
        for part in self.parts:
            part.check_ready()

    def write_report(self, out) -> None:
        for part in self.parts:
            part.write_report(out)

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
        """The first part's batch as is; the others' keys prefixed ``<i>:``."""
        batch = dict(self.parts[0].collate(samples))
        for i, part in enumerate(self.parts[1:], start=1):
            for key, value in part.collate(samples).items():
                batch[f"{i}:{key}"] = value
        return batch

    def _part_batch(self, batch: dict[str, Any], i: int) -> dict[str, Any]:
        prefix = f"{i}:"
        own = {k[len(prefix):]: v for k, v in batch.items() if k.startswith(prefix)}
        own["row_offset"] = batch.get("row_offset", 0)  # set by the training loop, on the whole batch
        return own

    def losses(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        first = {k: v for k, v in batch.items() if not (k[:1].isdigit() and ":" in k)}
        out = dict(self.parts[0].losses(model, first))
        for i, part in enumerate(self.parts[1:], start=1):
            for key, value in part.losses(model, self._part_batch(batch, i)).items():
                if key == "clip_loss":
                    continue  # counted once, by the first part
                out[key if key not in out else f"{part.name}_{key}"] = value
        return out


_MADE: dict[str, type[Composite]] = {}


def composite_class(name: str, lookup) -> type[Composite]:
    """The objective class for ``"a+b[+c...]"``; ``lookup`` maps a part's name to its class."""
    if name in _MADE:
        return _MADE[name]
    names = [n.strip() for n in name.split(SEPARATOR)]
    if len(names) < 2 or not all(names):
        raise TacleanerError(f"defense {name!r}: a combination is two or more defense names joined by "
                             f"'{SEPARATOR}', e.g. tacleaner{SEPARATOR}par")
    if len(set(names)) != len(names):
        raise TacleanerError(f"defense {name!r} names a part twice")
    classes = tuple(lookup(n) for n in names)  # an unknown part is the registry's error
    fields: dict[str, tuple[str, Any, dataclasses.Field]] = {}
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name not in fields:
                kw = {"metadata": f.metadata}
                if f.default_factory is not dataclasses.MISSING:
                    kw["default_factory"] = f.default_factory
                else:
                    kw["default"] = f.default
                fields[f.name] = (f.name, hints[f.name], dataclasses.field(**kw))
    defaults: dict[str, Any] = {}
    world: dict[str, str] = {}
    for cls in reversed(classes):  # the first part wins
        defaults.update(cls.train_defaults)
        world.update(cls.world_files)
    namespace = {
        "name": name,
        "parts_classes": classes,
        "train_defaults": defaults,
        "world_files": world,
        "relative_cost": sum(c.relative_cost for c in classes),
        "description": " plus ".join(f"[{c.description}]" for c in classes) + " (terms summed, the CLIP loss once)",
        "__module__": __name__,
    }
    made = dataclasses.make_dataclass("Composite_" + "_".join(n.replace("-", "_") for n in names),
                                      list(fields.values()), bases=(Composite,), namespace=namespace)
    made.__doc__ = (f"Knobs: those of {', '.join(names)} (a knob several have goes to each). "
                    "Combination of defenses; see tacleaner.defenses.compose.")
    _MADE[name] = made
    return made
