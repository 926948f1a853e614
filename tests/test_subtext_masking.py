"""In-batch false negatives of TA-Cleaner's subtext loss: equivalent positives are masked, on
hand-made embeddings and through the real objective on the embedded world."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tacleaner.defenses.infonce import info_nce
from tacleaner.defenses.tacleaner import (
    false_negative_masks,
    image_to_subtext_logits,
    masked_count,
    subtext_alignment_loss,
)
from tacleaner.text.normalise import fold_plural, subtext_key

SCALE = torch.tensor(10.0)


def unit(rows: list[list[float]]) -> torch.Tensor:
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_subtext_key_folds_case_articles_punctuation_and_plurals():
    assert subtext_key("A red circle.") == subtext_key("red circles") == "red circle"
    assert subtext_key("The children play .") == subtext_key("a child plays")
    assert subtext_key("Two men are running") == subtext_key("two man are running")
    assert subtext_key("a red circle") != subtext_key("a blue circle")
    assert [fold_plural(w) for w in ("boxes", "berries", "houses", "glasses", "glass", "bus", "dog's")] == \
        ["box", "berry", "house", "glass", "glass", "bus", "dog"]


def duplicate_case() -> tuple[torch.Tensor, ...]:
    """Four images; samples at 0, 1 and 2 selected; 0 and 1 have the same positive ("a red
    circle" twice), 2 another. Positives sit between the images so every logit has a gradient."""
    img = unit([[1, 0, 0, 0], [0.9, 0.3, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]).requires_grad_()
    txt = img.detach().clone()
    sel = torch.tensor([0, 1, 2])
    pos = unit([[1, 0.4, 0, 0.1], [1, 0.4, 0, 0.1], [0, 0.2, 1, 0.1]]).requires_grad_()
    neg = unit([[[0, 1, 0, 0], [0, 0, 0, 1]], [[0, 1, 0, 0], [0, 0, 1, 1]], [[1, 0, 0, 1], [0, 1, 0, 0]]])
    mask = torch.ones(3, 2, dtype=torch.bool)
    key = torch.tensor([0, 0, 1])
    return img, txt, sel, pos, neg, mask, key


def test_masks_mark_the_equivalent_positive_in_both_directions():
    *_, sel, pos, neg, mask, key = duplicate_case()
    same, same_image = false_negative_masks(sel, key, 4)
    assert same.tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    assert same_image.tolist() == [[False, True, False, False], [True, False, False, False],
                                   [False, False, False, False]]
    assert int(masked_count(key)) == 2 == int(same.sum()) == int(same_image.sum())


@pytest.mark.parametrize("masked", [True, False])
def test_duplicate_positive_column_gets_no_gradient_as_a_negative(masked):
    """Row 0's image -> subtext term alone: with masking, sample 1's positive (the same text)
    is no negative of image 0, so its embedding row receives exactly zero gradient from it;
    without masking it is pushed away."""
    img, _, sel, pos, neg, mask, key = duplicate_case()
    same = false_negative_masks(sel, key, 4)[0] if masked else None
    logits = image_to_subtext_logits(img[sel], pos, neg, mask, SCALE, same)
    F.cross_entropy(logits[:1], torch.tensor([0])).backward()
    if masked:
        assert logits[0, 1] == float("-inf")
        assert torch.equal(pos.grad[1], torch.zeros(4))
    else:
        assert pos.grad[1].abs().sum() > 1e-3
    assert pos.grad[0].abs().sum() > 1e-3  # the own positive is pulled either way


def test_masked_loss_is_the_loss_without_those_columns():
    """The masked loss equals the loss written out with the duplicate's columns removed (both
    directions), in value and in every gradient."""
    img, txt, sel, pos, neg, mask, key = duplicate_case()
    loss = subtext_alignment_loss(img, txt, sel, pos, neg, mask, SCALE, pos_key=key)
    got = torch.autograd.grad(loss, (img, pos))
    keep = [[0, 2], [1, 2], [0, 1, 2]]  # columns (selected positives) each row competes with
    images = [[0, 2, 3], [1, 2, 3], [0, 1, 2, 3]]  # images each positive competes with
    to_sub, to_img = [], []
    for i in range(3):
        row = torch.cat([SCALE * img[sel[i]] @ pos[keep[i]].T, SCALE * neg[i] @ img[sel[i]]])
        to_sub.append(F.cross_entropy(row[None], torch.tensor([keep[i].index(i)])))
        col = SCALE * pos[i] @ img[images[i]].T
        to_img.append(F.cross_entropy(col[None], torch.tensor([images[i].index(int(sel[i]))])))
    reference = (torch.stack(to_sub).mean() + torch.stack(to_img).mean()) / 2
    want = torch.autograd.grad(reference, (img, pos))
    assert float(loss.detach()) == pytest.approx(float(reference.detach()), abs=1e-6)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-6)
    unmasked = subtext_alignment_loss(img, txt, sel, pos, neg, mask, SCALE)
    assert float(unmasked.detach()) > float(loss.detach()) + 0.1  # the unmasked loss pushes equivalent texts apart


def test_without_duplicates_or_masking_the_loss_is_unchanged_exactly():
    """No duplicates: masking changes nothing, bit for bit; masking off (no key) is the loss as
    it was written before masking existed."""
    img, txt, sel, pos, neg, mask, _ = duplicate_case()
    distinct = torch.tensor([0, 1, 2])
    for text_term in (False, True):
        before = (F.cross_entropy(torch.cat([SCALE * img[sel] @ pos.T,
                                             (SCALE * torch.einsum("sd,smd->sm", img[sel], neg))
                                             .masked_fill(~mask, float("-inf"))], dim=1), torch.arange(3))
                  + info_nce(pos, img, SCALE, targets=sel)) / 2
        if text_term:
            anchor = txt[sel]
            logits = torch.cat([SCALE * (anchor * pos).sum(-1, keepdim=True),
                                SCALE * torch.einsum("sd,smd->sm", anchor, neg)], dim=1)
            before = before + F.cross_entropy(logits, torch.zeros(3, dtype=torch.long))
        off = subtext_alignment_loss(img, txt, sel, pos, neg, mask, SCALE, text_term)
        on = subtext_alignment_loss(img, txt, sel, pos, neg, mask, SCALE, text_term, pos_key=distinct)
        assert torch.equal(off, before) and torch.equal(on, off)
        assert all(torch.equal(a, b) for a, b in zip(torch.autograd.grad(on, (img, pos)),
                                                     torch.autograd.grad(off, (img, pos))))


@pytest.fixture(scope="module")
def drawn(world):
    """The tiny model's TA-Cleaner with and without masking, after drawing epoch 0's subtexts on
    the world's clean split (its captions repeat short positives such as "a red circle")."""
    from tacleaner.data.pairs import read_pairs
    from tacleaner.defenses import create_defense
    from tacleaner.models import create_model

    table = read_pairs(world / "clean.csv")
    out = {}
    for masking in (True, False):
        torch.manual_seed(0)
        bundle = create_model("tacleaner-tiny-rn")
        objective = create_defense("tacleaner", k=1.0, m=2, aug_images=False, prefetch_from=0,
                                   mask_false_negatives=masking)
        objective.setup(bundle, table, seed=0)
        objective.on_epoch_start(0)
        out[masking] = (objective, bundle)
    return table, out


def _batch_with(objective, table, duplicates: bool) -> dict:
    """A batch of 8 selected samples with (or without) two whose positives are equivalent."""
    from tacleaner.data.pairs import PairDataset

    keys = {i: int(objective.subtexts.pos_key[row]) for i, row in objective.subtexts.selected.items()}
    by_key: dict[int, list[int]] = {}
    for i, k in keys.items():
        by_key.setdefault(k, []).append(i)
    pair = next(v[:2] for v in by_key.values() if len(v) >= 2)
    singles = [v[0] for v in by_key.values() if len(v) == 1 or v[:2] != pair]
    chosen = (pair + singles[:6]) if duplicates else singles[:8]
    assert len({keys[i] for i in chosen}) == len(chosen) - duplicates
    ds = PairDataset(table)
    return objective.collate([ds[i] for i in chosen])


def test_objective_masks_duplicates_and_reports_them(drawn, tmp_path):
    table, out = drawn
    (on, bundle), (off, _) = out[True], out[False]
    stats = on.subtexts.masking[-1]
    assert stats["epoch"] == 1 and stats["selected"] == len(on.subtexts.selected)
    assert stats["duplicate_positive_pairs"] > 0 and stats["distinct_positives"] < stats["selected"]
    batch = _batch_with(on, table, duplicates=True)
    assert batch["ta_pos_key"].dtype == torch.long and len(batch["ta_pos_key"]) == len(batch["ta_batch_pos"])
    with torch.no_grad():
        masked = on.losses(bundle.model, batch)
        plain = off.losses(bundle.model, batch)
    assert float(masked["ta_masked"]) == 2 and "ta_masked" not in plain  # one pair, both orders
    assert float(masked["ta_loss"]) < float(plain["ta_loss"])
    on.write_report(tmp_path)
    report = json.loads((tmp_path / "subtext_masking.json").read_text())
    assert report["mask_false_negatives"] is True and report["epochs"] == on.subtexts.masking


def test_objective_without_duplicates_gives_the_same_loss_either_way(drawn):
    table, out = drawn
    (on, bundle), (off, _) = out[True], out[False]
    batch = _batch_with(on, table, duplicates=False)
    with torch.no_grad():
        masked = on.losses(bundle.model, batch)
        plain = off.losses(bundle.model, batch)
    assert float(masked["ta_masked"]) == 0
    assert torch.equal(masked["ta_loss"], plain["ta_loss"])
