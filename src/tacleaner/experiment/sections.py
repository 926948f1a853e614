"""The ``model`` and ``data`` sections of an experiment config."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from ..data.synth import ZEROSHOT_TEMPLATES, SynthConfig, class_names
from ..data.zeroshot import BUILTIN_CLASSES, Classes, read_classes
from ..errors import TacleanerError
from ..models.factory import model_config
from ..params import build
from .convert import Loc, SectionView, as_given, flag, non_negative_int, optional_text

MODEL_TEXT = "give a 'name' (see `tacleaner models`) or an 'init' checkpoint"


@dataclass(frozen=True)
class ModelConfig(SectionView):
    """The starting model: an open_clip architecture (random init or a pretrained tag) or a
    checkpoint file."""

    name: Annotated[str | None, as_given] = None  # open_clip architecture (`tacleaner models`); checked by check()
    seed: Annotated[int, non_negative_int] = 0  # the random init's seed, plus the world seed
    pretrained: Annotated[str | None, optional_text] = None  # open_clip pretrained tag
    init: Annotated[str | None, optional_text] = None  # a checkpoint to start from

    def check(self, where: str) -> None:
        """The architecture exists, or the checkpoint does (before any stage starts)."""
        if not isinstance(self.name, str) and not self.init:
            raise TacleanerError(f"{where}: model: {MODEL_TEXT}")
        if isinstance(self.name, str) and not self.init:
            try:
                model_config(self.name)
            except TacleanerError as e:
                raise TacleanerError(f"{where}: model: {e}") from None
        if self.init and not Path(self.init).is_file():
            raise TacleanerError(f"{where}: model.init {self.init}: checkpoint not found")


def file_path(value: Any, loc: Loc) -> str:
    """A path as text (any value: one that is no file is reported as not found)."""
    return str(value)


def synth_world(value: Any, loc: Loc) -> SynthConfig:
    """The world's settings (``synth:`` alone is the default world)."""
    return build(SynthConfig, value or {}, loc.label)


@dataclass(frozen=True)
class DataConfig(SectionView):
    """A synthetic world (``synth``) generated per world seed, or file paths."""

    pretrain: Annotated[str | None, file_path] = None  # pairs CSV, with ``pretrain:`` settings
    implant: Annotated[str | None, file_path] = None  # pairs CSV the attack poisons a part of
    clean: Annotated[str | None, file_path] = None  # pairs CSV the defenses fine-tune on
    zeroshot: Annotated[str | None, file_path] = None  # zero-shot CSV or ImageFolder: the report's split
    zeroshot_val: Annotated[str | None, file_path] = None  # zero-shot validation split (selection)
    classes: Annotated[str | None, file_path] = None  # classes JSON or a built-in list (imagenet)
    synth: Annotated[SynthConfig | None, synth_world] = None
    allow_overlap: Annotated[bool, flag] = False  # the cleaning set may share images with the implant set

    @property
    def is_synth(self) -> bool:
        return self.synth is not None

    def files(self) -> dict[str, Path]:
        """The file paths given."""
        return {name: Path(getattr(self, name)) for name in DATA_PATHS if getattr(self, name) is not None}

    def check(self, where: str) -> None:
        """One kind of data; every file given exists and is a file where a file is needed."""
        files = {name: getattr(self, name) for name in DATA_PATHS if getattr(self, name) is not None}
        if self.is_synth:
            if files:
                raise TacleanerError(f"{where}: data: give either 'synth' or file paths, not both")
            return
        for key, value in files.items():
            if not (key == "classes" and value in BUILTIN_CLASSES) and not Path(value).exists():
                raise TacleanerError(f"{where}: data.{key} {value}: file not found")
            if key in ("pretrain", "implant", "clean", "classes") and Path(value).is_dir():
                raise TacleanerError(f"{where}: data.{key} {value}: a folder; give the CSV (JSON for classes) file")

    def class_list(self) -> Classes:
        """The zero-shot classes (the synthetic world's, or the classes file's, ImageNet by default)."""
        if self.is_synth:
            return Classes(class_names(), ZEROSHOT_TEMPLATES)
        return read_classes("imagenet" if self.classes is None else self.classes)

    @property
    def has_validation(self) -> bool:
        """A validation split exists (selection reads it)."""
        return self.synth.zeroshot_val_per_class > 0 if self.is_synth else bool(self.zeroshot_val)


DATA_PATHS = ("pretrain", "implant", "clean", "zeroshot", "zeroshot_val", "classes")
