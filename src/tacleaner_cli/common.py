"""What several commands do with their parsed options: typed settings from options and YAML,
``--param`` pairs, ``--out`` files, the model to load. Library imports stay inside the
functions, so that building the parser imports no torch."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import yaml

from tacleaner.errors import TacleanerError
from tacleaner.fileio import load_yaml_file
from tacleaner.params import build
from tacleaner.train_config import with_defaults


def dataclass_from(cls: type, args: argparse.Namespace, yaml_path: str | None = None,
                   defaults: dict[str, Any] | None = None) -> Any:
    """Dataclass defaults -> ``defaults`` -> YAML file -> command-line overrides, every value
    type-checked."""
    values: dict[str, Any] = {}
    if yaml_path:
        loaded = load_yaml_file(yaml_path) or {}
        if not isinstance(loaded, dict):
            raise TacleanerError(f"{yaml_path}: expected a mapping of settings")
        values.update(loaded)
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    if defaults:
        values = with_defaults(defaults, values)
    return build(cls, values, str(yaml_path) if yaml_path else "settings")


def parse_params(items: list[str] | None, option: str = "--param") -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML scalars (numbers, booleans, strings)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TacleanerError(f"{option} {item!r}: expected KEY=VALUE")
        if not value.strip():
            raise TacleanerError(f"{option} {item!r}: no value after '='")
        name = key.strip().replace("-", "_")
        if name in out:
            raise TacleanerError(f"{option} {name} given twice")
        try:
            out[name] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[name] = value  # read as text; the parameter's type check names it if it is not one
    return out


def output_file(path: str, overwrite: bool, what: str = "file") -> Path:
    """An --out file: never a folder, never an existing file without --overwrite."""
    out = Path(path)
    if out.is_dir():
        raise TacleanerError(f"{out}: is a folder; --out names the {what} to write")
    if out.exists() and not overwrite:
        raise TacleanerError(f"{out}: exists; pass --overwrite to replace it")
    return out


def load_bundle(args: argparse.Namespace):
    """The model of ``--checkpoint`` (with ``--model`` for foreign files), else ``--model``
    with random or ``--pretrained`` weights."""
    from tacleaner.models import create_model, load_model

    if getattr(args, "checkpoint", None):
        return load_model(args.checkpoint, args.model)
    if not args.model:
        raise TacleanerError("pass --checkpoint FILE or --model NAME")
    return create_model(args.model, pretrained=getattr(args, "pretrained", None))


def load_clean_model(args: argparse.Namespace):
    """The clean (pre-implant) model of ``--clean-model``, for attacks that optimise against it."""
    if not args.clean_model:
        return None
    from tacleaner.models import load_model

    return load_model(args.clean_model, args.model)


def is_main() -> bool:
    """Whether this process prints the result (always, unless a torchrun rank other than 0)."""
    from tacleaner.distributed import current

    return current().is_main


def describe(report: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in report.items())
