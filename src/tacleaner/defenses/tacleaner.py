"""TA-Cleaner (Xun et al., 2024): CleanCLIP plus fine-grained alignment of subtexts to images.

Each epoch, ``k`` samples of the clean set are drawn at random; for each, one positive subtext
P_i (a reduction of the caption that keeps its core) and ``m`` negative subtexts N_i
(counterfactuals with one content word replaced) are generated (see
:mod:`tacleaner.text.subtexts`). For the selected samples present in a batch:

- image -> subtext: InfoNCE of image i picking P_i among its negatives N_i and the other
  selected samples' positives;
- subtext -> image: InfoNCE of P_i picking image i among the batch's images;
- optionally (``text_term``) text in-modal: caption T_i picking P_i against N_i.

A column that is no negative is masked (``mask_false_negatives``): another selected sample's
positive that says the same as P_i (equal :func:`~tacleaner.text.normalise.subtext_key`), in
either direction, and a negative that says the same as its own positive (dropped when the
epoch's subtexts are drawn). With ``mask: truth`` (a synthetic world, whose ``scenes.jsonl``
records what every image shows) the masking is exact: every column whose subtext is true of the
row's image is masked, in both directions and over every image of the batch, selected or not,
and every negative true of its own image is dropped (:mod:`tacleaner.data.scenes`).

``L = L_cleanclip + w_ta * mean_i(...)``. Ablations: ``use_positives=False`` aligns the full
caption in place of P_i, against negatives that are the full caption with one word swapped
(negatives only); ``use_negatives=False`` drops N_i (positives only);
``w_ta=0`` is CleanCLIP. The paper gives no more detail than this; every choice is a knob.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.pairs import PairTable
from ..errors import TacleanerError
from ..models import ClipBundle
from .cleanclip import CleanCLIP
from .infonce import info_nce
from .registry import DEFENSES
from .subtext_draw import SubtextDraw

# The dataset's own words (replacement candidates, inflections) come from at most this many of
# its captions: tagging all of CC3M's 3M would take the tagger most of an hour; 50,000 captions
# already hold nearly every common word.
VOCABULARY_CAPTIONS = 50_000
# Which columns the masking takes out: "key", positives that say the same (normalise.subtext_key);
# "truth", every subtext true of the image (a synthetic world's scenes.jsonl).
MASKS = ("key", "truth")


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
    epoch; 0: up to 8, one core left, on machines with 4 cores or more, else 1).
    ``mask_false_negatives`` masks in-batch positives equivalent to a row's own (the loss
    reports how many as ``ta_masked``) and drops negatives equivalent to their own positive;
    the run folder's ``subtext_masking.json`` counts both per epoch. ``mask`` says which columns
    that masks: "key", positives that say the same (any data); "truth", every subtext true of the
    image, judged on the attributes a synthetic world records (``scenes.jsonl``; other data is
    refused), with negatives true of their own image dropped. ``refuse_entailed`` refuses
    a replacement a picture of the caption may still fit (a WordNet synonym, hypernym, hyponym or
    similar-to of the word in its own senses, or a near-equivalent of the shipped table); false, with
    ``mask_false_negatives`` false, gives TA-Cleaner as it was before both fixes (an ablation)."""

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
    mask_false_negatives: bool = True
    mask: str = "key"
    refuse_entailed: bool = True
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
        if self.mask not in MASKS:
            raise TacleanerError(f"tacleaner mask {self.mask!r}: choose one of {', '.join(MASKS)}")
        if not (self.use_positives or self.use_negatives):
            raise TacleanerError("tacleaner: use_positives and use_negatives cannot both be false (that is cleanclip)")

    def setup(self, bundle: ClipBundle, table: PairTable, seed: int) -> None:
        from ..text.subtexts import SubtextConfig, SubtextGenerator

        super().setup(bundle, table, seed)
        # Without positives the caption is aligned, so its negatives are the caption with one
        # word swapped: a sub-caption's negative would differ from it in more than that word.
        cfg = SubtextConfig(spacy_model=self.spacy_model, negatives_per_positive=max(self.m, 1),
                            negative_sources=tuple(self.negative_sources), seed=seed,
                            negative_mode=self.negative_mode, n_process=self._parse_processes(),
                            negatives_from="positives" if self.use_positives else "caption",
                            refuse_entailed=self.refuse_entailed)
        n = len(table.captions)
        vocabulary = (list(table.captions) if n <= VOCABULARY_CAPTIONS else  # an even sample of a large set
                      [table.captions[int(i)] for i in np.linspace(0, n - 1, VOCABULARY_CAPTIONS)])
        self.subtexts = SubtextDraw(
            table.captions, self.tokenizer, SubtextGenerator(cfg, vocabulary=vocabulary), vocabulary, seed, k=self.k,
            k_count=self.k_count, m=self.m, use_positives=self.use_positives, use_negatives=self.use_negatives,
            mask_false_negatives=self.mask_false_negatives, prefetch_from=self.prefetch_from,
            scenes=self._scenes(table) if self.truth_masking else None)

    @property
    def truth_masking(self) -> bool:
        return self.mask_false_negatives and self.mask == "truth"

    def _scenes(self, table: PairTable) -> list:
        """What every image of ``table`` shows, from the ``scenes.jsonl`` beside its CSV."""
        from ..data.scenes import scenes_for

        try:
            return scenes_for(table.images, Path(table.source).parent)
        except TacleanerError as e:
            raise TacleanerError(f"tacleaner mask: truth: {e}") from None

    def _parse_processes(self) -> int:
        if self.parse_processes:
            return self.parse_processes
        cores = os.cpu_count() or 1
        return min(8, cores - 1) if cores >= 4 else 1

    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        self.subtexts.start_epoch(epoch)
        self._warn_unusable()

    def epoch_note(self) -> str:
        from ..text.usable import describe

        last = self.subtexts.last
        return f"subtexts unusable: {describe(last['unusable'], last['drawn'])}" if last else ""

    def run_metadata(self) -> dict[str, Any]:
        """The last epoch's subtext counts: drawn, unusable by cause, selected."""
        last = self.subtexts.last
        return {"subtexts": {k: last[k] for k in ("drawn", "unusable", "selected")}} if last else {}

    def _warn_unusable(self) -> None:
        """One warning line per run (first process only) when more than ``usable.WARN_SHARE`` of
        an epoch's drawn captions give the subtext term nothing."""
        import warnings

        from ..text.usable import SUPPORTED_LANGUAGES, WARN_SHARE, describe

        last = self.subtexts.last
        bad = sum(last["unusable"].values())
        if getattr(self, "_warned_unusable", False) or not self.dist.is_main or bad <= WARN_SHARE * last["drawn"]:
            return
        self._warned_unusable = True
        warnings.warn(f"TA-Cleaner: epoch {last['epoch']}: {describe(last['unusable'], last['drawn'])} of the captions "
                      f"drawn for subtexts give none (supported: {', '.join(SUPPORTED_LANGUAGES)}); the subtext term "
                      "trains on the rest only, so the defense is weaker than configured (counts per epoch: "
                      "subtext_masking.json)")

    def close(self) -> None:
        if getattr(self, "subtexts", None) is not None:
            self.subtexts.close()

    @property
    def uses_negatives(self) -> bool:
        return self.use_negatives and self.m > 0

    def collate(self, samples: list[dict]) -> dict[str, Any]:
        batch = super().collate(samples)
        if batch["size"]:
            batch.update(self.subtexts.batch_fields(batch["index"]))
        return batch

    def losses(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        sel = batch["ta_batch_pos"]
        key = batch["ta_pos_key"] if self.mask_false_negatives else None
        index = batch["index"]
        s = len(sel)
        extra = None
        if s and self.w_ta:  # with w_ta = 0 (CleanCLIP) the subtexts need no encoding
            extra = torch.cat([batch["ta_pos"]] + ([batch["ta_neg"]] if "ta_neg" in batch else []))
        img, aug_img, txt, aug_txt, sub, scale = self.encode(model, batch, extra)
        pos, neg = sub[:s], sub[s:]
        if self.dist.enabled:  # the whole batch's subtexts and selected rows, from every rank
            mask = batch.get("ta_neg_mask", torch.ones((s, self.m), dtype=torch.bool)).to(img.device)
            img, aug_img, txt, aug_txt, pos, neg = self.gather(img, aug_img, txt, aug_txt, pos, neg)
            if key is None:
                sel, mask = self.gather(sel.to(img.device) + batch["row_offset"], mask)
            else:  # the positives' ids too: equivalent positives on different ranks are masked alike
                sel, mask, key, index = self.gather(sel.to(img.device) + batch["row_offset"], mask, key.to(img.device),
                                                    index.to(img.device))
            s = len(sel)
        else:
            mask = batch.get("ta_neg_mask")
        out = self.cleanclip_losses(img, aug_img, txt, aug_txt, scale)
        truth = None
        if self.truth_masking:  # the global batch's rows: every rank computes the same matrix
            index = index.tolist()
            truth = self.subtexts.truth_matrix([index[j] for j in sel.tolist()], index).to(img.device)
            same, same_image = truth_masks(sel.to(img.device), truth)
            out["ta_masked"], out["ta_masked_images"] = same.sum().float(), same_image.sum().float()
            key = None
        elif key is not None:  # logged per step and averaged per epoch (not a *_loss: not summed)
            out["ta_masked"] = masked_count(key.to(img.device)).float()
        if not s or self.w_ta == 0:
            out["ta_loss"] = torch.zeros((), device=img.device)
            return out
        neg = neg.view(s, self.m, -1) if self.uses_negatives else None
        ta = subtext_alignment_loss(img, txt, sel.to(img.device), pos, neg, mask, scale, self.text_term,
                                    key.to(img.device) if key is not None else None, truth)
        out["ta_loss"] = self.w_ta * ta
        return out

    def write_report(self, out) -> None:
        """``subtext_masking.json`` (:meth:`SubtextDraw.write_report`)."""
        self.subtexts.write_report(out)


def false_negative_masks(sel: torch.Tensor, pos_key: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Which cross-sample columns of the subtext terms are not negatives at all.

    ``sel`` [s]: batch positions of the selected samples; ``pos_key`` [s]: an id per positive,
    equal for positives that say the same thing (:func:`tacleaner.text.normalise.subtext_key`);
    ``n``: the batch size. Returns ``same`` [s, s], True where row i's image would be pushed
    away from another selected sample's positive that describes it just as well, and
    ``same_image`` [s, n], True where P_i would be pushed away from another selected image whose
    positive is P_i's equivalent. Both mark the same pairs of samples (and as many of them)."""
    same = pos_key[:, None] == pos_key[None, :]
    same &= ~torch.eye(len(sel), dtype=torch.bool, device=sel.device)
    image_key = torch.full((n,), -1, dtype=pos_key.dtype, device=sel.device)  # unselected: no positive
    image_key[sel] = pos_key
    same_image = pos_key[:, None] == image_key[None, :]
    same_image[torch.arange(len(sel), device=sel.device), sel] = False  # the own image is the target
    return same, same_image


def truth_masks(sel: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`false_negative_masks` from exact truth: ``truth`` [s, n] is True where selected
    sample i's positive is true of batch image j. ``same`` [s, s] marks row i's column j (P_j)
    when P_j is true of image i; ``same_image`` [s, n] marks P_i's column j when P_i is true of
    image j, selected or not. Own targets are never masked."""
    rows = torch.arange(len(sel), device=sel.device)
    same = truth[:, sel].T.clone()
    same[rows, rows] = False
    same_image = truth.clone()
    same_image[rows, sel] = False
    return same, same_image


def masked_count(pos_key: torch.Tensor) -> torch.Tensor:
    """Cross-sample columns :func:`false_negative_masks` masks in the image -> subtext term:
    ordered pairs of selected samples with equivalent positives (the subtext -> image term
    masks as many)."""
    return (pos_key[:, None] == pos_key[None, :]).sum() - len(pos_key)


def image_to_subtext_logits(img_sel: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor | None,
                            neg_mask: torch.Tensor | None, scale: torch.Tensor,
                            same: torch.Tensor | None = None) -> torch.Tensor:
    """Row i: image i against every selected positive (its own on the diagonal) and then its
    negatives. Masked columns (padding, and ``same`` from :func:`false_negative_masks`) hold
    -inf: the softmax gives them weight exactly 0, so they receive no gradient."""
    logits = scale * img_sel @ pos.T
    if same is not None:
        logits = logits.masked_fill(same, float("-inf"))
    if neg is not None:
        neg_logits = (scale * torch.einsum("sd,smd->sm", img_sel, neg)).masked_fill(~neg_mask, float("-inf"))
        logits = torch.cat([logits, neg_logits], dim=1)
    return logits


def subtext_alignment_loss(img: torch.Tensor, txt: torch.Tensor, sel: torch.Tensor, pos: torch.Tensor,
                           neg: torch.Tensor | None, neg_mask: torch.Tensor | None, scale: torch.Tensor,
                           text_term: bool = False, pos_key: torch.Tensor | None = None,
                           truth: torch.Tensor | None = None) -> torch.Tensor:
    """The subtext terms for the ``s`` selected samples of a batch (all embeddings normalised).

    ``img`` [n, d] and ``txt`` [n, d]: the batch; ``sel`` [s]: batch positions of the selected
    samples; ``pos`` [s, d]: their positive subtexts; ``neg`` [s, m, d] with ``neg_mask``
    [s, m] (False = padding): their negatives, or None. ``pos_key`` [s], when given, masks the
    in-batch false negatives (:func:`false_negative_masks`) in both directions; ``truth`` [s, n],
    when given, masks instead every column true of the row's image (:func:`truth_masks`); without
    either the terms are computed exactly as before masking existed.
    """
    img_sel = img[sel]
    targets = torch.arange(len(sel), device=img.device)
    same = same_image = None
    if truth is not None:
        same, same_image = truth_masks(sel, truth)
    elif pos_key is not None:
        same, same_image = false_negative_masks(sel, pos_key, len(img))
    logits = image_to_subtext_logits(img_sel, pos, neg, neg_mask, scale, same)
    if same_image is None:
        to_image = info_nce(pos, img, scale, targets=sel)
    else:
        to_image = F.cross_entropy((scale * pos @ img.T).masked_fill(same_image, float("-inf")), sel)
    loss = (F.cross_entropy(logits, targets) + to_image) / 2
    if text_term:
        anchor = txt[sel]
        text_logits = scale * (anchor * pos).sum(-1, keepdim=True)
        if neg is not None:
            anchor_neg = (scale * torch.einsum("sd,smd->sm", anchor, neg)).masked_fill(~neg_mask, float("-inf"))
            text_logits = torch.cat([text_logits, anchor_neg], dim=1)
        loss = loss + F.cross_entropy(text_logits, torch.zeros(len(sel), dtype=torch.long, device=img.device))
    return loss
