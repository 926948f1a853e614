"""Building open_clip models by name, with the tiny CPU configs that ship in this package.

A model travels as a :class:`ClipBundle`: the network, its tokenizer and its evaluation
preprocessing, plus the name and config needed to rebuild it from a checkpoint alone.
"""
from __future__ import annotations

import functools
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

from ..errors import TacleanerError

CONFIG_DIR = Path(__file__).parent / "configs"
# Register the shipped tiny configs with open_clip once, so that open_clip's own factory,
# tokenizer lookup and list_models() all know them.
open_clip.add_model_config(CONFIG_DIR)


@dataclass
class ClipBundle:
    """A CLIP model with everything needed to feed it and to rebuild it."""

    model: torch.nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    preprocess: Callable  # PIL image -> normalised tensor at the model's resolution
    model_name: str
    model_cfg: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)  # provenance: pretrained tag, file, step
    mean: tuple[float, ...] = OPENAI_DATASET_MEAN
    std: tuple[float, ...] = OPENAI_DATASET_STD

    @property
    def image_size(self) -> int:
        return input_size(self.model_cfg)

    def fit(self, image: Image.Image) -> Image.Image:
        """``preprocess``'s geometry alone (resize, centre crop, RGB): a PIL image at the model's
        resolution, on which image augmentations then work at the size the model sees, and
        which :meth:`images_to_tensor` turns into the same numbers ``preprocess`` would give."""
        s = self.image_size
        if image.size == (s, s) and image.mode == "RGB":
            return image
        steps = list(getattr(self.preprocess, "transforms", ()))
        cut = next((i for i, t in enumerate(steps) if "ToTensor" in type(t).__name__), None)
        if cut is None:  # a preprocess of another shape: leave the image to it
            return image
        for t in steps[:cut]:
            image = t(image)
        return image

    def images_to_tensor(self, images: list[Image.Image]) -> torch.Tensor:
        """``preprocess`` over a batch, with a fast path for RGB images already at the model's
        resolution: there resize and crop are the identity, so only scaling and normalising
        remain, done once for the whole batch (the same numbers as the per-image path)."""
        s = self.image_size
        if not all(im.size == (s, s) and im.mode == "RGB" for im in images):
            return torch.stack([self.preprocess(im) for im in images])
        pixels = np.frombuffer(b"".join(im.tobytes() for im in images), np.uint8).reshape(len(images), s, s, 3)
        out = np.empty(pixels.shape, np.float32)
        for c, table in enumerate(self._normalised_levels):  # one lookup per value, no float passes
            np.take(table, pixels[..., c], out=out[..., c])
        return torch.from_numpy(out).permute(0, 3, 1, 2)  # NCHW view of NHWC memory, as before

    @functools.cached_property
    def _normalised_levels(self) -> np.ndarray:
        """Each 8-bit level of each channel as preprocess turns it into a float: (v / 255 - mean)
        / std, by the same float32 operations, so a table lookup gives the same bits."""
        levels = torch.arange(256, dtype=torch.float32).expand(3, 256).clone().div_(255)
        return levels.sub_(torch.tensor(self.mean).view(3, 1)).div_(torch.tensor(self.std).view(3, 1)).numpy()


def input_size(model_cfg: dict[str, Any]) -> int:
    """The side of a model's square image input, from its open_clip config."""
    size = model_cfg["vision_cfg"].get("image_size", 224)
    return size if isinstance(size, int) else size[0]


def list_models() -> list[str]:
    """All model names open_clip knows, the shipped ``tacleaner-*`` tiny configs included."""
    return open_clip.list_models()


def shipped_models() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def model_config(name: str) -> dict[str, Any]:
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        shipped = ", ".join(shipped_models())
        raise TacleanerError(
            f"unknown model {name!r}; shipped tiny models: {shipped}; "
            f"`tacleaner models` lists all {len(list_models())} open_clip names"
        )
    return cfg


def register_config(name: str, cfg: dict[str, Any]) -> None:
    """Make a config carried inside a checkpoint known to open_clip under ``name``."""
    known = open_clip.get_model_config(name)
    if known == cfg:
        return
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{name}.json"
        path.write_text(json.dumps(cfg))
        open_clip.add_model_config(path)


def create_model(name: str, pretrained: str | None = None, device: str | torch.device = "cpu") -> ClipBundle:
    """Build ``name`` with random weights, or with an open_clip pretrained tag (needs network).

    For weights from a file use :func:`tacleaner.models.load_model`.
    """
    cfg = model_config(name)
    try:
        model = open_clip.create_model(name, pretrained=pretrained, device=device, weights_only=True)
    except RuntimeError as e:  # open_clip reports unknown tags and download failures this way
        raise TacleanerError(f"could not build {name} with pretrained={pretrained!r}: {e}") from None
    return bundle_for(model, name, cfg, {"pretrained": pretrained})


def bundle_for(model: torch.nn.Module, name: str, cfg: dict[str, Any], meta: dict[str, Any]) -> ClipBundle:
    pp = model.visual.preprocess_cfg if hasattr(model.visual, "preprocess_cfg") else {}
    size = cfg["vision_cfg"].get("image_size", 224)
    mean, std = tuple(pp.get("mean") or OPENAI_DATASET_MEAN), tuple(pp.get("std") or OPENAI_DATASET_STD)
    preprocess = open_clip.image_transform(size, is_train=False, mean=mean, std=std)
    tokenizer = open_clip.get_tokenizer(name)
    return ClipBundle(model=model, tokenizer=tokenizer, preprocess=preprocess, model_name=name,
                      model_cfg=cfg, meta=meta, mean=mean, std=std)
