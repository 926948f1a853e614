"""Typed parameters: dataclass configs built from loosely typed input (YAML, ``KEY=VALUE``).

Every attack, defense, training and world setting goes through :func:`build`, so a value
of the wrong type is refused at once, with one line naming the parameter, the value and the
type expected, whether it came from the command line or from an experiment YAML, before any
stage starts. Fields whose ``metadata`` has ``path=True`` hold file paths (a YAML resolves
them against its own folder).
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any

from .errors import TacleanerError

_TRUE = {"true", "yes", "on"}
_FALSE = {"false", "no", "off"}


def _type_name(t: Any) -> str:
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(t))
    if origin is list:
        (inner,) = typing.get_args(t) or (str,)
        return f"a list of {_type_name(inner)}s"
    return {bool: "true or false", int: "an integer", float: "a finite number", str: "text",
            type(None): "nothing (null)"}.get(t, getattr(t, "__name__", str(t)))


def coerce(value: Any, t: Any) -> Any:
    """``value`` as type ``t`` (bool, int, float, str, list[...], unions with None); raises
    ValueError when it cannot be read as one."""
    origin = typing.get_origin(t)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(t)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a)
            except ValueError:
                pass
        raise ValueError
    if origin is list:
        (inner,) = typing.get_args(t) or (str,)
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError
        return [coerce(v, inner) for v in value]
    if t is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError
    if t is int:
        if isinstance(value, bool):
            raise ValueError
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
        raise ValueError
    if t is float:
        if isinstance(value, bool):
            raise ValueError
        out = float(value.strip()) if isinstance(value, str) else float(value) if isinstance(value, (int, float)) else None
        if out is None or not math.isfinite(out):
            raise ValueError
        return out
    if t is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ValueError
    return value  # other annotations are not checked


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls)}


def build(cls: type, values: dict[str, Any], where: str) -> Any:
    """``cls(**values)`` with every value converted to its field's type; unknown keys and
    values of the wrong type are one-line errors that start with ``where``."""
    typed = convert(field_types(cls), values, where)
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in typed
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise TacleanerError(f"{where}: missing required key {missing[0]!r}")
    return cls(**typed)


def convert(fields: dict[str, Any], values: dict[str, Any], where: str) -> dict[str, Any]:
    """``values`` converted to the types of ``fields`` (name -> annotation), as :func:`build`
    does for a dataclass's fields (a combination of defenses has the union of its parts')."""
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise TacleanerError(f"{where} has no parameter {unknown[0]!r}; valid: {', '.join(sorted(fields))}")
    typed = {}
    for key, value in values.items():
        try:
            typed[key] = coerce(value, fields[key])
        except (ValueError, TypeError):
            raise TacleanerError(f"{where} parameter {key}={_show(value)}: expected {_type_name(fields[key])}") from None
    for key, value in typed.items():
        if (key == "seed" or key.endswith("_seed")) and isinstance(value, int) and value < 0:
            raise TacleanerError(f"{where} parameter {key}={value}: seeds are >= 0")
    return typed


def path_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("path")]


def default_of(f: dataclasses.Field) -> Any:
    """A field's default value, built from its factory when it has one."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)
