"""Atomic file writes and run folders that are never overwritten silently."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

from .errors import TacleanerError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed over ``path``.

    A crash or an exception leaves the old file (or none) in place, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_yaml(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, yaml.safe_dump(obj, sort_keys=False))


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TacleanerError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise TacleanerError(f"{path}: not valid JSON ({e})") from None


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one JSON row; each row is a single write so a crash loses at most that row."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def prepare_run_dir(path: str | os.PathLike, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Create the run folder ``path``.

    An existing non-empty folder is an error unless ``resume`` (keep it and continue) or
    ``overwrite`` (empty it first) is given.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise TacleanerError(f"{path}: exists and is not a folder")
    if path.exists() and any(path.iterdir()):
        if overwrite:
            shutil.rmtree(path)
        elif not resume:
            raise TacleanerError(
                f"{path}: run folder exists; pass --resume to continue it or --overwrite to replace it"
            )
    path.mkdir(parents=True, exist_ok=True)
    return path
