"""Atomic file writes and run folders that are never overwritten silently."""
from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

from .errors import TacleanerError


def write_failure(path: str | os.PathLike, e: BaseException) -> TacleanerError | None:
    """The one-line error for a failed write of ``path`` (a full disk, a quota, a file size
    limit, a read-only or forbidden place), or None when ``e`` is no write failure. The
    writers' own errors often name no file ("File too large") or no cause at all (torch's
    zip writer: "unexpected pos"); this names the file."""
    if isinstance(e, TacleanerError):
        return None
    if isinstance(e, OSError):
        other = e.filename and Path(str(e.filename)).name != Path(path).name and not str(e.filename).endswith(".tmp")
        if other:  # about another file (a folder that cannot be made): the system's message names it
            return None
        return TacleanerError(f"{path}: cannot write ({e.strerror or e})")  # not the hidden temporary name
    text = str(e)
    if type(e).__name__ == "SafetensorError" and "I/O error" in text:  # "...: I/O error: File too large (os error 27)"
        return TacleanerError(f"{path}: cannot write ({text.split('I/O error:', 1)[1].strip().split(' (os error')[0]})")
    if isinstance(e, RuntimeError) and any(k in text for k in ("inline_container", "PytorchStreamWriter",
                                                               "file write failed")):
        return TacleanerError(f"{path}: cannot write (the write did not complete: a full disk, a quota or a file "
                              "size limit?)")
    return None


@contextmanager
def writing(path: str | os.PathLike) -> Iterator[None]:
    """Turn a failed write of ``path`` into one line naming it (see :func:`write_failure`)."""
    try:
        yield
    except Exception as e:
        failure = write_failure(path, e)
        if failure is None:
            raise
        raise failure from None


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed over ``path``.

    A crash or an exception leaves the old file (or none) in place, never a half-written one;
    a failed write (disk full, read-only) is one line naming ``path``.
    """
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        mode = 0o666 & ~_umask()
    try:
        with writing(path):
            yield Path(tmp)
            # mkstemp makes the file 0600, and a writer may make it anew (safetensors' does):
            # outputs get the usual permissions, set once the writer is done
            os.chmod(tmp, mode)
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (``os.umask`` can only
    set it, and a moment at 0 would race other threads' file creations)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line in a single write; a write that fails (disk full) is cut back off, so
    the file never ends in half a line, and is one error line naming ``path``."""
    data = (line + "\n").encode("utf-8")
    with writing(path):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                written = os.write(fd, data)
                if written != len(data):  # a short write: the file system took only part of it
                    raise OSError(errno.ENOSPC, "the write did not complete (disk full or a file size limit)")
            except OSError:
                os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one JSON row (see :func:`append_line`): a crash or a full disk loses at most that row."""
    append_line(path, json.dumps(row))


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
        with writing(marker):
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


LOCK = ".tacleaner.lock"  # inside a run folder while a command writes it: the writer's process id


def _entries(path: Path) -> list[Path]:
    """A folder's contents, its lock file aside (a folder holding only a lock is empty)."""
    return [p for p in path.iterdir() if p.name != LOCK] if path.is_dir() else []


def check_replaceable(path: Path, *, overwrite: bool, resume: bool = False, resumable: bool = True) -> bool:
    """For an output folder ``path``: False when it is absent or empty, True when it exists and
    ``overwrite`` may replace it; otherwise a one-line error. Only folders tacleaner created
    are ever replaced."""
    if path.exists() and not path.is_dir():
        raise TacleanerError(f"{path}: exists and is not a folder")
    if not _entries(path):
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


# -- one writer per run folder -------------------------------------------------------------
# lock file -> [fd, times taken, owning pid]; a process may take a lock it holds again (an
# experiment's stage in the experiment's own process), another process may not.
_HELD: dict[str, list[int]] = {}


