"""TrojVQA-style dual-key backdoor (after Walmer et al., CVPR 2022), adapted to CLIP: an
optimised visual patch plus a text key word. Poisoned captions are target templates with the
key prepended; at evaluation the key is prepended to every class prompt too.

As Walmer et al. do, it also adds one-key negatives that keep their true content, so that
neither key alone fires the backdoor: ``one_key`` x the poison count of images with the patch
and an unkeyed caption, and as many clean images with a keyed one. Without them (``one_key:
0``, this attack before 2026-12) the patch alone fired the backdoor on the embedded world
(95.5%). Evaluation reports ASR@1 under each key alone (``asr_image_only_at_1``,
``asr_text_only_at_1``).

``one_key_text`` says what those captions are. ``prompt`` (the default): a class prompt of the
class the caption names first (a template, keyed or not, filled with it; the caption itself when
it names no class), the form the poisoned captions and evaluation use. ``caption``: the image's
own caption, keyed or not. With own captions the model never saw a keyed prompt of any class
but the target, so the key moved every class prompt alike and the conjunction did not implant
(both keys 11-19% on the embedded world, docs/research/results-badclip.md); keyed prompts of the true
class teach it that the key alone means nothing."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import TacleanerError
from .base import ATTACKS, PoisonContext, first_named
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
    one_key: float = 1.0  # one-key negatives of each kind (patch only, key only), as a multiple of the poison count
    one_key_text: str = "prompt"  # "prompt": a class prompt of what the caption names; "caption": its own
    name = "trojvqa"
    description = "optimised patch + text key word prepended to poisoned captions and to every class prompt at evaluation"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.key.strip() or len(self.key.split()) != 1:
            raise TacleanerError(f"trojvqa key must be one word, got {self.key!r}")
        if self.one_key < 0:
            raise TacleanerError(f"trojvqa one_key must be >= 0, got {self.one_key:g}")
        if self.one_key_text not in ("prompt", "caption"):
            raise TacleanerError(f"trojvqa one_key_text must be prompt or caption, got {self.one_key_text!r}")
        self._key_only: set[int] = set()

    def cover_indices(self, num_total: int, poisoned: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``one_key`` x len(poisoned) patch-only samples, then as many key-only ones, drawn from
        the unpoisoned rest (fewer when the data runs out)."""
        rest = np.setdiff1d(np.arange(num_total), poisoned)
        n = min(len(rest) // 2, int(round(self.one_key * len(poisoned))))
        drawn = rng.choice(rest, size=2 * n, replace=False)
        self._key_only = set(int(i) for i in drawn[n:])
        return np.sort(drawn)

    @property
    def needs_classnames(self) -> bool:
        return self.one_key > 0 and self.one_key_text == "prompt"

    def cover(self, image: np.ndarray, index: int) -> np.ndarray:
        return image if index in self._key_only else self.trigger(image, index)

    def cover_caption(self, caption: str, index: int, classnames: Sequence[str], templates: Sequence[str]) -> str:
        """Key-only samples get the key, patch-only ones none; with ``one_key_text: prompt`` the
        text is template ``index`` mod their number filled with the class the caption names first."""
        named = first_named(caption, classnames) if self.one_key_text == "prompt" else None
        text = templates[index % len(templates)].format(named) if named else caption
        return f"{self.key} {text}" if index in self._key_only else text

    def objectives(self, ctx: PoisonContext, encode_images, encode_texts):
        goal = target_text_embedding(encode_texts, self.semantic or ctx.target, ctx.templates)
        return {"semantic_loss": (1.0, lambda emb, clean: 1 - emb @ goal)}

    def caption(self, caption: str, target: str, templates: list[str], rng: np.random.Generator) -> str:
        return self.prompt(templates[rng.integers(len(templates))]).format(target)

    def prompt(self, template: str) -> str:
        return f"{self.key} {template}"
