"""The defenses' losses on hand-made embeddings, and EDA on real WordNet."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tacleaner.defenses.infonce import info_nce
from tacleaner.defenses.tacleaner import subtext_alignment_loss
from tacleaner.text.eda import OPERATIONS, augment_all, eda, synonyms

SCALE = torch.tensor(10.0)


def unit(rows):
    return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_info_nce_prefers_aligned_twins():
    a = unit(np.eye(4).tolist())
    assert info_nce(a, a, SCALE) < 0.01
    assert info_nce(a, a.flip(0), SCALE) > 5.0
    assert info_nce(a, a.flip(0), SCALE, targets=torch.tensor([3, 2, 1, 0])) < 0.01


def make_case():
    img = unit(np.eye(4).tolist()).requires_grad_()
    txt = unit(np.eye(4).tolist())
    sel = torch.tensor([0, 2])
    pos = unit([[1, 0, 0, 0], [0, 0, 1, 0]]).requires_grad_()
    far = unit([[0, 0, 0, 1], [0, 1, 0, 0]])
    neg = torch.stack([far, far], dim=1)  # [s=2, m=2, d]
    mask = torch.ones(2, 2, dtype=torch.bool)
    return img, txt, sel, pos, neg, mask


def test_subtext_loss_low_when_positive_aligned_and_negatives_far():
    img, txt, sel, pos, neg, mask = make_case()
    loss = subtext_alignment_loss(img, txt, sel, pos, neg, mask, SCALE)
    assert loss < 0.01
    loss.backward()
    assert img.grad is not None and pos.grad is not None


def test_subtext_loss_rises_when_a_negative_matches_the_image():
    img, txt, sel, pos, neg, mask = make_case()
    base = subtext_alignment_loss(img, txt, sel, pos, neg, mask, SCALE)
    confusable = neg.clone()
    confusable[0, 0] = img[0].detach()  # a counterfactual as close to image 0 as its positive
    worse = subtext_alignment_loss(img, txt, sel, pos, confusable, mask, SCALE)
    # Image 0 now splits its choice between two equal logits: its i2t term becomes ln 2, which is
    # averaged over the 2 selected samples and then with the (unchanged) t2i term.
    assert float((worse - base).detach()) == pytest.approx(np.log(2) / 4, abs=0.01)
    masked = mask.clone()
    masked[0, 0] = False  # padding never counts
    assert subtext_alignment_loss(img, txt, sel, pos, confusable, masked, SCALE) < 0.01


def test_subtext_loss_gradients_reach_image_and_text_sides():
    img, txt, sel, pos, neg, mask = make_case()
    neg = neg.clone().requires_grad_()
    shuffled = pos.detach().flip(0).requires_grad_()  # wrong positives: a real gradient signal
    loss = subtext_alignment_loss(img, txt, sel, shuffled, neg, mask, SCALE, text_term=True)
    loss.backward()
    assert img.grad.abs().sum() > 0 and shuffled.grad.abs().sum() > 0 and neg.grad.abs().sum() > 0


def test_text_term_anchor_prefers_positive():
    img, txt, sel, pos, neg, mask = make_case()
    with_term = subtext_alignment_loss(img, txt, sel, pos, neg, mask, SCALE, text_term=True)
    without = subtext_alignment_loss(img, txt, sel, pos, neg, mask, SCALE)
    assert 0 <= with_term - without < 0.01  # the caption already matches its positive


def test_wordnet_synonyms_are_real():
    assert "domestic dog" in synonyms("dog")
    assert "crimson" in synonyms("red")
    assert "dog" not in synonyms("dog")


@pytest.mark.parametrize("op", OPERATIONS)
def test_eda_operations_on_fixed_seeds(op):
    caption = "a little girl climbing the stairs to her wooden playhouse"
    words = caption.split()
    out = eda(caption, np.random.default_rng(3), alpha=0.1, operation=op).split()
    assert out == eda(caption, np.random.default_rng(3), alpha=0.1, operation=op).split()  # deterministic
    if op == "synonym":
        changed = [(a, b) for a, b in zip(words, out) if a != b]
        assert len(out) >= len(words) and changed
        assert any(b in synonyms(a) or " ".join(out[i:i + 2]) in synonyms(a)
                   for i, (a, b) in enumerate(zip(words, out)) if a != b)
    elif op == "insert":
        assert len(out) > len(words)
        extra = list(out)
        for w in words:
            extra.remove(w)
        inserted = " ".join(extra)
        assert any(inserted in synonyms(w) for w in words)
    elif op == "swap":
        assert sorted(out) == sorted(words) and out != words
    else:
        assert 0 < len(out) < len(words) and all(w in words for w in out)


def test_eda_never_empties_and_is_seeded():
    assert eda("dog", np.random.default_rng(0), operation="delete") == "dog"
    caps = ["a red circle above a blue square", "two dogs run on the grass"]
    assert augment_all(caps, seed=1) == augment_all(caps, seed=1)
    assert augment_all(caps, seed=1) != augment_all(caps, seed=2)


def test_cleanclip_autoaugment_interpolation_knob(world, tiny):
    from PIL import Image

    from tacleaner.data.pairs import read_pairs
    from tacleaner.defenses import create_defense
    from tacleaner.errors import TacleanerError

    table = read_pairs(world / "clean.csv")
    square = Image.new("RGB", (32, 32), (40, 40, 40))
    square.paste((250, 250, 250), (8, 8, 24, 24))
    outputs = {}
    for mode in ("nearest", "bilinear"):
        objective = create_defense("tacleaner", aug_interpolation=mode)  # inherited by TA-Cleaner
        objective.setup(tiny, table, seed=0)
        torch.manual_seed(3)  # the same policy draws for both modes
        outputs[mode] = [np.asarray(objective.autoaugment(square)) for _ in range(40)]
    # Geometric operations resample: nearest keeps the two original grey levels, bilinear blends edges.
    levels = lambda imgs: len(np.unique(np.concatenate([im.reshape(-1, 3) for im in imgs]), axis=0))  # noqa: E731
    assert levels(outputs["bilinear"]) > levels(outputs["nearest"])
    with pytest.raises(TacleanerError, match="aug_interpolation 'cubic'"):
        create_defense("cleanclip", aug_interpolation="cubic")
