"""A YAML mapping -> a config dataclass, checked by the fields' own types.

Each field of a section is ``Annotated[type, check]``: ``check(value, loc)`` returns the value
as its type or raises a one-line :class:`TacleanerError` that names the key (``loc.label``).
:func:`from_mapping` refuses anything that is not a mapping and unknown keys, asks for the
required ones, and runs each field's check in the order the fields are declared, so the first
error a config has is the one reported. The messages are the experiment config's (docs/
experiment-config.md); :mod:`tacleaner.params` builds attack, defense, training and world
settings with its own.
"""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, Callable, Iterator, NamedTuple, TypeVar

from ..errors import TacleanerError

T = TypeVar("T")


class Loc(NamedTuple):
    """Where a value sits: the mapping's label (``config: model``), its key, the key's label
    (``config: model.seed``) and the fields of the mapping converted before it."""

    where: str
    key: str
    label: str
    done: dict[str, Any]


Check = Callable[[Any, Loc], Any]


def from_mapping(cls: type[T], raw: Any, where: str, *, fields_at: str | None = None,
                 sort_keys: bool = False) -> T:
    """``cls`` from the mapping ``raw``. ``where`` starts the mapping's errors, ``fields_at``
    (default ``where + "."``) those of its keys; ``sort_keys`` lists the valid keys sorted
    instead of in declaration order."""
    if not isinstance(raw, dict):
        raise TacleanerError(f"{where}: expected a mapping, got {raw!r}")
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        valid = sorted(names) if sort_keys else names
        raise TacleanerError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(valid)}")
    for f in fields:
        if f.name not in raw and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise TacleanerError(f"{where}: missing required key {f.name!r}")
    checks = checks_of(cls)
    prefix = f"{where}." if fields_at is None else fields_at
    done: dict[str, Any] = {}
    for name in names:
        if name in raw:
            done[name] = checks[name](raw[name], Loc(where, name, f"{prefix}{name}", done))
    return cls(**done)


def checks_of(cls: type) -> dict[str, Check]:
    """Each field's check: the callable in its ``Annotated`` metadata."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out = {}
    for f in dataclasses.fields(cls):
        meta = [m for m in getattr(hints[f.name], "__metadata__", ()) if callable(m)]
        if not meta:
            raise TypeError(f"{cls.__name__}.{f.name}: no check in its annotation")
        out[f.name] = meta[0]
    return out


def scalar(test: Callable[[Any], bool], expected: str) -> Check:
    """A check that keeps values passing ``test`` and refuses others as ``key=value: expected ...``."""

    def check(value: Any, loc: Loc) -> Any:
        if not test(value):
            raise TacleanerError(f"{loc.label}={value!r}: expected {expected}")
        return value

    return check


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


non_negative_int = scalar(lambda v: _is_int(v) and v >= 0, "an integer >= 0")
positive_int = scalar(lambda v: _is_int(v) and v >= 1, "a positive integer")
flag = scalar(lambda v: isinstance(v, bool), "true or false")


def as_given(value: Any, loc: Loc) -> Any:
    """Kept as written; checked later, against other keys."""
    return value


def optional_text(value: Any, loc: Loc) -> str | None:
    """Text; a number is read as its text (a YAML ``pretrained: 1`` stays usable)."""
    if value is None or isinstance(value, str):
        return value
    if _is_int(value) or isinstance(value, float):
        return str(value)
    raise TacleanerError(f"{loc.label}={value!r}: expected text")


def seed_list(value: Any, loc: Loc) -> tuple[int, ...]:
    """Distinct seeds >= 0; one integer is a list of one."""
    value = [value] if _is_int(value) else value
    if not isinstance(value, list) or not value or not all(_is_int(v) for v in value):
        raise TacleanerError(f"{loc.label}: expected a non-empty list of integers, got {value!r}")
    if len(set(value)) != len(value):
        raise TacleanerError(f"{loc.label}: repeated seed in {value}")
    if any(v < 0 for v in value):
        raise TacleanerError(f"{loc.label}: seeds are >= 0, got {value}")
    return tuple(value)


def section(cls: type) -> Check:
    """A nested mapping converted to ``cls`` by :func:`from_mapping`, its errors starting with
    the key's label."""

    def check(value: Any, loc: Loc) -> Any:
        return from_mapping(cls, value, loc.label)

    return check


class SectionView(Mapping):
    """A section read like the YAML mapping it came from: its keys are the fields that are set
    (not None). Callers written against the mapping (``cfg.data.values()``,
    ``cfg.model.get("init")``) read the typed section unchanged."""

    def __getitem__(self, key: str) -> Any:
        value = getattr(self, key, None) if key in self._names() else None
        if value is None:
            raise KeyError(key)
        return value

    def __iter__(self) -> Iterator[str]:
        return (name for name in self._names() if getattr(self, name) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def _names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]
