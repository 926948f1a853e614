"""The frame a model sees: the image resized so its shorter side is ``size`` (bicubic,
antialiased) and centre-cropped to ``size`` x ``size``, the geometry of open_clip's evaluation
transform (and of the transform training uses here).

Triggers are applied in this frame, not at an image's stored resolution: a patch pasted on a
500x375 photo before the crop can fall outside what the model sees, and patterns drawn per image
size would differ from one image to the next. In the frame every triggered input holds the whole
trigger and every image of a run gets the same pattern (the CleanCLIP code likewise pastes its
patch on the image after resizing it to 224 px).
"""
from __future__ import annotations

from PIL import Image
from torchvision.transforms import CenterCrop, InterpolationMode, Resize

DEFAULT_FRAME = 224  # the input size of the field's models (RN50, ViT-B/32) when no model is named


def model_frame(image: Image.Image, size: int) -> Image.Image:
    """``image`` as a ``size`` x ``size`` RGB model input before normalisation. An image already
    at that size is returned unchanged, so square data at the model's size is not resampled."""
    image = image.convert("RGB")
    if image.size == (size, size):
        return image
    image = Resize(size, interpolation=InterpolationMode.BICUBIC, antialias=True)(image)
    return CenterCrop(size)(image)


def check_frame(size: int, where: str = "--frame") -> int:
    from ..errors import TacleanerError

    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise TacleanerError(f"{where}: the trigger frame is a side in pixels >= 8, got {size!r}")
    return size


def frame_for(frame: int | None, clean_model=None, attack: str = "the attack", sizes=()) -> int:
    """The frame of a poisoning run: ``frame`` when given, else the clean model's input size
    (a trigger optimised against that model lives in its input; another frame is refused),
    else the images' own side when ``sizes`` (their (width, height), read lazily) are all one
    square (data already framed, like the embedded world's 32 px images), else
    :data:`DEFAULT_FRAME`."""
    from ..errors import TacleanerError

    if clean_model is not None:
        if frame is not None and frame != clean_model.image_size:
            raise TacleanerError(f"--frame {frame}: {attack} optimises its trigger in the clean model's "
                                 f"{clean_model.image_size} px input; drop --frame or pass {clean_model.image_size}")
        return clean_model.image_size
    if frame is None:
        frame = square_side(sizes) or DEFAULT_FRAME
    return check_frame(frame)


def square_side(sizes) -> int | None:
    """The side shared by ``sizes`` when every one is the same square of at least 8 px, else
    None; stops at the first that differs."""
    first = None
    for size in sizes:
        if first is not None and size != first:
            return None
        first = size
    if first is None or first[0] != first[1] or first[0] < 8:
        return None
    return first[0]
