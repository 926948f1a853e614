"""The image-caption table every reader fills (the CSV reader in :mod:`.pairs`, the shard
reader in :mod:`.shards`), and the names of the causes for which a sample is skipped. It
depends on neither reader, so they both use it without importing each other."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Why a sample is skipped: counted under these names in log.txt, metrics.jsonl (``skipped_<cause>``),
# metadata.json and evaluation's JSON. Samples without a caption or an image are dropped when
# shards are read; images that are missing or do not decode are skipped when loaded (each epoch).
SKIP_CAUSES = ("missing_caption", "missing_image", "unreadable_image")


def describe_skipped(counts: dict[str, int]) -> str:
    """``2 missing caption, 1 unreadable image`` (causes with a count only)."""
    return ", ".join(f"{n} {cause.replace('_', ' ')}" for cause, n in counts.items() if n)


@dataclass
class PairTable:
    """Image paths (absolute) and captions, row order preserved. :func:`~.pairs.read_pairs`
    stores both as compact columns (:mod:`tacleaner.data.columns`: no Python object per row);
    any sequences work. ``dropped``: samples of the source left out when it was read, by cause
    (shards with a caption but no image, or an image but no caption)."""

    source: Path
    images: Sequence[Path]
    captions: Sequence[str]
    dropped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)
