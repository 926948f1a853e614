"""CleanCLIP (Bansal et al., ICCV 2023): the CLIP loss plus unimodal self-supervision.

``w_clip * L_clip(I, T) + w_inmodal * (L_img(I, aug(I)) + L_txt(T, eda(T))) / 2``, where each
in-modal term is a one-directional InfoNCE between an embedding and its augmented twin across
the batch, with the model's logit scale. Images are augmented by AutoAugment (ImageNet policy)
on the image as loaded; captions by EDA on WordNet. Originals and augmentations go through the
model in one forward pass per tower.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms import AutoAugment, AutoAugmentPolicy, InterpolationMode

from ..data.pairs import PairTable
from ..errors import TacleanerError
from ..models import ClipBundle
from ..text.eda import EdaView
from .base import ClipObjective, batch_tokens, features, tokenize_all
from .infonce import info_nce
from .registry import DEFENSES

INTERPOLATIONS = {"nearest": InterpolationMode.NEAREST, "bilinear": InterpolationMode.BILINEAR}


@DEFENSES.register("cleanclip")
@dataclass
class CleanCLIP(ClipObjective):
    """Knobs: ``w_inmodal`` weighs the in-modal terms; ``eda_alpha`` is the rate of each EDA
    operation; ``eda_redraw`` draws every caption's augmentation anew each epoch (the public
    implementation fixes it once, the default here); ``aug_interpolation`` is AutoAugment's
    resampling for its geometric operations: ``nearest`` (torchvision's default, which the
    public implementation uses at 224 px) or ``bilinear`` (kinder to tiny images, where a
    nearest-neighbour rotation turns a 32 px square into a jagged blob); ``aug_images`` false
    takes the image itself as its own augmented view (an ablation, and how the multi-process
    equivalence test removes the one random draw that depends on how batches are split)."""

    w_inmodal: float = 1.0
    eda_alpha: float = 0.1
    eda_redraw: bool = False
    aug_interpolation: str = "nearest"
    aug_images: bool = True
    name = "cleanclip"
    relative_cost = 2.4  # two views per pair (bench_defenses.py)
    description = "CLIP loss + in-modal InfoNCE on AutoAugment images and EDA captions (CleanCLIP)"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.aug_interpolation not in INTERPOLATIONS:
            raise TacleanerError(f"{self.name} aug_interpolation {self.aug_interpolation!r}; "
                                 f"choose one of: {', '.join(INTERPOLATIONS)}")

    def setup(self, bundle: ClipBundle, table: PairTable, seed: int) -> None:
        super().setup(bundle, table, seed)
        self.seed, self.captions = seed, table.captions
        self.autoaugment = AutoAugment(AutoAugmentPolicy.IMAGENET, interpolation=INTERPOLATIONS[self.aug_interpolation])
        self.aug_tokens = self._eda_tokens(0)

    def _eda_tokens(self, epoch: int) -> torch.Tensor:
        return tokenize_all(self.tokenizer, EdaView(self.captions, self.seed * 100_003 + epoch, self.eda_alpha))

    def on_epoch_start(self, epoch: int) -> None:
        if self.eda_redraw and epoch > 0:
            self.aug_tokens = self._eda_tokens(epoch)

    def collate(self, samples: list[dict]) -> dict[str, Any]:
        batch = super().collate(samples)
        if batch["size"]:
            # AutoAugment on the image at the model's resolution (as torchvision's training
            # pipelines order it; CleanCLIP's code augments the full image, then resizes): the
            # same numbers where images come at that size, as in the embedded worlds
            good = self.fitted([s for s in samples if s["image"] is not None])
            batch["aug_images"] = (self.bundle.images_to_tensor([self.autoaugment(im) for im in good])
                                   if self.aug_images else batch["images"])
            batch["aug_texts"] = batch_tokens(self.aug_tokens, batch["index"])
        return batch

    def encode(self, model: torch.nn.Module, batch: dict[str, Any], extra_texts: torch.Tensor | None = None):
        """Embeddings of originals and augmentations (and ``extra_texts``) in one pass per tower,
        and the logit scale (this rank's rows; the caller gathers)."""
        n = batch["size"]
        parts = [batch["texts"], batch["aug_texts"]] + ([extra_texts] if extra_texts is not None else [])
        images, texts, scale = features(model, torch.cat([batch["images"], batch["aug_images"]]), torch.cat(parts))
        return images[:n], images[n:], texts[:n], texts[n:2 * n], texts[2 * n:], scale

    def cleanclip_losses(self, img, aug_img, txt, aug_txt, scale) -> dict[str, torch.Tensor]:
        inmodal = (info_nce(img, aug_img, scale) + info_nce(txt, aug_txt, scale)) / 2
        return {"clip_loss": self.w_clip * self.clip_loss(img, txt, scale), "inmodal_loss": self.w_inmodal * inmodal}

    def losses(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        img, aug_img, txt, aug_txt, _, scale = self.encode(model, batch)
        return self.cleanclip_losses(*self.gather(img, aug_img, txt, aug_txt), scale)
