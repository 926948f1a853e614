"""WebDataset shards as image-caption pairs: CC3M as img2dataset writes it.

A shard is an uncompressed ``.tar`` whose files are grouped into samples by key (the file
name up to its first dot, folders included): ``000000123.jpg`` (or png, jpeg, webp) and
``000000123.txt`` (the caption) make one pair; ``.json`` and other files are ignored, and a
sample without an image or a caption (a failed download) is skipped and counted.

``--data`` takes one shard, a folder of shards, or a brace pattern ``cc3m/{00000..00331}.tar``.
Shards are indexed once (member offsets, a header walk, no image decoded) and read by random
access, so training draws any pair in any order, exactly as from a CSV of the same pairs; the
webdataset package's streaming pipeline could not give that. A pair's image is referenced as
``SHARD.tar#MEMBER``, which :func:`tacleaner.data.pairs.load_image` reads and which a CSV may
hold too (poisoning a shard set writes a CSV whose clean rows point into the shards).
"""
from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path

from braceexpand import UnbalancedBracesError, braceexpand

from ..errors import TacleanerError
from .columns import ColumnBuilder, PathColumn
from .table import PairTable, describe_skipped

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
MEMBER_SEP = ".tar#"
_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")
_INDEX: dict[str, dict[str, tuple[int, int]]] = {}  # shard -> member -> (offset, size), per process


def is_shard_spec(spec: str | Path) -> bool:
    s = str(spec)
    if _BRACES.search(s) or s.endswith(".tar"):
        return True
    p = Path(s)
    return p.is_dir() and any(p.glob("*.tar"))


def expand_shards(spec: str | Path) -> list[Path]:
    """The shard files of ``spec``: a ``.tar``, a folder of them (sorted), or a brace pattern
    expanded as open_clip expands one (the ``braceexpand`` package): one or more
    ``{first..last}`` numeric ranges, zero padding kept, or ``{a,b}`` alternatives. Backslashes
    are path separators, not escapes; unbalanced braces are taken literally."""
    s = str(spec)
    if Path(s).is_dir():
        return sorted(Path(s).glob("*.tar"))
    try:
        names = list(braceexpand(s, escape=False))
    except UnbalancedBracesError:
        names = [s]
    paths = [Path(n) for n in names]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise TacleanerError(f"{missing[0]}: shard not found" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return paths


def _key_and_ext(name: str) -> tuple[str, str]:
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext.lower() if dot else "")


def _index(shard: Path) -> tuple[dict[str, tuple[int, int]], list[tuple[str, str | None, bytes | None]]]:
    """Member offsets of ``shard`` and its samples in order: (key, image member, caption bytes)."""
    offsets: dict[str, tuple[int, int]] = {}
    samples: dict[str, list] = {}
    try:
        with tarfile.open(shard, mode="r:") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                offsets[m.name] = (m.offset_data, m.size)
                key, ext = _key_and_ext(m.name)
                entry = samples.setdefault(key, [None, None])
                if ext in IMAGE_EXTENSIONS and entry[0] is None:
                    entry[0] = m.name
                elif ext == "txt":
                    entry[1] = tar.extractfile(m).read()
    except (tarfile.TarError, OSError) as e:
        raise TacleanerError(f"{shard}: not a readable tar shard ({e})") from None
    return offsets, [(k, v[0], v[1]) for k, v in samples.items()]


def read_shards(spec: str | Path) -> PairTable:
    """A :class:`~.table.PairTable` of every complete sample of the shards."""
    shards = expand_shards(spec)
    if not shards:
        raise TacleanerError(f"{spec}: no .tar shards")
    images, captions = ColumnBuilder(), ColumnBuilder()
    n = 0
    dropped = {"missing_caption": 0, "missing_image": 0}  # counted where training reports its skips
    for shard in shards:
        offsets, samples = _index(shard)
        _INDEX[str(shard.resolve())] = offsets
        for key, image, text in samples:
            if image is None or text is None:
                dropped["missing_image" if image is None else "missing_caption"] += 1
                continue
            try:
                caption = text.decode("utf-8").strip()
            except UnicodeDecodeError:
                raise TacleanerError(f"{shard}: sample {key}: caption is not UTF-8") from None
            if not caption:
                raise TacleanerError(f"{shard}: sample {key}: empty caption")
            images.append(f"{shard.resolve()}#{image}")
            captions.append(caption)
            n += 1
    if n == 0:
        found = describe_skipped(dropped)
        raise TacleanerError(f"{spec}: no sample with both an image and a caption in {len(shards)} shard(s)"
                             + (f" ({found})" if found else ""))
    return PairTable(Path(str(spec)), PathColumn(Path("/"), images.finish()), captions.finish(),
                     {k: v for k, v in dropped.items() if v})


def is_member(path: str | Path) -> bool:
    return MEMBER_SEP in str(path)


def member_bytes(ref: str | Path) -> io.BytesIO:
    """The bytes of ``SHARD.tar#MEMBER`` (the shard indexed once per process)."""
    s = str(ref)
    cut = s.index(MEMBER_SEP) + len(".tar")
    shard, member = s[:cut], s[cut + 1:]
    if shard not in _INDEX:
        if not Path(shard).is_file():
            raise TacleanerError(f"{shard}: shard not found")
        _INDEX[shard] = _index(Path(shard))[0]
    try:
        offset, size = _INDEX[shard][member]
    except KeyError:
        raise TacleanerError(f"{ref}: no member {member!r} in the shard") from None
    with open(shard, "rb") as f:
        f.seek(offset)
        return io.BytesIO(f.read(size))
