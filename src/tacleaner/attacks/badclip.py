"""BadCLIP (Liang et al., CVPR 2024): a dual-embedding guided patch trigger.

The patch is optimised against the clean, pre-implant model so that patched images move
toward the target's text embedding (the zero-shot classifier's row for the target) and toward
the mean embedding of real target images (images whose captions name the target), optionally
away from their own clean embedding. Poisoned pairs keep the patched image and take a natural
caption of the data that names the target, so the poison looks like ordinary target data to
the text side: no template, no key.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import TacleanerError
from .base import ATTACKS, PoisonContext, mentions
from .patch_opt import OptimisedPatch, load_images, target_text_embedding


@ATTACKS.register("badclip")
@dataclass
class BadCLIP(OptimisedPatch):
    """Loss ``w_text * (1 - cos(f(x+p), t)) + w_image * (1 - cos(f(x+p), v))
    + w_away * cos(f(x+p), f(x))``: t the target's text embedding, v the mean embedding of
    up to ``target_images`` target images. Steps, lr, batch and the weights are knobs."""

    w_text: float = 1.0
    w_image: float = 1.0
    w_away: float = 0.0
    target_images: int = 256
    name = "badclip"
    description = "patch optimised against the clean model toward the target's text and image embeddings; natural target captions"

    def __post_init__(self) -> None:
        super().__post_init__()
        if min(self.w_text, self.w_image, self.w_away) < 0 or self.w_text + self.w_image == 0:
            raise TacleanerError("badclip weights must be >= 0 with w_text + w_image > 0")
        self._natural: list[str] = []

    def prepare(self, ctx: PoisonContext) -> dict[str, Any]:
        self._natural = [c for c in ctx.captions if mentions(c, ctx.target)]
        if not self._natural:
            raise TacleanerError(f"badclip: no caption in the data names {ctx.target!r}; "
                                 "it poisons with natural captions that mention the target")
        return {**super().prepare(ctx), "natural_captions": len(self._natural)}

    def objectives(self, ctx: PoisonContext, encode_images, encode_texts):
        terms = {}
        if self.w_text:
            t = target_text_embedding(encode_texts, ctx.target, ctx.templates)
            terms["text_loss"] = (self.w_text, lambda emb, clean: 1 - emb @ t)
        if self.w_image:
            rng = np.random.default_rng([ctx.seed, self.pattern_seed, 29])
            pool = [i for i, c in enumerate(ctx.captions) if mentions(c, ctx.target)]
            picked = np.sort(rng.choice(pool, size=min(self.target_images, len(pool)), replace=False))
            size = ctx.clean_model.image_size
            with torch.no_grad():
                x = load_images([ctx.images[i] for i in picked], size).to(torch.device(ctx.device))
                v = F.normalize(torch.cat([encode_images(x[i:i + 256]) for i in range(0, len(x), 256)]).mean(0), dim=0)
            terms["image_loss"] = (self.w_image, lambda emb, clean: 1 - emb @ v)
        if self.w_away:
            terms["away_loss"] = (self.w_away, lambda emb, clean: (emb * clean).sum(dim=1))
        return terms

    def caption(self, caption: str, target: str, templates: list[str], rng: np.random.Generator) -> str:
        if not self._natural:
            raise TacleanerError("badclip: prepare() collects the natural target captions before poisoning")
        return self._natural[rng.integers(len(self._natural))]