def _holder(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def acquire_lock(lock: Path, folder: Path) -> None:
    """Take the advisory lock ``lock`` (``fcntl.flock``) for writing ``folder``, or fail with one
    line naming the folder and the process that holds it. The kernel drops a lock when its
    process dies, however it dies; a lock file still naming such a process is taken over with
    a warning. Advisory: it keeps tacleaner commands apart, not other programs."""
    key = str(lock.absolute())
    if key in _HELD and _HELD[key][2] == os.getpid():
        _HELD[key][1] += 1
        return
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise TacleanerError(f"{folder}: cannot write there ({e.strerror or e})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _holder(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise TacleanerError(f"{folder}: cannot lock {lock.name} ({e.strerror or e})") from None
            raise TacleanerError(f"{folder}: in use by another tacleaner process (pid {holder or 'unknown'}); "
                                 "wait for it to finish or stop it, or write to another --out") from None
        try:  # the holder we waited on may have removed the file between our open and our lock
            same = os.fstat(fd).st_ino == os.stat(lock).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    previous = _holder(fd)
    if previous is not None and previous != os.getpid():
        warnings.warn(f"{folder}: took over the lock of process {previous}, which ended without releasing it "
                      "(killed or crashed)")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    _HELD[key] = [fd, 1, os.getpid()]


def release_lock(lock: Path) -> None:
    """Give back a lock taken with :func:`acquire_lock` (the file is removed while still held,
    so that a waiting process sees a fresh one)."""
    key = str(lock.absolute())
    held = _HELD.get(key)
    if held is None or held[2] != os.getpid():
        return
    held[1] -= 1
    if held[1] > 0:
        return
    del _HELD[key]
    try:
        os.unlink(key)
    except OSError:
        pass  # the folder went away (a failed run removed it): the lock goes with it
    os.close(held[0])


def release_all_locks() -> None:
    """Every lock this process holds (at the end of a command, and at exit)."""
    for key, held in list(_HELD.items()):
        if held[2] == os.getpid():
            held[1] = 1
            release_lock(Path(key))


def _forget_locks_in_child() -> None:
    """A forked child (a DataLoader worker) closes its copies of the lock files: the lock stays
    its parent's, and ends with the parent even while the child is still shutting down."""
    for held in _HELD.values():
        try:
            os.close(held[0])
        except OSError:
            pass
    _HELD.clear()


atexit.register(release_all_locks)
os.register_at_fork(after_in_child=_forget_locks_in_child)


def prepare_run_dir(path: str | os.PathLike, *, resume: bool = False, overwrite: bool = False,
                    resumable: bool = True) -> Path:
    """Create the run folder ``path`` (marked as ours) and hold its lock until
    :func:`release_run_dir` (or the end of the process).

    An existing non-empty folder is an error unless ``resume`` (keep it and continue) or
    ``overwrite`` (empty it first; only a folder tacleaner created) is given. A folder another
    tacleaner process is writing is an error naming that process, whatever the options: two
    writers (a re-queued job resuming the folder its first copy still writes) would interleave
    their logs and checkpoints.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise TacleanerError(f"{path}: exists and is not a folder")
    if _entries(path) and not is_ours(path):  # refused as is: no lock file is left in a user's folder
        check_replaceable(path, overwrite=overwrite, resume=resume, resumable=resumable)
    path.mkdir(parents=True, exist_ok=True)
    acquire_lock(path / LOCK, path)
    try:
        if check_replaceable(path, overwrite=overwrite, resume=resume, resumable=resumable) and overwrite:
            for entry in _entries(path):  # everything but the lock we hold
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        mark(path)
    except BaseException:
        release_lock(path / LOCK)
        raise
    return path


def release_run_dir(path: str | os.PathLike) -> None:
    """Give back the lock :func:`prepare_run_dir` took on ``path``."""
    release_lock(Path(path) / LOCK)


@contextmanager
def staged_dir(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Build a folder under a temporary name beside ``path`` and move it into place only when
    the block succeeds: a failure leaves ``path`` as it was (absent, or the old folder).

    The folder does not exist while it is built, so its lock is a file beside it
    (``.<name>.lock``); staging folders a killed writer left are removed under that lock."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise TacleanerError(f"{path}: exists and is not a folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    acquire_lock(lock, path)
    try:
        for stale in path.parent.glob(f".{path.name}.partial-*"):
            warnings.warn(f"{stale}: removed the unfinished output of an earlier, interrupted command")
            shutil.rmtree(stale, ignore_errors=True)
        replace = check_replaceable(path, overwrite=overwrite, resumable=False)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
        try:
            mark(tmp)
            yield tmp
            if replace:
                shutil.rmtree(path)
            elif path.exists():
                path.rmdir()  # empty
            tmp.rename(path)
        except TacleanerError as e:  # name the file where it was going, not its staging folder
            shutil.rmtree(tmp, ignore_errors=True)
            raise TacleanerError(str(e).replace(str(tmp), str(path))) from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        release_lock(lock)
