"""Image-caption pairs from a CSV (CC3M style): reading, validation, a torch Dataset.

:func:`read_pairs` reads a CSV here and hands shard specs to :mod:`.shards`; both fill the
:class:`~.table.PairTable` of :mod:`.table`, which imports neither reader."""
from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import TacleanerError
from .columns import ColumnBuilder, PathColumn
from .decode import decode
from .shards import is_member, is_shard_spec, member_bytes, read_shards
from .table import SKIP_CAUSES, PairTable, describe_skipped

# The table and its skip causes live in .table (shared with the shard reader); they stay
# importable from here, where the readers' callers have always found them.
__all__ = ["CSV_ENCODING", "IMAGE_CACHE_BYTES", "SKIP_CAUSES", "MissingImage", "PairDataset", "PairTable",
           "UnreadableImage", "check_columns", "describe_skipped", "image_size", "image_source", "load_image",
           "read_csv_rows", "read_pairs"]


# "utf-8-sig" reads plain UTF-8 and also drops the byte-order mark that spreadsheet programs
# write at the start of a CSV (else the first column is named "\ufeffimage"); newline="" lets
# the csv module take CRLF line endings (Windows tools) as well as LF.
CSV_ENCODING = "utf-8-sig"


def check_columns(path: Path, found: list[str], columns: tuple[str, ...]) -> None:
    """Fail naming the file and the missing ``columns`` when the header ``found`` lacks any."""
    missing = [c for c in columns if c not in found]
    if missing:
        raise TacleanerError(
            f"{path}: missing column(s) {', '.join(missing)}; found: {', '.join(found) or 'none'}"
            " (name other columns with --image-col / --caption-col)"
        )


