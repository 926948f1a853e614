"""TA-Cleaner's exact masking (``mask: truth``): what a synthetic image shows, when a text is true
of it, the masks in both directions on hand-made batches, and the objective on the world."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tacleaner.data.scenes import Scene, SceneObject, negative_true_of, read_scenes, true_of
from tacleaner.data.synth import make_scene
from tacleaner.defenses.tacleaner import subtext_alignment_loss, truth_masks
from tacleaner.errors import TacleanerError

SCALE = torch.tensor(10.0)
# A large red circle left of a small blue square (as the generator placed them), on dark.
SCENE = Scene((SceneObject("red", "circle", "large", 0.3, 0.3), SceneObject("blue", "square", "small", 0.7, 0.35)),
              "dark", "left")


@pytest.mark.parametrize("text", [
    "a red circle", "a large red circle", "circles", "a big red circle", "red", "a blue square",
    "a red circle to the left of a blue square", "a blue square sits to the right of a red circle.",
    "A photo of a red circle and a blue square on a dark background", "close - up of red circle on dark background",
    "image may contain : red circle , blue square , dark background", "a red circle floats in the top of the picture",
    "a red circle next to a blue square"])
def test_true_when_every_named_attribute_matches(text):
    assert true_of(text, SCENE)


@pytest.mark.parametrize("text", [
    "a blue circle", "a small red circle", "a red star", "a red circle on a light background",
    "a blue square to the left of a red circle", "a red circle above a blue square", "a red circle and a red circle",
    "a red dog", "a red circle in the bottom of the picture", "a green circle sits next to a blue square"])
def test_false_when_an_attribute_differs_or_names_what_the_world_lacks(text):
    assert not true_of(text, SCENE)


def test_a_relation_holds_by_placement_for_other_pairs():
    """Objects the generator did not relate are judged by its placement thresholds."""
    scene = Scene((SceneObject("red", "circle", "small", 0.2, 0.2), SceneObject("blue", "star", "small", 0.8, 0.8),
                   SceneObject("green", "cross", "small", 0.2, 0.6)), "gray", "next")
    assert true_of("a red circle above a green cross", scene) and true_of("a green cross below a red circle", scene)
    assert not true_of("a red circle above a blue star", scene)  # too far to the side


def test_a_swap_of_a_word_naming_no_attribute_leaves_the_negative_true():
    assert negative_true_of("a red circle floats on a dark background", "sits", SCENE)  # verbs are drawn at random
    assert negative_true_of("a painting of a red circle", "photo", SCENE)
    assert not negative_true_of("a blue circle", "red", SCENE)
    assert not negative_true_of("a small red circle", "large", SCENE)
    assert negative_true_of("a red square", "circle", SCENE) is False
    assert negative_true_of("a blue square", "circle", SCENE)  # a swap that lands on another object's truth


def test_every_caption_of_a_world_is_true_of_its_own_image():
    """The generator's 1,500 captions (both styles, 1 to 3 objects) against their own scenes:
    a rule that misread any of the world's phrasings would call one false."""
    from tacleaner.data.scenes import _scene

    for style in ("web", "plain"):
        for i in range(750):
            _, caption, scene = make_scene(11, "clean", i, 16, style)
            assert true_of(caption, _scene(scene)), (caption, scene)


def test_truth_masks_both_directions_including_unselected_images():
    """Four images, 0-2 selected. P_1 is true of image 0 (so row 0 masks column 1) and of the
    unselected image 3; P_0 is true of nothing but its own image."""
    truth = torch.tensor([[True, False, False, False],
                          [True, True, False, True],
                          [False, False, True, False]])
    sel = torch.tensor([0, 1, 2])
    same, same_image = truth_masks(sel, truth)
    assert same.tolist() == [[False, True, False], [False, False, False], [False, False, False]]
    assert same_image.tolist() == [[False, False, False, False], [True, False, False, True],
                                   [False, False, False, False]]


def test_a_masked_column_gets_no_gradient():
    torch.manual_seed(0)
    img = F.normalize(torch.randn(4, 8), dim=-1).requires_grad_()
    pos = F.normalize(torch.randn(3, 8), dim=-1).requires_grad_()
    neg = F.normalize(torch.randn(3, 2, 8), dim=-1)
    sel, mask = torch.tensor([0, 1, 2]), torch.ones(3, 2, dtype=torch.bool)
    truth = torch.zeros(3, 4, dtype=torch.bool)
    truth[1, 3] = True  # P_1 true of the unselected image 3
    truth[torch.arange(3), sel] = True
    loss = subtext_alignment_loss(img, img.detach(), sel, pos, neg, mask, SCALE, truth=truth)
    g_img, = torch.autograd.grad(loss, img, retain_graph=True)
    plain = subtext_alignment_loss(img, img.detach(), sel, pos, neg, mask, SCALE)
    g_plain, = torch.autograd.grad(plain, img)
    # image 3 is unselected: its only gradient is as a column of the subtext -> image term,
    # from P_0, P_1 and P_2; with P_1's column masked, P_1 no longer pushes it away
    assert not torch.allclose(g_img[3], g_plain[3])
    only_p1 = torch.zeros(3, 4, dtype=torch.bool)
    only_p1[torch.arange(3), sel] = True
    only_p1[[0, 2], 3] = True  # mask image 3 for every row: it then gets no gradient at all
    full = subtext_alignment_loss(img, img.detach(), sel, pos, None, None, SCALE, truth=only_p1 | truth)
    assert torch.equal(torch.autograd.grad(full, img)[0][3], torch.zeros(8))


