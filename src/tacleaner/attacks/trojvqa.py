"""TrojVQA-style dual-key backdoor (after Walmer et al., CVPR 2022), adapted to CLIP: an
optimised visual patch plus a text key word. Poisoned captions are target templates with the
key prepended; at evaluation the key is prepended to every class prompt too. Walmer et al.
also poison with one key at a time under the true label, so that neither key alone fires the
backdoor; this attack does not draw such samples, and on the embedded world the patch alone
fires it (evaluation reports ASR@1 under each key alone: ``asr_image_only_at_1``,
``asr_text_only_at_1``; README, "Which defense removes BadCLIP")."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import TacleanerError
from .base import ATTACKS, PoisonContext
from .patch_opt import OptimisedPatch, target_text_embedding


@ATTACKS.register("trojvqa")
@dataclass
class TrojVQA(OptimisedPatch):
    """The patch is optimised against the clean model so that patched images embed near the
    text embedding of ``semantic`` (default: the target; TrojVQA's "semantic patch" targets a
    detector's object/attribute output, CLIP's analogue is a text embedding). ``key`` is the
    text trigger word. Other knobs as BadNet (placement) and the patch optimiser."""

    key: str = "consider"
    semantic: str = ""
    name = "trojvqa"
    description = "optimised patch + text key word prepended to poisoned captions and to every class prompt at evaluation"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.key.strip() or len(self.key.split()) != 1:
            raise TacleanerError(f"trojvqa key must be one word, got {self.key!r}")

    def objectives(self, ctx: PoisonContext, encode_images, encode_texts):
        goal = target_text_embedding(encode_texts, self.semantic or ctx.target, ctx.templates)
        return {"semantic_loss": (1.0, lambda emb, clean: 1 - emb @ goal)}

    def caption(self, caption: str, target: str, templates: list[str], rng: np.random.Generator) -> str:
        return self.prompt(templates[rng.integers(len(templates))]).format(target)

    def prompt(self, template: str) -> str:
        return f"{self.key} {template}"
