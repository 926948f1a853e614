"""Pictures of a trigger: clean images, their triggered versions and the amplified difference,
side by side, for ``tacleaner show-trigger``."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..data.pairs import PairTable, load_image, read_pairs
from ..errors import TacleanerError
from .base import Attack
from .frame import model_frame

MIN_CELL = 96  # 32 px synthetic images get 3x, big enough to see a few-pixel patch
MAX_CELL = 320  # keeps a row of full-size photos a sensible width
GUTTER = 4
BACKGROUND = (255, 255, 255)
TEXT = (0, 0, 0)


def read_table(data: str | Path, image_col: str = "image", caption_col: str = "caption") -> PairTable:
    """An image-caption CSV, or a zero-shot CSV (image, label) with the labels as captions."""
    try:
        return read_pairs(data, image_col, caption_col)
    except TacleanerError as first:
        if caption_col != "caption":
            raise
        try:
            return read_pairs(data, image_col, "label")
        except TacleanerError:
            raise first from None


def sample_indices(total: int, num: int, seed: int) -> list[int]:
    """``num`` row indices out of ``total`` (all of them when fewer), sorted, fixed by ``seed``."""
    if num < 1:
        raise TacleanerError(f"--num must be >= 1, got {num}")
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(total, size=min(num, total), replace=False))


def triggered_samples(attack: Attack, images: list[Path], indices: list[int],
                      frame: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The images at ``indices`` in the model's ``frame`` and their triggered versions. The
    trigger sees each image's row index, as when poisoning, so position-dependent triggers
    match the run."""
    clean, triggered = [], []
    for i in indices:
        image = np.asarray(model_frame(load_image(images[i]), frame))
        out = attack.trigger(image, i)
        if out.dtype != np.uint8 or out.shape != image.shape:
            raise TacleanerError(f"attack {attack.name}: trigger returned {out.dtype} {out.shape} "
                                 f"for a uint8 {image.shape} image")
        clean.append(image)
        triggered.append(out)
    return clean, triggered


def cell_size(images: list[np.ndarray]) -> int:
    """The side of a grid cell: the largest image side, scaled up by a whole factor to at least
    :data:`MIN_CELL` (so NEAREST keeps every pixel square), at most :data:`MAX_CELL`."""
    side = max(max(a.shape[:2]) for a in images)
    if side < MIN_CELL:
        side *= math.ceil(MIN_CELL / side)
    return min(side, MAX_CELL)


def _fit(array: np.ndarray, cell: int) -> Image.Image:
    """``array`` scaled to fit a ``cell`` x ``cell`` square, centred, aspect ratio kept."""
    image = Image.fromarray(array)
    scale = cell / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # NEAREST shows pixels as they are when enlarging; BOX averages instead of aliasing when shrinking.
    image = image.resize(size, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BOX)
    square = Image.new("RGB", (cell, cell), BACKGROUND)
    square.paste(image, ((cell - size[0]) // 2, (cell - size[1]) // 2))
    return square


def diff_scale(clean: list[np.ndarray], triggered: list[np.ndarray], amplify: float | None) -> float:
    """``amplify``, or when None the factor that maps the largest difference to 255."""
    if amplify is not None:
        return float(amplify)
    largest = max(int(np.max(np.abs(t.astype(np.int16) - c))) for c, t in zip(clean, triggered))
    return 255 / largest if largest else 1.0


def trigger_grid(clean: list[np.ndarray], triggered: list[np.ndarray], amplify: float | None) -> Image.Image:
    """Three labelled rows: the clean images, the triggered ones, and ``|t - c| * amplify``
    (clipped to 255). Every image is scaled to a common square cell; the label column is on
    the left, so cell ``(row, col)`` has its top-left corner at
    ``(width - (n - col) * (cell + GUTTER), GUTTER + row * (cell + GUTTER))``."""
    if not clean or len(clean) != len(triggered):
        raise ValueError(f"need matching non-empty image lists, got {len(clean)} and {len(triggered)}")
    for c, t in zip(clean, triggered):
        if c.shape != t.shape:
            raise ValueError(f"clean and triggered images differ in shape: {c.shape} vs {t.shape}")
    scale = diff_scale(clean, triggered, amplify)
    diffs = [np.clip(np.abs(t.astype(np.float64) - c) * scale, 0, 255).round().astype(np.uint8)
             for c, t in zip(clean, triggered)]
    rows = [("clean", clean), ("triggered", triggered), (f"|diff| x {scale:.3g}", diffs)]

    cell, n = cell_size(clean), len(clean)
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = max(measure.textbbox((0, 0), label, font=font)[2] for label, _ in rows)
    left = 2 * GUTTER + label_width
    grid = Image.new("RGB", (left + n * (cell + GUTTER), GUTTER + len(rows) * (cell + GUTTER)), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for r, (label, arrays) in enumerate(rows):
        top = GUTTER + r * (cell + GUTTER)
        box = draw.textbbox((0, 0), label, font=font)  # no anchor=: bitmap fonts lack it before Pillow 10
        draw.text((GUTTER, top + (cell - box[3] - box[1]) // 2), label, fill=TEXT, font=font)
        for c, array in enumerate(arrays):
            grid.paste(_fit(array, cell), (left + c * (cell + GUTTER), top))
    return grid