@pytest.fixture(scope="module")
def truth_objective(world):
    from tacleaner.data.pairs import read_pairs
    from tacleaner.defenses import create_defense
    from tacleaner.models import create_model

    table = read_pairs(world / "clean.csv")
    torch.manual_seed(0)
    bundle = create_model("tacleaner-tiny-rn")
    objective = create_defense("tacleaner", k=1.0, m=2, aug_images=False, prefetch_from=0, mask="truth")
    objective.setup(bundle, table, seed=0)
    objective.on_epoch_start(0)
    return table, objective, bundle


def test_no_kept_negative_is_true_of_its_own_image(truth_objective, world):
    from tacleaner.text.subtexts import SubtextGenerator

    table, objective, _ = truth_objective
    draw = objective.subtexts
    scenes = read_scenes(world)
    stats = draw.masking[-1]
    assert stats["negatives_true_of_image"] > 0  # the world's random verbs: "sits" -> "stands" is no negative
    neg = draw.neg_tokens.view(len(draw.selected), draw.m, -1)
    tokens = {tuple(t.tolist()): None for t in draw.neg_tokens}
    assert tokens  # the negatives were tokenised; their texts are checked against the scenes below
    generator: SubtextGenerator = draw.generator
    checked = 0
    for i, row in draw.selected.items():
        sub = generator.generate([table.captions[i]])[0]
        for n in sub.negatives:
            encoded = objective.tokenizer([n.text])[0]
            kept = any(torch.equal(encoded, neg[row, j]) for j in range(draw.m) if draw.neg_mask[row, j])
            if kept:
                checked += 1
                assert not negative_true_of(n.text, n.source, scenes[table.images[i]]), (table.captions[i], n)
    assert checked > 50


def test_a_batch_masks_every_true_column_and_counts_them(truth_objective):
    from tacleaner.data.pairs import PairDataset

    table, objective, bundle = truth_objective
    ds = PairDataset(table)
    batch = objective.collate([ds[i] for i in range(32)])
    before = dict(objective.subtexts.masking[-1])
    with torch.no_grad():
        out = objective.losses(bundle.model, batch)
    index = batch["index"].tolist()
    sel = batch["ta_batch_pos"].tolist()
    truth = objective.subtexts.truth_matrix([index[j] for j in sel], index)
    expected_images = int(truth.sum()) - len(sel)  # all but each row's own image
    expected_columns = sum(bool(truth[b, sel[a]]) for a in range(len(sel)) for b in range(len(sel)) if a != b)
    assert float(out["ta_masked_images"]) == expected_images > 0
    assert float(out["ta_masked"]) == expected_columns > 0
    after = objective.subtexts.masking[-1]  # the counts add up over the epoch's batches (two calls here)
    assert after["masked_subtext_to_image"] - before["masked_subtext_to_image"] == 2 * expected_images


def test_truth_masking_refuses_data_without_attributes(recaptioned):
    from tacleaner.data.pairs import read_pairs
    from tacleaner.defenses import create_defense
    from tacleaner.models import create_model

    path = recaptioned("plain.csv", 16, {})
    objective = create_defense("tacleaner", k=1.0, prefetch_from=0, mask="truth")
    with pytest.raises(TacleanerError) as e:
        objective.setup(create_model("tacleaner-tiny-rn"), read_pairs(path), seed=0)
    message = str(e.value)
    assert "\n" not in message and "mask: truth" in message and "scenes.jsonl" in message
    with pytest.raises(TacleanerError, match="choose one of key, truth"):
        create_defense("tacleaner", mask="exact")


def test_the_cli_refuses_it_in_one_line(recaptioned, capsys, tmp_path, tiny):
    from tacleaner.models import save_model
    from tacleaner_cli import main

    path = recaptioned("plain.csv", 16, {})
    save_model(tiny, tmp_path / "tiny.safetensors")
    code = main(["--quiet", "clean", "--defense", "tacleaner", "--param", "mask=truth", "--checkpoint",
                 str(tmp_path / "tiny.safetensors"), "--data", str(path), "--out", str(tmp_path / "o"), "--epochs", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and "scenes.jsonl" in err[-1]


def test_the_world_records_its_scenes(world):
    lines = (world / "scenes.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    n = sum(len((world / f"{s}.csv").read_text().splitlines()) - 1 for s in ("pretrain", "implant", "clean"))
    assert len(rows) == n and all(1 <= len(r["objects"]) <= 3 for r in rows)


def test_scenes_of_an_older_world_are_drawn_again_from_its_seed(world, tmp_path):
    """A world written before scenes were recorded gets them from world.json's seed: the same
    file as the generator writes; a caption that is not the seed's stops it, naming the row."""
    import shutil

    from tacleaner.data.synth import write_scenes

    for name in ("pretrain.csv", "implant.csv", "clean.csv", "world.json"):
        shutil.copy(world / name, tmp_path / name)
    assert write_scenes(tmp_path).read_text() == (world / "scenes.jsonl").read_text()
    lines = (tmp_path / "clean.csv").read_text().splitlines()
    image = lines[3].split(",")[0]
    lines[3] = f"{image},a purple hexagon"
    (tmp_path / "clean.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "scenes.jsonl").unlink()
    with pytest.raises(TacleanerError, match="clean.csv row 4"):
        write_scenes(tmp_path)
    assert not (tmp_path / "scenes.jsonl").exists()