def read_csv_rows(path: str | Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of ``path`` as dicts, checking that the named ``columns`` exist."""
    path = Path(path)
    if not path.is_file():
        raise TacleanerError(f"{path}: file not found")
    try:
        with open(path, newline="", encoding=CSV_ENCODING) as f:
            reader = csv.DictReader(f)
            check_columns(path, reader.fieldnames or [], columns)
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise TacleanerError(f"{path}: not a readable CSV ({e})") from None
    if not rows:
        raise TacleanerError(f"{path}: no data rows")
    return rows


class MissingImage(TacleanerError):
    """An image file (or shard member) that is not there."""


class UnreadableImage(TacleanerError):
    """An image file that is there but does not decode."""


def read_pairs(path: str | Path, image_col: str = "image", caption_col: str = "caption") -> PairTable:
    """Read an image-caption CSV (image paths relative to the CSV's folder), or WebDataset
    shards (a ``.tar``, a folder of them or a ``{00000..00099}.tar`` pattern; see
    :mod:`tacleaner.data.shards`). Streams the file into two string columns, so a CC3M-size
    CSV costs about its text size in memory."""
    if is_shard_spec(path):
        return read_shards(path)
    path = Path(path)
    if not path.is_file():
        raise TacleanerError(f"{path}: file not found")
    images, captions = ColumnBuilder(), ColumnBuilder()
    n = 0
    try:
        with open(path, newline="", encoding=CSV_ENCODING) as f:
            reader = csv.reader(f)
            header = next(reader, None) or []
            check_columns(path, header, (image_col, caption_col))
            ii, ci = header.index(image_col), header.index(caption_col)
            for row in reader:
                if not row:
                    continue  # blank line (as csv.DictReader skips them)
                n += 1
                line = n + 1  # line 1 is the header
                caption = row[ci].strip() if ci < len(row) else ""
                image = row[ii].strip() if ii < len(row) else ""
                if not caption:
                    raise TacleanerError(f"{path}: row {line}: empty caption")
                if not image:
                    raise TacleanerError(f"{path}: row {line}: empty image path")
                images.append(image)
                captions.append(caption)
    except (UnicodeDecodeError, csv.Error) as e:
        raise TacleanerError(f"{path}: not a readable CSV ({e})") from None
    if n == 0:
        raise TacleanerError(f"{path}: no data rows")
    return PairTable(path, PathColumn(path.parent, images.finish()), captions.finish())


EXIF_ORIENTATION = 0x0112  # orientations 5-8 turn the image a quarter: width and height swap


def image_source(path: str | Path):
    """What ``PIL.Image.open`` takes for ``path``: the path, or the bytes of a shard member
    (``SHARD.tar#MEMBER``)."""
    return member_bytes(path) if is_member(path) else path


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) as :func:`load_image` gives the image (EXIF orientation applied), from the
    file's header, or a one-line error naming the file."""
    try:
        with Image.open(image_source(path)) as img:
            w, h = img.size
            return (h, w) if img.getexif().get(EXIF_ORIENTATION, 1) in (5, 6, 7, 8) else (w, h)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        load_image(path)  # raises its one-line error naming the file
        raise


def load_image(path: str | Path) -> Image.Image:
    """Open an image as 8-bit RGB as a person sees it (:func:`~.decode.decode`: EXIF orientation
    applied, transparency composited onto white, high bit depths scaled), or fail with a
    one-line error naming the file (:class:`MissingImage` or :class:`UnreadableImage`, which
    training counts apart)."""
    try:
        source = image_source(path)
    except TacleanerError as e:  # a shard or shard member that is not there
        raise MissingImage(str(e)) from None
    try:
        with Image.open(source) as img:
            return decode(img)
    except FileNotFoundError:
        raise MissingImage(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise UnreadableImage(f"{path}: unreadable image ({e})") from None


# Decoded images kept by a dataset that loads in the training process (no DataLoader workers):
# the second epoch on reads none of them from disk again. 512 MiB holds 170,000 images of the
# embedded worlds' 32 px (the demo's clean set takes 15 MB); images beyond it are decoded every
# epoch, as without a cache. Training keeps only images no larger than the model's input:
# decoding those is a large part of a small model's step, while a photo larger than the input
# costs a big model little to decode and a lot of memory to keep.
IMAGE_CACHE_BYTES = 512 * 2**20


class PairDataset(Dataset):
    """Yields ``{"index", "image", "caption"}``; ``image`` is None when the file cannot be read
    (``skip`` then names the cause, one of :data:`SKIP_CAUSES`), so that training can skip and
    count broken files instead of dying mid-epoch.

    ``cache_bytes`` > 0 keeps decoded images of at most ``cache_max_pixels`` pixels (first
    come, up to that many bytes of pixels) and hands out copies of them: the same pixels as
    decoding again, without the file read and decode. Training sets both when it loads in its
    own process (:data:`IMAGE_CACHE_BYTES`, the model's input area); with DataLoader workers,
    each of which would hold its own cache for one epoch, the cache stays off."""

    def __init__(self, table: PairTable, cache_bytes: int = 0, cache_max_pixels: int | None = None) -> None:
        self.table = table
        self.cache_bytes = cache_bytes
        self.cache_max_pixels = cache_max_pixels
        self._cache: dict[int, Image.Image] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> dict:
        image = self._cache.get(i)
        if image is not None:
            return {"index": i, "image": image.copy(), "caption": self.table.captions[i]}
        try:
            image = load_image(self.table.images[i])
        except MissingImage:
            return {"index": i, "image": None, "caption": self.table.captions[i], "skip": "missing_image"}
        except UnreadableImage:
            return {"index": i, "image": None, "caption": self.table.captions[i], "skip": "unreadable_image"}
        else:
            size = image.width * image.height * len(image.getbands())
            small = self.cache_max_pixels is None or image.width * image.height <= self.cache_max_pixels
            if small and self._cached_bytes + size <= self.cache_bytes:
                self._cache[i] = image.copy()
                self._cached_bytes += size
        return {"index": i, "image": image, "caption": self.table.captions[i]}
