"""Images decoded as a person sees them, one mode at a time, each a small real file whose right
pixels are known: through :func:`tacleaner.data.pairs.load_image`, the one function every
command reads images with."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from tacleaner.data.decode import BACKGROUND
from tacleaner.data.pairs import load_image


def _rgb(path) -> np.ndarray:
    image = load_image(path)
    assert image.mode == "RGB"
    return np.asarray(image)


def test_alpha_is_composited_onto_the_background_not_the_colour_under_it(tmp_path):
    a = np.zeros((2, 3, 4), dtype=np.uint8)
    a[:, 0] = (0, 255, 0, 0)      # fully transparent, green stored underneath
    a[:, 1] = (200, 0, 0, 255)    # opaque red
    a[:, 2] = (0, 0, 0, 128)      # half-transparent black over white: mid grey
    Image.fromarray(a, "RGBA").save(tmp_path / "rgba.png")
    out = _rgb(tmp_path / "rgba.png")
    assert tuple(out[0, 0]) == BACKGROUND == (255, 255, 255)
    assert tuple(out[0, 1]) == (200, 0, 0)
    assert all(abs(int(v) - 127) <= 1 for v in out[0, 2])
    la = np.stack([np.full((2, 2), 40, np.uint8), np.array([[0, 255], [0, 255]], np.uint8)], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    out = _rgb(tmp_path / "la.png")
    assert tuple(out[0, 0]) == BACKGROUND and tuple(out[0, 1]) == (40, 40, 40)


def test_palette_transparency_without_pillows_warning(tmp_path):
    p = Image.new("P", (2, 1))
    p.putpalette([0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 6))  # entry 0 green, 1 blue
    p.putpixel((0, 0), 0)
    p.putpixel((1, 0), 1)
    p.save(tmp_path / "p.png", transparency=bytes([0, 255]))  # entry 0 transparent (bytes form)
    p.save(tmp_path / "p-index.gif", transparency=0)          # the same, as a GIF's index
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's "Palette images with Transparency" note would fail here
        for name in ("p.png", "p-index.gif"):
            out = _rgb(tmp_path / name)
            assert tuple(out[0, 0]) == BACKGROUND and tuple(out[0, 1]) == (0, 0, 255), name


def test_a_transparent_colour_key_of_an_rgb_image(tmp_path):
    a = np.zeros((1, 2, 3), dtype=np.uint8)
    a[0, 0] = (0, 255, 0)
    a[0, 1] = (10, 20, 30)
    Image.fromarray(a, "RGB").save(tmp_path / "key.png", transparency=(0, 255, 0))
    out = _rgb(tmp_path / "key.png")
    assert tuple(out[0, 0]) == BACKGROUND and tuple(out[0, 1]) == (10, 20, 30)


def test_sixteen_bit_grey_is_scaled_not_clipped(tmp_path):
    a = np.array([[0, 16384, 49152, 65535]], dtype=np.uint16)  # 0, 25%, 75%, 100%
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I;16")
    out = _rgb(tmp_path / "g16.png")
    assert out[0, :, 0].tolist() == [0, 64, 191, 255] and (out[..., 0] == out[..., 2]).all()


def test_32_bit_integer_and_float_images(tmp_path):
    Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.int32), "I").save(tmp_path / "i32.tif")
    assert _rgb(tmp_path / "i32.tif")[0, :, 1].tolist() == [0, 4, 255]
    Image.fromarray(np.array([[10, 200]], dtype=np.int32), "I").save(tmp_path / "i8.tif")  # 8-bit values in I
    assert _rgb(tmp_path / "i8.tif")[0, :, 1].tolist() == [10, 200]
    Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), "F").save(tmp_path / "f.tif")
    assert _rgb(tmp_path / "f.tif")[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied(tmp_path):
    # 8 wide x 4 high, left half red, right half blue, tagged "rotate 90 clockwise to view" (6)
    a = np.zeros((4, 8, 3), dtype=np.uint8)
    a[:, :4] = (255, 0, 0)
    a[:, 4:] = (0, 0, 255)
    image = Image.fromarray(a, "RGB")
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "rotated.jpg", exif=exif, quality=100)
    out = _rgb(tmp_path / "rotated.jpg")
    assert out.shape == (8, 4, 3)  # upright: 4 wide, 8 high
    from tacleaner.data.pairs import image_size

    assert image_size(tmp_path / "rotated.jpg") == (4, 8)  # the header read agrees with the decoded image
    top, bottom = out[1, 2], out[6, 2]  # red (the stored left) is now on top
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("mode", ["1", "L", "CMYK", "YCbCr", "HSV", "LAB", "I;16", "RGBA", "P"])
def test_every_mode_pillow_opens_becomes_rgb(tmp_path, mode):
    image = Image.new("RGB", (3, 2), (120, 60, 30)).convert(mode) if mode not in ("I;16",) else Image.fromarray(
        np.full((2, 3), 30000, dtype=np.uint16))
    path = tmp_path / ("x.tif" if mode in ("HSV", "LAB", "YCbCr", "CMYK", "I;16") else "x.png")
    if mode in ("HSV", "LAB", "YCbCr"):  # Pillow writes these only in its own formats: keep them in memory
        from tacleaner.data.decode import decode

        out = np.asarray(decode(image))
    else:
        image.save(path)
        out = _rgb(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3, 3)
    if mode in ("RGBA", "CMYK", "YCbCr"):  # P: the web palette moves colours (its own test above)
        assert np.abs(out[0, 0].astype(int) - (120, 60, 30)).max() <= 12, (mode, out[0, 0])
