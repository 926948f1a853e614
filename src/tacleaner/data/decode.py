"""An opened image as a person sees it, in 8-bit RGB: the one decoding step every image of
every command goes through (:func:`tacleaner.data.pairs.load_image` calls it).

- **Orientation.** A JPEG's EXIF orientation tag is applied (``ImageOps.exif_transpose``), so a
  photo taken sideways is used upright, as viewers show it.
- **Transparency** (an alpha channel, a palette's transparent entries, or a transparent colour
  key) is composited onto :data:`BACKGROUND`, white: the colour stored under a transparent pixel
  is never shown. Partly transparent pixels are blended with it.
- **High bit depth.** 16-bit greyscale (``I;16`` and its byte orders) is scaled to 8 bits
  (65535 -> 255), not clipped; 32-bit integer images (``I``) are scaled the same way when their
  values exceed 8 bits; floating-point images (``F``) are read as [0, 1] when they fit in it,
  else as 0-255.
- **Every other mode** Pillow opens (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``,
  ...) becomes RGB by Pillow's own conversion.

img2dataset and open_clip convert with ``convert("RGB")`` alone, which shows the colour under
transparent pixels and clips 16-bit grey to white; the difference is tested per mode
(tests/test_decode.py).
"""
from __future__ import annotations

import warnings

import numpy as np
from PIL import Image, ImageOps

BACKGROUND = (255, 255, 255)  # what transparent pixels become
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


def decode(image: Image.Image) -> Image.Image:
    """``image`` upright, composited and scaled to 8-bit RGB (see the module docstring)."""
    with warnings.catch_warnings():  # Pillow's own notes (EXIF quirks) name no file: the result is checked here
        warnings.simplefilter("ignore")
        ImageOps.exif_transpose(image, in_place=True)
    image = _eight_bit(image)
    if _has_transparency(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # a loaded copy even when already RGB: the file may close after this


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _eight_bit(image: Image.Image) -> Image.Image:
    """A high-bit-depth single-channel image as 8-bit ``L`` (keeping a transparent colour key,
    scaled); any other image unchanged."""
    if image.mode not in (*SIXTEEN_BIT, "I", "F"):
        return image
    values = np.asarray(image).astype(np.float64)
    if image.mode in SIXTEEN_BIT:
        scale = 65535.0
    elif image.mode == "I":
        scale = 65535.0 if values.size and values.max() > 255 else 255.0
    else:  # F
        scale = 1.0 if values.size and np.nanmax(values) <= 1.0 else 255.0
    out = Image.fromarray(np.clip(np.rint(np.nan_to_num(values) * (255.0 / scale)), 0, 255).astype(np.uint8), "L")
    key = image.info.get("transparency")
    if isinstance(key, (int, float)):  # a transparent grey level, in the image's own scale
        out.info["transparency"] = int(round(key * 255.0 / scale))
    return out
