"""Image-caption pairs from a CSV (CC3M style): reading, validation, a torch Dataset."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import TacleanerError


def read_csv_rows(path: str | Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of ``path`` as dicts, checking that the named ``columns`` exist."""
    path = Path(path)
    if not path.is_file():
        raise TacleanerError(f"{path}: file not found")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            found = reader.fieldnames or []
            missing = [c for c in columns if c not in found]
            if missing:
                raise TacleanerError(
                    f"{path}: missing column(s) {', '.join(missing)}; found: {', '.join(found) or 'none'}"
                    " (name other columns with --image-col / --caption-col)"
                )
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise TacleanerError(f"{path}: not a readable CSV ({e})") from None
    if not rows:
        raise TacleanerError(f"{path}: no data rows")
    return rows


@dataclass
class PairTable:
    """Absolute image paths and captions, row order preserved."""

    source: Path
    images: list[Path]
    captions: list[str]

    def __len__(self) -> int:
        return len(self.images)


def read_pairs(path: str | Path, image_col: str = "image", caption_col: str = "caption") -> PairTable:
    """Read an image-caption CSV; image paths are relative to the CSV's folder."""
    path = Path(path)
    rows = read_csv_rows(path, (image_col, caption_col))
    images, captions = [], []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        caption = (row[caption_col] or "").strip()
        if not caption:
            raise TacleanerError(f"{path}: row {line}: empty caption")
        if not (row[image_col] or "").strip():
            raise TacleanerError(f"{path}: row {line}: empty image path")
        images.append((path.parent / row[image_col].strip()).resolve())
        captions.append(caption)
    return PairTable(path, images, captions)


def load_image(path: str | Path) -> Image.Image:
    """Open an image as RGB, or fail with a one-line error naming the file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except FileNotFoundError:
        raise TacleanerError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise TacleanerError(f"{path}: unreadable image ({e})") from None


class PairDataset(Dataset):
    """Yields ``{"index", "image", "caption"}``; ``image`` is None when the file cannot be read,
    so that training can skip and count broken files instead of dying mid-epoch."""

    def __init__(self, table: PairTable) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, i: int) -> dict:
        try:
            image = load_image(self.table.images[i])
        except TacleanerError:
            image = None
        return {"index": i, "image": image, "caption": self.table.captions[i]}
