"""Atomic file writes and run folders that are never overwritten silently."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

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
        return json.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark is not an error
    except FileNotFoundError:
        raise TacleanerError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise TacleanerError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise TacleanerError(f"{path}: not valid JSON ({e})") from None


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one JSON row; each row is a single write so a crash loses at most that row."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last)."""


def _no_duplicates(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"key {key!r} given twice",
                                                    key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def load_yaml_file(path: str | os.PathLike) -> Any:
    """A YAML settings file: one-line errors for a missing, unreadable, non-UTF-8 or invalid file
    and for a key given twice."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TacleanerError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise TacleanerError(f"{path}: not UTF-8 text") from None
    except OSError as e:
        raise TacleanerError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise TacleanerError(f"{path}: invalid YAML{line} ({problem})") from None


MARKER = ".tacleaner"  # written into every folder tacleaner creates; --overwrite deletes only those


def is_ours(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder tacleaner created: it carries our marker, or (folders
    written before the marker existed) a completed run's metadata, a poisoning manifest or a
    synthetic world's description."""
    path = Path(path)
    if (path / MARKER).is_file():
        return True
    for name, keys in (("metadata.json", ("completed", "objective")), ("manifest.json", ("attack", "poisoned_indices")),
                       ("world.json", ("generator",))):
        try:
            obj = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(obj, dict) and all(k in obj for k in keys):
            return True
    return False


def mark(path: str | os.PathLike) -> None:
    """Mark ``path`` as a folder tacleaner created."""
    marker = Path(path) / MARKER
    if not marker.is_file():
        marker.write_text("This folder was created by tacleaner; `--overwrite` may replace it.\n", encoding="utf-8")


def check_inputs_outside(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """A command's inputs must not live inside the folder it writes: ``--overwrite`` would delete
    them (poisoning a world into its own folder, cleaning a checkpoint into its run folder)."""
    root = Path(out).resolve()
    for item in inputs:
        if item is None or str(item) in ("", "imagenet"):
            continue
        p = Path(item).resolve()
        if p == root or root in p.parents:
            raise TacleanerError(f"{out}: holds this command's input {item}; write to another --out")


def check_replaceable(path: Path, *, overwrite: bool, resume: bool = False, resumable: bool = True) -> bool:
    """For an output folder ``path``: False when it is absent or empty, True when it exists and
    ``overwrite`` may replace it; otherwise a one-line error. Only folders tacleaner created
    are ever replaced."""
    if path.exists() and not path.is_dir():
        raise TacleanerError(f"{path}: exists and is not a folder")
    if not (path.exists() and any(path.iterdir())):
        return False
    if overwrite:
        if not is_ours(path):
            raise TacleanerError(f"{path}: not a folder tacleaner created (no {MARKER} marker); --overwrite "
                                 "replaces only our own run folders: choose another --out or remove it yourself")
        return True
    if resume:
        if not is_ours(path):
            raise TacleanerError(f"{path}: not a folder tacleaner created (no {MARKER} marker); --resume continues "
                                 "only our own run folders: choose another --out")
        return False
    hint = "pass --resume to continue it or --overwrite to replace it" if resumable else \
        "pass --overwrite to replace it, or choose another --out"
    raise TacleanerError(f"{path}: folder exists; {hint}")


def prepare_run_dir(path: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
                    resumable: bool = True) -> Path:
    """Create the run folder ``path`` (marked as ours).

    An existing non-empty folder is an error unless ``resume`` (keep it and continue) or
    ``overwrite`` (empty it first; only a folder tacleaner created) is given.
    """
    path = Path(path)
    if check_replaceable(path, overwrite=overwrite, resume=resume, resumable=resumable) and overwrite:
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    mark(path)
    return path


@contextmanager
def staged_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``path`` and move it into place only when
    the block succeeds: a failure leaves ``path`` as it was (absent, or the old folder)."""
    path = Path(path)
    replace = check_replaceable(path, overwrite=overwrite, resumable=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        mark(tmp)
        yield tmp
        if replace:
            shutil.rmtree(path)
        elif path.exists():
            path.rmdir()  # empty
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
