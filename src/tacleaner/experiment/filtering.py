"""Defenses that act on the data or on the training instead of on the backdoored model:
``filter`` scores the poisoned implant set with the backdoored model (:mod:`tacleaner.detect`),
removes the most suspicious pairs, and trains the clean model from before the attack again on
what is left, with the implant's settings; ``safeclip`` trains the clean model from before the
attack again on the whole poisoned set under SafeCLIP's objective (a training-time defense), with
the implant's settings. In a grid each is a defense entry like the fine-tuning ones
(``defenses: [{name: filter, params: {detector: norm}}]``), so these and the fine-tuning
defenses are compared on the same seeds, with the same intervals. ``stage`` names the grid
stage that runs each."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ..defenses import DEFENSES, create_defense
from ..detect import DetectConfig
from ..detect.cut import DEFAULT_Z
from ..detect.score import DEFAULT_DETECTOR
from ..errors import TacleanerError
from ..registry import Registry


@dataclass
class Filter:
    """``detector``, ``features``, ``k``, ``reference``, ``seed``: as ``tacleaner detect``; the
    pairs left out before training again: those at robust z-score ``z`` or above (the default
    rule, ``tacleaner detect``'s), or, when ``remove`` is set, that fraction of the implant set."""

    detector: str = DEFAULT_DETECTOR
    features: str = "raw"
    k: int = 16
    reference: int = 4096
    seed: int = 0
    z: float = DEFAULT_Z
    remove: float | None = None
    name: ClassVar[str] = "filter"
    relative_cost: ClassVar[float] = 1.2  # embedding the implant set once, then training as the implant did (not measured)
    train_defaults: ClassVar[dict[str, Any]] = {}  # it trains with the implant's settings, not a defense's
    world_files: ClassVar[dict[str, str]] = {}
    description: ClassVar[str] = ("scores the poisoned set with the backdoored model, removes the most suspicious pairs, trains the "
                   "clean model again on the rest (tacleaner detect, then the implant's training)")
    stage: ClassVar[str] = "filter"

    def __post_init__(self) -> None:
        if self.remove is not None and not 0 <= self.remove < 1:
            raise TacleanerError(f"filter remove={self.remove}: must be a fraction in [0, 1)")
        self.detect_config()  # a bad detector, k or reference fails when the config is read

    def detect_config(self) -> DetectConfig:
        return DetectConfig(detector=self.detector, features=self.features, k=self.k, reference=self.reference,
                            seed=self.seed)

    def cut(self) -> dict[str, float]:
        """The removal rule, as :func:`tacleaner.detect.detect` takes it."""
        return {"remove": self.remove} if self.remove is not None else {"z": self.z}


class TrainUnder:
    """A training-time defense: the implant trained again, from the clean model, under the
    objective of the same name (its parameters, checked when the config is read; the poisoning
    run's ``poisoned_indices.json`` passed as ``poisoned`` when the objective takes it, so that it
    can log how well it found the poison)."""

    objective: ClassVar[str] = ""
    stage: ClassVar[str] = "train-under"
    train_defaults: ClassVar[dict[str, Any]] = {}  # the implant's settings, not a defense's
    world_files: ClassVar[dict[str, str]] = {}

    def __init__(self, **params: Any) -> None:
        self.params = params
        create_defense(self.objective, **params)

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        entry = DEFENSES.get(cls.objective)
        cls.name, cls.relative_cost = cls.objective, entry.relative_cost
        cls.description = f"the implant trained again from the clean model under {cls.objective}: {entry.description}"


class SafeClipTraining(TrainUnder):
    objective = "safeclip"


DATA_DEFENSES: Registry[Any] = Registry("data defense")
DATA_DEFENSES.register("filter")(Filter)
DATA_DEFENSES.register("safeclip")(SafeClipTraining)


def defense_entry(name: str) -> Any:
    """The registry entry of a grid's defense: a data defense's, else the fine-tuning objective's."""
    return DATA_DEFENSES.get(name) if name in DATA_DEFENSES else DEFENSES.get(name)


def check_defense(name: str, params: dict[str, Any]) -> None:
    """Build the entry once, so that a bad name or parameter fails when the config is read."""
    if name in DATA_DEFENSES:
        DATA_DEFENSES.create(name, **params)
    else:
        create_defense(name, **params)
