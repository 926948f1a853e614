"""Whether two image sets share images: by path, and by content (the same bytes under another
name). A cleaning set that overlaps the poisoned set's clean part makes cleaning easier (a
reviewer of TA-Cleaner noted the paper's did); here it is checked and stated, never an accident.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import TacleanerError


def _digest(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise TacleanerError(f"{path}: cannot read ({e.strerror or e})") from None
    return h.hexdigest()


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1  # a missing file shares nothing; training skips and counts it


def shared_images(a: Sequence[Path], b: Sequence[Path], examples: int = 3) -> dict:
    """Images of ``a`` that are also in ``b``: the same path, or the same bytes. Only files
    whose size occurs in both sets are hashed (BLAKE2b); every other file is one ``stat``."""
    a_paths = {os.path.normpath(str(p)) for p in a}
    b_paths = {os.path.normpath(str(p)) for p in b}
    same_path = a_paths & b_paths
    a_rest, b_rest = a_paths - same_path, b_paths - same_path
    b_by_size: dict[int, list[str]] = {}
    for p in b_rest:
        b_by_size.setdefault(_size(p), []).append(p)
    b_by_size.pop(-1, None)
    b_hashes: dict[str, str] = {}
    hashed = 0
    same_content: list[tuple[str, str]] = []
    for p in sorted(a_rest):
        candidates = b_by_size.get(_size(p))
        if not candidates:
            continue
        for q in candidates:
            if q not in b_hashes:
                b_hashes[q] = _digest(q)
                hashed += 1
        digest = _digest(p)
        hashed += 1
        match = next((q for q in candidates if b_hashes[q] == digest), None)
        if match is not None:
            same_content.append((p, match))
    return {"a_images": len(a_paths), "b_images": len(b_paths), "same_path": len(same_path),
            "same_content": len(same_content), "files_hashed": hashed,
            "examples": sorted(same_path)[:examples] + [f"{p} = {q}" for p, q in same_content[:examples]]}
