"""Compact string columns: millions of captions or paths without one Python object per row.

A :class:`StringColumn` keeps every string UTF-8 encoded in one numpy byte buffer with an
offsets array (8 bytes per row), and decodes a row when it is read. A 1,000,000-row CC3M CSV
then costs its text size plus 8 MB, against about 200 bytes of object overhead per string (and
a ``Path`` per image) as Python lists. :class:`PathColumn` is a string column of paths relative
to a base folder.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np


class StringColumn(Sequence):
    """An immutable sequence of strings stored as one UTF-8 buffer plus offsets."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray) -> None:
        self._data, self._offsets = data, offsets

    @classmethod
    def build(cls, strings: Iterable[str]) -> StringColumn:
        builder = ColumnBuilder()
        for s in strings:
            builder.append(s)
        return builder.finish()

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"row {i} out of range ({n} rows)")
        start, end = self._offsets[i], self._offsets[i + 1]
        return self._data[start:end].tobytes().decode("utf-8")

    def __iter__(self) -> Iterator[str]:
        data, offsets = self._data, self._offsets
        for i in range(len(self)):
            yield data[offsets[i]:offsets[i + 1]].tobytes().decode("utf-8")

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and len(self) == len(other) and all(a == b for a, b in zip(self, other))

    def __repr__(self) -> str:
        return f"StringColumn({len(self)} rows, {self.nbytes} bytes)"

    @property
    def nbytes(self) -> int:
        return int(self._data.nbytes + self._offsets.nbytes)


class ColumnBuilder:
    """Appends strings into a growing byte buffer (amortised doubling, so about twice the text
    size at peak) and hands over a trimmed :class:`StringColumn`."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._ends: list[int] = []  # Python ints, converted once at the end
        self._ends_np: list[np.ndarray] = []

    def append(self, s: str) -> None:
        self._buf += s.encode("utf-8")
        self._ends.append(len(self._buf))
        if len(self._ends) >= 65536:  # keep the per-row Python ints bounded
            self._ends_np.append(np.array(self._ends, dtype=np.int64))
            self._ends = []

    def finish(self) -> StringColumn:
        ends = self._ends_np + [np.array(self._ends, dtype=np.int64)]
        offsets = np.concatenate([np.zeros(1, dtype=np.int64), *ends])
        data = np.frombuffer(bytes(self._buf), dtype=np.uint8)
        self._buf = bytearray()
        return StringColumn(data, offsets)


class PathColumn(Sequence):
    """Paths relative to ``base``, read back as absolute, normalised :class:`Path` objects
    (``base`` is resolved once; the rows are joined and normalised, not resolved per row)."""

    def __init__(self, base: Path, rows: StringColumn) -> None:
        self.base, self.rows = Path(base).resolve(), rows
        self._base = str(self.base)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return Path(os.path.normpath(os.path.join(self._base, self.rows[i])))

    def __iter__(self) -> Iterator[Path]:
        for r in self.rows:
            yield Path(os.path.normpath(os.path.join(self._base, r)))

    def __repr__(self) -> str:
        return f"PathColumn({len(self)} rows under {self.base})"
