"""The ``attacks`` and ``defenses`` entries of an experiment config, and the names that become
folders."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..errors import TacleanerError
from ..params import build
from ..report import CLEAN_MODEL
from .convert import Loc

RESERVED = ("none", CLEAN_MODEL)  # the backdoored and the clean model's rows in every report
_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def check_folder_name(value: Any, label: str) -> str:
    """Names that become folder names (run name, attack and defense ids, groups) stay one plain
    path part: no "/", no "..", nothing that could write outside the run folder."""
    if not isinstance(value, str) or not _FOLDER_NAME.fullmatch(value) or ".." in value:
        raise TacleanerError(f"{label}: {value!r} is not a valid name (letters, digits and . _ + -, "
                             "starting with a letter or digit; it names a folder)")
    return value


def folder_name(value: Any, loc: Loc) -> str:
    return check_folder_name(value, loc.label)


def _mapping(spec: Any, key: str, where: str) -> None:
    if not isinstance(getattr(spec, key), dict):
        raise TacleanerError(f"{where}.{key}: expected a mapping, got {getattr(spec, key)!r}")


@dataclass
class AttackSpec:
    name: str
    target: str
    num: int
    params: dict[str, Any] = field(default_factory=dict)
    implant: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides
    id: str = ""  # folder and table label; defaults to the name

    def check(self, where: str) -> None:
        _mapping(self, "params", where)
        _mapping(self, "implant", where)
        if self.num < 0:
            raise TacleanerError(f"{where}.num: must be >= 0, got {self.num}")


@dataclass
class DefenseSpec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides
    id: str = ""
    group: str = ""  # candidates sharing a group: the selection rule picks one on the tune set (selection.py)

    def check(self, where: str) -> None:
        _mapping(self, "params", where)
        _mapping(self, "train", where)


def _entries(cls: type, items: Any, where: str) -> list:
    """Entries built with the registry's parameter checks, each with an id that names a folder
    and is unique."""
    if not isinstance(items, list):
        raise TacleanerError(f"{where}: expected a list of entries, got {items!r}")
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise TacleanerError(f"{where}[{i}]: expected a mapping, got {item!r}")
        spec = build(cls, item, f"{where}[{i}]")
        spec.check(f"{where}[{i}]")
        spec.id = check_folder_name(spec.id or spec.name, f"{where}[{i}].id")
        out.append(spec)
    if not out and cls is AttackSpec:
        raise TacleanerError(f"{where}: empty list; give at least one attack (defenses may be empty)")
    ids = [s.id for s in out]
    if len(set(ids)) != len(ids):
        raise TacleanerError(f"{where}: duplicate entries; give each an 'id'")
    return out


def attack_list(value: Any, loc: Loc) -> list[AttackSpec]:
    return _entries(AttackSpec, value, loc.label)


def defense_list(value: Any, loc: Loc) -> list[DefenseSpec]:
    specs = _entries(DefenseSpec, value, loc.label)
    if any(s.id in RESERVED for s in specs):
        raise TacleanerError(f"{loc.label}: 'none' and {CLEAN_MODEL!r} are reserved row names; use another id")
    return specs
