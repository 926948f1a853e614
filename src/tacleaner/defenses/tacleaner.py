"""TA-Cleaner (Xun et al., 2024): CleanCLIP plus fine-grained alignment of subtexts to images.

Each epoch, ``k`` samples of the clean set are drawn at random; for each, one positive subtext
P_i (a reduction of the caption that keeps its core) and ``m`` negative subtexts N_i
(counterfactuals with one content word replaced) are generated (see
:mod:`tacleaner.text.subtexts`). For the selected samples present in a batch:

- image -> subtext: InfoNCE of image i picking P_i among its negatives N_i and the other
  selected samples' positives;
- subtext -> image: InfoNCE of P_i picking image i among the batch's images;
- optionally (``text_term``) text in-modal: caption T_i picking P_i against N_i.

``L = L_cleanclip + w_ta * mean_i(...)``. Ablations: ``use_positives=False`` aligns the full
caption in place of P_i (negatives only); ``use_negatives=False`` drops N_i (positives only);
``w_ta=0`` is CleanCLIP. The paper gives no more detail than this; every choice is a knob.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.pairs import PairTable
from ..errors import TacleanerError
from ..models import ClipBundle
from .base import DEFENSES
from .cleanclip import CleanCLIP
from .infonce import info_nce


# The dataset's own words (replacement candidates, inflections) come from at most this many of
# its captions: tagging all of CC3M's 3M would take the tagger most of an hour; 50,000 captions
# already hold nearly every common word.
VOCABULARY_CAPTIONS = 50_000


@DEFENSES.register("tacleaner")
@dataclass
class TACleaner(CleanCLIP):
    """Knobs: ``w_ta`` weighs the subtext terms; ``k`` is the fraction of the clean set drawn
    per epoch, in (0, 1]; ``k_count``, when > 0, draws that many samples instead (a count and
    a fraction are never confused); ``m`` negatives per positive; ``use_positives`` /
    ``use_negatives`` for ablations; ``text_term`` adds the text in-modal term;
    ``negative_sources`` picks where counterfactual words come from; ``negative_mode`` "random"
    replaces a random noun, verb or adjective by a random common word of the same part of
    speech instead, as the paper's figure draws it (use ``m=1`` for its one negative per
    sample); ``spacy_model`` names the parser (default en_core_web_sm). Speed only (the
    subtexts are the same): ``prefetch_from`` parses the next epoch's captions in a background
    process while this epoch trains, when an epoch draws at least that many (0: never);
    ``parse_processes`` spaCy processes for large inline parses (the vocabulary, the first
    epoch; 0: up to 8, one core left, on machines with 4 cores or more, else 1)."""

    w_ta: float = 1.0
    k: float = 0.1
    k_count: int = 0
    m: int = 2
    use_positives: bool = True
    use_negatives: bool = True
    text_term: bool = False
    negative_sources: list[str] = field(default_factory=lambda: ["cohyponym", "antonym", "sibling-attribute", "people",
                                                                 "vocabulary"])
    negative_mode: str = "wordnet"
    spacy_model: str | None = None
    prefetch_from: int = 2000
    parse_processes: int = 0
    name = "tacleaner"
    relative_cost = 2.7  # cleanclip + subtexts (bench_defenses.py: 1.1x cleanclip at k 0.1)
    description = "CleanCLIP + alignment of positive / negative subtexts on k samples per epoch (TA-Cleaner)"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.k <= 1:
            raise TacleanerError(f"tacleaner k={self.k}: k is the fraction of samples drawn per epoch, in (0, 1]; "
                                 "use k_count for a number of samples")
        if self.k_count < 0 or self.m < 0:
            raise TacleanerError(f"tacleaner needs k_count >= 0 and m >= 0 (got k_count={self.k_count}, m={self.m})")
        from ..text.subtexts import NEGATIVE_MODES, ORIGINS

        if self.negative_mode not in NEGATIVE_MODES:
            raise TacleanerError(f"tacleaner negative_mode {self.negative_mode!r}: choose one of "
                                 f"{', '.join(NEGATIVE_MODES)}")

        unknown = [s for s in self.negative_sources if s not in ORIGINS]
        if unknown or not self.negative_sources:
            raise TacleanerError(f"tacleaner negative_sources {unknown or '[]'}: choose one or more of "
                                 f"{', '.join(ORIGINS)}")
        if self.prefetch_from < 0 or self.parse_processes < 0:
            raise TacleanerError(f"tacleaner needs prefetch_from >= 0 and parse_processes >= 0 (got "
                                 f"{self.prefetch_from}, {self.parse_processes})")
        if not (self.use_positives or self.use_negatives):
            raise TacleanerError("tacleaner: use_positives and use_negatives cannot both be false (that is cleanclip)")

    def setup(self, bundle: ClipBundle, table: PairTable, seed: int) -> None:
        from ..text.subtexts import SubtextConfig, SubtextGenerator

        super().setup(bundle, table, seed)
        cfg = SubtextConfig(spacy_model=self.spacy_model, negatives_per_positive=max(self.m, 1),
                            negative_sources=tuple(self.negative_sources), seed=seed,
                            negative_mode=self.negative_mode, n_process=self._parse_processes())
        n = len(table.captions)
        self.vocabulary = (list(table.captions) if n <= VOCABULARY_CAPTIONS else  # an even sample of a large set
                           [table.captions[int(i)] for i in np.linspace(0, n - 1, VOCABULARY_CAPTIONS)])
        self.generator = SubtextGenerator(cfg, vocabulary=self.vocabulary)
        self.prefetcher = None
        self.selected: dict[int, int] = {}  # dataset index -> row in this epoch's subtext tensors

    def _parse_processes(self) -> int:
        if self.parse_processes:
            return self.parse_processes
        cores = os.cpu_count() or 1
        return min(8, cores - 1) if cores >= 4 else 1

    def _draw(self, epoch: int) -> tuple[list[int], np.random.Generator]:
        """The samples of ``epoch`` (sorted) and the generator that goes on to draw their subtexts."""
        n = len(self.captions)
        count = min(n, self.k_count) if self.k_count else max(1, int(round(self.k * n)))
        rng = np.random.default_rng([self.seed, epoch, 1])
        return sorted(int(i) for i in rng.choice(n, size=count, replace=False)), rng

    def _prefetch(self, epoch: int) -> None:
        from ..text.prefetch import SubtextPrefetcher

        if self.prefetcher is None:
            self.prefetcher = SubtextPrefetcher(self.generator.cfg, self.vocabulary)
        self.prefetcher.submit(epoch, [self.captions[i] for i in self._draw(epoch)[0]])

    def close(self) -> None:
        if getattr(self, "prefetcher", None) is not None:
            self.prefetcher.close()
            self.prefetcher = None

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        chosen, rng = self._draw(epoch)
        subtexts = self.prefetcher.take(epoch) if self.prefetcher is not None else None
        if subtexts is None:
            subtexts = self.generator.generate([self.captions[i] for i in chosen])
        if self.prefetch_from and len(chosen) >= self.prefetch_from:
            self._prefetch(epoch + 1)  # parsed while this epoch trains
        positives, negatives, masks, self.selected = [], [], [], {}
        for i, sub in zip(chosen, subtexts):
            if (self.use_positives and not sub.positives) or (self.uses_negatives and not sub.negatives):
                continue  # the generator found nothing usable for this caption
            pos = sub.positives[rng.integers(len(sub.positives))] if self.use_positives else self.captions[i]
            if self.uses_negatives:
                negs = self._negatives_for(sub, pos, rng)
                masks.append([True] * len(negs) + [False] * (self.m - len(negs)))
                negatives += negs + [pos] * (self.m - len(negs))  # padding, masked out of the loss
            positives.append(pos)
            self.selected[i] = len(positives) - 1
        self.pos_tokens = self.tokenizer(positives) if positives else None
        self.neg_tokens = self.tokenizer(negatives) if negatives else None
        self.neg_mask = torch.tensor(masks, dtype=torch.bool).view(len(masks), self.m)

    @property
    def uses_negatives(self) -> bool:
        return self.use_negatives and self.m > 0

    def _negatives_for(self, sub, pos: str, rng: np.random.Generator) -> list[str]:
        """Up to ``m`` negatives, those made from the chosen positive first (they differ from it
        in exactly one word, the contrast the loss is meant to teach)."""
        order = rng.permutation(len(sub.negatives))
        own = [sub.negatives[j].text for j in order if sub.negatives[j].base == pos]
        other = [sub.negatives[j].text for j in order if sub.negatives[j].base != pos]
        return (own + other)[:self.m]

    def collate(self, samples: list[dict]) -> dict[str, Any]:
        batch = super().collate(samples)
        if not batch["size"]:
            return batch
        rows = [(j, self.selected[int(i)]) for j, i in enumerate(batch["index"].tolist()) if int(i) in self.selected]
        batch["ta_batch_pos"] = torch.tensor([j for j, _ in rows], dtype=torch.long)
        if rows:
            ids = torch.tensor([r for _, r in rows])
            batch["ta_pos"] = self.pos_tokens[ids]
            if self.uses_negatives:
                neg_ids = (ids[:, None] * self.m + torch.arange(self.m)[None, :]).flatten()
                batch["ta_neg"] = self.neg_tokens[neg_ids]
                batch["ta_neg_mask"] = self.neg_mask[ids]
        return batch

    def losses(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        sel = batch["ta_batch_pos"]
        s = len(sel)
        extra = None
        if s and self.w_ta:  # with w_ta = 0 (CleanCLIP) the subtexts need no encoding
            extra = torch.cat([batch["ta_pos"]] + ([batch["ta_neg"]] if "ta_neg" in batch else []))
        img, aug_img, txt, aug_txt, sub, scale = self.encode(model, batch, extra)
        pos, neg = sub[:s], sub[s:]
        if self.dist.enabled:  # the whole batch's subtexts and selected rows, from every rank
            mask = batch.get("ta_neg_mask", torch.ones((s, self.m), dtype=torch.bool)).to(img.device)
            img, aug_img, txt, aug_txt, pos, neg = self.gather(img, aug_img, txt, aug_txt, pos, neg)
            sel, mask = self.gather(sel.to(img.device) + batch["row_offset"], mask)
            s = len(sel)
        else:
            mask = batch.get("ta_neg_mask")
        out = self.cleanclip_losses(img, aug_img, txt, aug_txt, scale)
        if not s or self.w_ta == 0:
            out["ta_loss"] = torch.zeros((), device=img.device)
            return out
        neg = neg.view(s, self.m, -1) if self.uses_negatives else None
        ta = subtext_alignment_loss(img, txt, sel.to(img.device), pos, neg, mask, scale, self.text_term)
        out["ta_loss"] = self.w_ta * ta
        return out


def subtext_alignment_loss(img: torch.Tensor, txt: torch.Tensor, sel: torch.Tensor, pos: torch.Tensor,
                           neg: torch.Tensor | None, neg_mask: torch.Tensor | None, scale: torch.Tensor,
                           text_term: bool = False) -> torch.Tensor:
    """The subtext terms for the ``s`` selected samples of a batch (all embeddings normalised).

    ``img`` [n, d] and ``txt`` [n, d]: the batch; ``sel`` [s]: batch positions of the selected
    samples; ``pos`` [s, d]: their positive subtexts; ``neg`` [s, m, d] with ``neg_mask``
    [s, m] (False = padding): their negatives, or None.
    """
    img_sel = img[sel]
    targets = torch.arange(len(sel), device=img.device)
    logits = scale * img_sel @ pos.T  # each image's own positive on the diagonal, others' off it
    neg_logits = None
    if neg is not None:
        neg_logits = (scale * torch.einsum("sd,smd->sm", img_sel, neg)).masked_fill(~neg_mask, float("-inf"))
        logits = torch.cat([logits, neg_logits], dim=1)
    loss = (F.cross_entropy(logits, targets) + info_nce(pos, img, scale, targets=sel)) / 2
    if text_term:
        anchor = txt[sel]
        text_logits = scale * (anchor * pos).sum(-1, keepdim=True)
        if neg is not None:
            anchor_neg = (scale * torch.einsum("sd,smd->sm", anchor, neg)).masked_fill(~neg_mask, float("-inf"))
            text_logits = torch.cat([text_logits, anchor_neg], dim=1)
        loss = loss + F.cross_entropy(text_logits, torch.zeros(len(sel), dtype=torch.long, device=img.device))
    return loss
