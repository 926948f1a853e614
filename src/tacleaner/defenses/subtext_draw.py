"""What TA-Cleaner prepares for an epoch's batches: the samples drawn for it, and for each one
positive subtext and ``m`` negatives, as token rows its batches take (:mod:`.tacleaner` holds
the loss over their embeddings).

Each epoch draws anew from its own seeded generator (the same subtexts on any machine and
after a resume); with ``prefetch_from`` the next epoch's captions are parsed in a background
process while this one trains. Equivalent positives get one id, so that the loss masks them
as negatives of each other; what the masking finds is counted per epoch for the run folder's
``subtext_masking.json``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import torch

from ..fileio import read_json, write_json
from ..text.normalise import subtext_key
from ..text.prefetch import SubtextPrefetcher
from ..text.usable import count_causes, unusable_cause

if TYPE_CHECKING:  # the generator's module (and its parser) loads when a run sets one up
    from ..text.subtexts import SubtextGenerator


@dataclass
class SubtextDraw:
    """The subtexts of the current epoch (:meth:`start_epoch`) and the rows of them a batch
    takes (:meth:`batch_fields`). The settings are TA-Cleaner's knobs of the same names."""

    captions: Sequence[str]
    tokenizer: Callable[[list[str]], torch.Tensor]
    generator: SubtextGenerator
    vocabulary: list[str]
    seed: int
    k: float
    k_count: int
    m: int
    use_positives: bool
    use_negatives: bool
    mask_false_negatives: bool
    prefetch_from: int
    # what every dataset row's image shows (mask: truth), or None: negatives true of their own
    # image are dropped and truth_matrix judges every positive against every image
    scenes: list | None = None
    prefetcher: SubtextPrefetcher | None = None
    selected: dict[int, int] = field(default_factory=dict)  # dataset index -> row in this epoch's subtext tensors
    pos_tokens: torch.Tensor | None = None  # [rows, context]
    neg_tokens: torch.Tensor | None = None  # [rows * m, context]: row r's negatives at r*m .. r*m+m-1
    neg_mask: torch.Tensor | None = None  # [rows, m]: False = padding
    # per row: an id, equal for equivalent positives
    pos_key: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    masking: list[dict[str, int]] = field(default_factory=list)  # per epoch: what the masking found (write_report)
    claims: list = field(default_factory=list)  # per row (mask: truth): what its positive says (scenes.parse)

    @property
    def uses_negatives(self) -> bool:
        return self.use_negatives and self.m > 0

    @property
    def last(self) -> dict[str, Any] | None:
        """The counts of the latest epoch drawn (:meth:`_key_positives`), or None before the first."""
        return self.masking[-1] if self.masking else None

    def draw(self, epoch: int) -> tuple[list[int], np.random.Generator]:
        """The samples of ``epoch`` (sorted) and the generator that goes on to draw their subtexts."""
        n = len(self.captions)
        count = min(n, self.k_count) if self.k_count else max(1, int(round(self.k * n)))
        rng = np.random.default_rng([self.seed, epoch, 1])
        return sorted(int(i) for i in rng.choice(n, size=count, replace=False)), rng

    def _prefetch(self, epoch: int) -> None:
        if self.prefetcher is None:
            self.prefetcher = SubtextPrefetcher(self.generator.cfg, self.vocabulary)
        self.prefetcher.submit(epoch, [self.captions[i] for i in self.draw(epoch)[0]])

    def close(self) -> None:
        if self.prefetcher is not None:
            self.prefetcher.close()
            self.prefetcher = None

    def start_epoch(self, epoch: int) -> None:
        """Draw ``epoch``'s samples and their subtexts."""
        chosen, rng = self.draw(epoch)
        subtexts = self.prefetcher.take(epoch) if self.prefetcher is not None else None
        if subtexts is None:
            subtexts = self.generator.generate([self.captions[i] for i in chosen])
        if self.prefetch_from and len(chosen) >= self.prefetch_from:
            self._prefetch(epoch + 1)  # parsed while this epoch trains
        positives, negatives, masks, self.selected = [], [], [], {}
        dropped, causes, untrue = 0, [], 0
        for i, sub in zip(chosen, subtexts):
            if (self.use_positives and not sub.positives) or (self.uses_negatives and not sub.negatives):
                # the generator found nothing usable for this caption: counted by cause
                causes.append(unusable_cause(self.captions[i], bool(sub.positives) or not self.use_positives,
                                             bool(sub.negatives), self.uses_negatives))
                continue
            pos = sub.positives[rng.integers(len(sub.positives))] if self.use_positives else self.captions[i]
            if self.uses_negatives:
                negs, same, true_of_image = self._negatives_for(sub, pos, rng, i)
                dropped += same
                untrue += true_of_image
                masks.append([True] * len(negs) + [False] * (self.m - len(negs)))
                negatives += negs + [pos] * (self.m - len(negs))  # padding, masked out of the loss
            positives.append(pos)
            self.selected[i] = len(positives) - 1
        self.pos_tokens = self.tokenizer(positives) if positives else None
        self.neg_tokens = self.tokenizer(negatives) if negatives else None
        self.neg_mask = torch.tensor(masks, dtype=torch.bool).view(len(masks), self.m)
        self._key_positives(epoch, positives, dropped, len(chosen), count_causes(causes))
        if self.scenes is not None:
            from ..data.scenes import parse

            self.claims = [parse(p) for p in positives]
            self.masking[-1].update(negatives_true_of_image=untrue, masked_image_to_subtext=0,
                                    masked_subtext_to_image=0)

    def truth_matrix(self, selected: list[int], images: list[int]) -> torch.Tensor:
        """[len(selected), len(images)]: True where the positive of dataset row ``selected[i]``
        is true of the image of dataset row ``images[j]`` (``mask: truth``); the epoch's counts
        of ``subtext_masking.json`` add the columns it masks (:func:`~.tacleaner.truth_masks`)."""
        from ..data.scenes import claim_true_of

        out = torch.tensor([[claim_true_of(self.claims[self.selected[row]], self.scenes[image]) for image in images]
                            for row in selected], dtype=torch.bool).view(len(selected), len(images))
        last, chosen = self.masking[-1], set(selected)
        for a, b in torch.nonzero(out).tolist():
            if images[b] != selected[a]:  # a row's own image is its target, never masked
                last["masked_subtext_to_image"] += 1
                last["masked_image_to_subtext"] += images[b] in chosen
        return out

    def _key_positives(self, epoch: int, positives: list[str], dropped: int, drawn: int,
                       unusable: dict[str, int]) -> None:
        """Give equivalent positives one id (``pos_key``, by first appearance) and record the
        epoch's counts for :meth:`write_report`: pairs of selected samples whose positives are
        equivalent (the loss masks them when they share a batch) and negatives dropped for
        saying the same as their own positive."""
        ids: dict[str, int] = {}
        self.pos_key = torch.tensor([ids.setdefault(subtext_key(p), len(ids)) for p in positives], dtype=torch.long)
        sizes = torch.bincount(self.pos_key, minlength=1)
        self.masking = [e for e in self.masking if e["epoch"] != epoch + 1] + [{
            "epoch": epoch + 1, "drawn": drawn, "unusable": unusable, "selected": len(positives),
            "distinct_positives": len(ids),
            "duplicate_positive_pairs": int((sizes * (sizes - 1) // 2).sum()),
            "negatives_equal_to_positive": dropped,
        }]

    def _negatives_for(self, sub, pos: str, rng: np.random.Generator, row: int) -> tuple[list[str], int, int]:
        """Up to ``m`` negatives, those made from the chosen positive first (they differ from it
        in exactly one word, the contrast the loss is meant to teach), and how many of the
        sample's negatives say the same as ``pos`` (a negative made from another positive can:
        it would push the image away from a right description). With
        ``mask_false_negatives`` those are dropped before the ``m`` are taken, and with
        ``scenes`` every negative true of dataset row ``row``'s image too (counted third)."""
        order = rng.permutation(len(sub.negatives))
        own = [sub.negatives[j] for j in order if sub.negatives[j].base == pos]
        other = [sub.negatives[j] for j in order if sub.negatives[j].base != pos]
        key = subtext_key(pos)
        same = sum(subtext_key(n.text) == key for n in own + other)
        if self.mask_false_negatives and same:
            own = [n for n in own if subtext_key(n.text) != key]
            other = [n for n in other if subtext_key(n.text) != key]
        true_of_image = 0
        if self.scenes is not None:
            from ..data.scenes import negative_true_of

            scene, before = self.scenes[row], len(own) + len(other)
            own = [n for n in own if not negative_true_of(n.text, n.source, scene)]
            other = [n for n in other if not negative_true_of(n.text, n.source, scene)]
            true_of_image = before - len(own) - len(other)
        return [n.text for n in own + other][:self.m], same, true_of_image

    def batch_fields(self, index: torch.Tensor) -> dict[str, Any]:
        """What a batch of the dataset rows ``index`` takes: the batch positions of the selected
        samples in it (``ta_batch_pos``), their positives' ids and, when any is selected, their
        positive and negative tokens and the negatives' mask."""
        rows = [(j, self.selected[int(i)]) for j, i in enumerate(index.tolist()) if int(i) in self.selected]
        out = {"ta_batch_pos": torch.tensor([j for j, _ in rows], dtype=torch.long),
               "ta_pos_key": self.pos_key[torch.tensor([r for _, r in rows], dtype=torch.long)]}
        if rows:
            ids = torch.tensor([r for _, r in rows])
            out["ta_pos"] = self.pos_tokens[ids]
            if self.uses_negatives:
                neg_ids = (ids[:, None] * self.m + torch.arange(self.m)[None, :]).flatten()
                out["ta_neg"] = self.neg_tokens[neg_ids]
                out["ta_neg_mask"] = self.neg_mask[ids]
        return out

    def write_report(self, out: str | Path) -> None:
        """``subtext_masking.json``: per epoch, the samples drawn, those unusable by cause
        (:mod:`tacleaner.text.usable`), the selected (usable) samples, their distinct positives,
        the pairs of them whose positives are equivalent (masked where they share a batch) and
        the negatives equivalent to their own positive (dropped when ``mask_false_negatives``);
        with ``mask: truth`` also the negatives true of their own image (dropped) and the columns
        masked in each direction (:meth:`truth_matrix`, summed over the epoch's batches).
        A resumed run keeps the epochs written before it stopped."""
        path = Path(out) / "subtext_masking.json"
        earlier = read_json(path).get("epochs", []) if path.is_file() else []
        mine = {e["epoch"] for e in self.masking}
        epochs = sorted([e for e in earlier if e.get("epoch") not in mine] + self.masking, key=lambda e: e["epoch"])
        write_json(path, {"mask_false_negatives": self.mask_false_negatives,
                          "mask": "truth" if self.scenes is not None else "key", "epochs": epochs})
