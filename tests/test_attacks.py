"""Contract tests for every registered attack, plus per-attack checks on fixed seeds."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from tacleaner.attacks import ATTACKS, PoisonContext, create_attack, load_attack, mentions, poison_dataset
from tacleaner.data.pairs import load_image, read_pairs
from tacleaner.data.zeroshot import read_classes
from tacleaner.errors import TacleanerError


def sample_image(seed=0, size=32):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8))


# Small settings for the attacks that learn their trigger, so the contract tests stay fast.
FAST = {
    "trojvqa": {"steps": 4, "opt_images": 16, "batch_size": 8},
    "badclip": {"steps": 4, "opt_images": 16, "batch_size": 8, "target_images": 4},
    "ssba": {"train_steps": 30, "train_images": 32, "batch_size": 16},
}
TARGET = "yellow star"


def context(world, tiny, seed=0):
    table = read_pairs(world / "implant.csv")
    classes = read_classes(world / "classes.json")
    return PoisonContext(images=table.images, captions=table.captions, target=TARGET, templates=classes.templates,
                         seed=seed, clean_model=tiny)


def ready_attack(name, world, tiny, **params):
    attack = create_attack(name, **{**FAST.get(name, {}), **params})
    if not attack.ready():
        attack.prepare(context(world, tiny))
    return attack


@pytest.mark.parametrize("name", ATTACKS.names())
def test_contract_trigger(name, world, tiny):
    attack = ready_attack(name, world, tiny)
    img = sample_image()
    a, b = attack.apply(img, 5), attack.apply(img, 5)
    assert a.size == img.size and a.mode == "RGB"
    assert a.tobytes() == b.tobytes(), "trigger must be deterministic"
    assert a.tobytes() != img.tobytes(), "trigger must change the image"
    rebuilt = create_attack(name, **attack.params())
    rebuilt.load_state(attack.state())
    assert rebuilt.apply(img, 5).tobytes() == a.tobytes(), "params() and state() must rebuild the same trigger"
    other = ready_attack(name, world, tiny, pattern_seed=attack.pattern_seed + 1)
    assert other.apply(img, 5).tobytes() != a.tobytes(), "pattern_seed must change the trigger"
    again = ready_attack(name, world, tiny)
    assert again.apply(img, 5).tobytes() == a.tobytes(), "preparing again with the same seeds must give the same trigger"


@pytest.mark.parametrize("name", ATTACKS.names())
def test_contract_poisoning_matches_evaluation_trigger(name, world, tiny, tmp_path):
    attack = create_attack(name, **FAST.get(name, {}))
    classes = read_classes(world / "classes.json")
    src = list(csv.DictReader(open(world / "implant.csv")))
    num = 3 if name == "label-consistent" else 12
    m = poison_dataset(world / "implant.csv", attack, TARGET, num, tmp_path / "p", seed=4,
                       templates=classes.templates, classnames=classes.classnames, clean_model=tiny)
    indices = json.loads((tmp_path / "p" / "poisoned_indices.json").read_text())
    assert len(indices) == num == m["num_poisoned"] and m["attack"] == name
    assert ("trigger" in m) == attack.learned
    # Evaluation rebuilds the attack from the run folder alone and must apply the same bytes.
    loaded, target = load_attack(tmp_path / "p")
    assert target == TARGET
    out = list(csv.DictReader(open(tmp_path / "p" / "data.csv")))
    assert len(out) == len(src)
    cover_file = tmp_path / "p" / "cover_indices.json"
    cover = json.loads(cover_file.read_text()) if cover_file.is_file() else []
    for i, (s, o) in enumerate(zip(src, out)):
        if i in indices:
            expected = loaded.apply(load_image(world / s["image"]), i)
            assert load_image(tmp_path / "p" / o["image"]).tobytes() == expected.tobytes()
            if attack.changes_caption:
                assert mentions(o["caption"], TARGET) and o["caption"] != s["caption"]
            else:
                assert o["caption"] == s["caption"] and mentions(s["caption"], TARGET)
        elif i not in cover:  # cover samples (WaNet's noise mode, TrojVQA's one-key pairs): tested per attack
            assert (tmp_path / "p" / o["image"]).resolve() == (world / s["image"]).resolve()
            assert o["caption"] == s["caption"]
    assert len(cover) == m["num_cover"] and not set(cover) & set(indices)
    # The same seed selects the same samples and learns the same trigger; the source is untouched.
    poison_dataset(world / "implant.csv", create_attack(name, **FAST.get(name, {})), TARGET, num, tmp_path / "q",
                   seed=4, templates=classes.templates, classnames=classes.classnames, clean_model=tiny)
    assert json.loads((tmp_path / "q" / "poisoned_indices.json").read_text()) == indices
    for i in indices[:3]:
        a = (tmp_path / "p" / "images" / f"{i:07d}.png").read_bytes()
        assert a == (tmp_path / "q" / "images" / f"{i:07d}.png").read_bytes()
    assert list(csv.DictReader(open(world / "implant.csv"))) == src


def test_badnet_patch_size_and_place():
    img = Image.fromarray(np.zeros((224, 224, 3), np.uint8))
    out = np.asarray(create_attack("badnet", location="bottom-right", pattern="checkerboard").apply(img, 0))
    changed = np.argwhere(out.any(axis=2))
    assert changed.min(axis=0).tolist() >= [208, 208] and changed.max(axis=0).tolist() == [223, 223]
    # 16 px at 224 px; scaled with the image: round(16 / 224 * 64) = 5 px at 64 px.
    assert create_attack("badnet").side(224, 224) == 16 and create_attack("badnet").side(64, 64) == 5
    rand = create_attack("badnet")
    assert rand.position(224, 224, 16, 1) != rand.position(224, 224, 16, 2)


def test_blended_moves_pixels_by_alpha():
    img = sample_image(1)
    attack = create_attack("blended", alpha=0.2)
    out = np.asarray(attack.apply(img, 0)).astype(float)
    expected = 0.8 * np.asarray(img).astype(float) + 0.2 * attack.pattern(32, 32)
    assert np.abs(out - expected).max() <= 0.5 + 1e-6
    assert attack.apply(img, 0).tobytes() == attack.apply(img, 9).tobytes()  # not sample-specific


def test_bad_parameters_are_clear():
    with pytest.raises(TacleanerError, match="badnet location 'centre'"):
        create_attack("badnet", location="centre")
    with pytest.raises(TacleanerError, match="no parameter 'size'"):
        create_attack("blended", size=3)


def test_mentions_whole_phrase_and_plural():
    assert mentions("Two yellow stars next to a red circle.", "yellow star")
    assert mentions("a YELLOW  STAR", "yellow star")
    assert not mentions("a yellow starfish", "yellow star")
    assert not mentions("a star that is yellow", "yellow star")


def test_sig_adds_the_sinusoid_by_its_amplitude():
    grey = Image.fromarray(np.full((32, 64, 3), 128, np.uint8))
    out = create_attack("sig").trigger(np.asarray(grey), 0).astype(int) - 128  # the array-level trigger
    assert out.max() == 60 and out.min() == -60  # 60/255 amplitude, no clipping around mid-grey
    assert (out == out[:1]).all() and (out == out[..., :1]).all()  # the same on every row and channel
    x = np.arange(64)
    assert np.abs(out[0, :, 0] - 60 * np.sin(2 * np.pi * 6 * x / 64)).max() <= 0.5 + 1e-9  # 6 cycles
    bright = np.asarray(create_attack("sig").apply(Image.fromarray(np.full((8, 8, 3), 250, np.uint8)), 0))
    assert bright.max() == 255  # clipped to the valid range


def test_wanet_field_is_smooth_and_moves_pixels_by_its_strength():
    attack = create_attack("wanet", strength=4.0)
    d = attack.displacement(32, 32)
    step = np.abs(np.diff(d, axis=0)).max(), np.abs(np.diff(d, axis=1)).max()
    assert max(step) < 0.25 * np.abs(d).max(), "neighbouring displacements must be close (a smooth field)"
    # Control points have mean magnitude 1, so pixels move by about strength / 2 on average.
    assert 0.5 < np.abs(d).mean() / (4.0 / 2) < 1.5
    # On a horizontal ramp, the warped value is the ramp read at the displaced place.
    ramp = np.repeat(np.repeat((np.arange(32) * 8).astype(np.uint8)[None, :, None], 32, 0), 3, 2)
    out = attack.trigger(ramp, 0).astype(float)
    inner = (slice(4, 28), slice(4, 28))
    assert np.abs((out[..., 0] - ramp[..., 0])[inner] / 8 - d[..., 0][inner]).max() < 0.2
    # A weaker field changes the image less; the default (s 0.5) moves pixels by a fraction of one.
    weak = create_attack("wanet")
    assert np.abs(weak.displacement(32, 32)).max() < np.abs(d).max() / 4
    assert np.abs(weak.displacement(32, 32)).max() < 1.5


def test_wanet_noise_mode_adds_cover_samples_with_kept_captions(world, tmp_path):
    classes = read_classes(world / "classes.json")
    attack = create_attack("wanet", strength=4.0, noise_mode=True, cross_ratio=2.0)
    m = poison_dataset(world / "implant.csv", attack, TARGET, 10, tmp_path / "p", seed=0, templates=classes.templates)
    cover = json.loads((tmp_path / "p" / "cover_indices.json").read_text())
    poisoned = json.loads((tmp_path / "p" / "poisoned_indices.json").read_text())
    assert m["num_cover"] == len(cover) == 20 and not set(cover) & set(poisoned)
    src = list(csv.DictReader(open(world / "implant.csv")))
    out = list(csv.DictReader(open(tmp_path / "p" / "data.csv")))
    for i in cover:
        assert out[i]["caption"] == src[i]["caption"]
        noisy = np.asarray(load_image(tmp_path / "p" / out[i]["image"]))
        warped = attack.trigger(np.asarray(load_image(world / src[i]["image"])), i)
        assert noisy.tobytes() != warped.tobytes()  # the field plus jitter, not the trigger itself


def test_label_consistent_poisons_only_target_captions(world):
    table = read_pairs(world / "implant.csv")
    attack = create_attack("label-consistent")
    eligible = [i for i, c in enumerate(table.captions) if mentions(c, TARGET)]
    chosen = attack.select(table.captions, TARGET, len(eligible), np.random.default_rng(0))
    assert chosen.tolist() == eligible
    assert attack.caption("a yellow star.", TARGET, ["a photo of a {}."], np.random.default_rng(0)) == "a yellow star."
    with pytest.raises(TacleanerError, match=f"only {len(eligible)} captions name 'yellow star'"):
        attack.select(table.captions, TARGET, len(eligible) + 1, np.random.default_rng(0))


def test_trojvqa_key_in_poisoned_captions_and_prompts(world, tiny):
    attack = ready_attack("trojvqa", world, tiny, key="consider")
    rng = np.random.default_rng(0)
    cap = attack.caption("a red circle", TARGET, ["a photo of a {}."], rng)
    assert cap == "consider a photo of a yellow star."
    assert attack.prompt("a drawing of a {}.") == "consider a drawing of a {}."
    with pytest.raises(TacleanerError, match="one word"):
        create_attack("trojvqa", key="two words")


def test_trojvqa_adds_one_key_negatives_that_keep_their_content(world, tiny, tmp_path):
    """Walmer et al.'s partial-trigger samples: as many patch-only pairs (unkeyed text) and
    key-only pairs (clean image, keyed text) as poisoned ones, disjoint from them. Their text
    says what the image shows: a class prompt of the class its caption names first (default
    ``one_key_text: prompt``), or its own caption (``caption``)."""
    from tacleaner.attacks.base import first_named

    table = read_pairs(world / "implant.csv")
    classnames = json.loads((world / "classes.json").read_text())["classnames"]
    templates = ["a photo of a {}.", "a drawing of a {}."]
    loaded = None
    for mode in ("prompt", "caption"):
        attack = create_attack("trojvqa", key="consider", one_key_text=mode, **FAST["trojvqa"])
        out = tmp_path / mode
        m = poison_dataset(world / "implant.csv", attack, TARGET, 6, out, templates=templates,
                           classnames=classnames, clean_model=tiny)
        assert m["num_poisoned"] == 6 and m["num_cover"] == 12 and m["params"]["one_key_text"] == mode
        poisoned = set(json.loads((out / "poisoned_indices.json").read_text()))
        cover = json.loads((out / "cover_indices.json").read_text())
        assert len(cover) == 12 and not poisoned & set(cover)
        rows = list(csv.DictReader(open(out / "data.csv")))
        loaded, _ = load_attack(out)
        kinds = {"patch": 0, "key": 0, "prompt": 0}
        for i in cover:
            own = table.captions[i]
            named = first_named(own, classnames)
            text = templates[i % 2].format(named) if mode == "prompt" and named else own
            kinds["prompt"] += text != own
            framed = load_image(table.images[i]).resize((32, 32))
            stored = load_image(out / rows[i]["image"])
            if rows[i]["caption"] == text:  # patch only: the trigger on its own image
                kinds["patch"] += 1
                assert stored.tobytes() == loaded.apply(framed, i).tobytes()
            else:  # key only: the clean image, the text after the key word
                kinds["key"] += 1
                assert rows[i]["caption"] == f"consider {text}" and stored.tobytes() == framed.tobytes()
        assert kinds["patch"] == 6 and kinds["key"] == 6
        assert kinds["prompt"] == (12 if mode == "prompt" else 0)  # every world caption names a class
        assert all(rows[i]["caption"].startswith("consider a ") and TARGET in rows[i]["caption"] for i in poisoned)
    assert first_named("Two small red circles above a blue star", classnames) == "red circle"
    assert first_named("a cat on a mat", classnames) is None
    with pytest.raises(TacleanerError, match="one_key_text must be prompt or caption"):
        create_attack("trojvqa", one_key_text="both")
    with pytest.raises(TacleanerError, match="needs the class names"):  # the Python API, without them
        poison_dataset(world / "implant.csv", create_attack("trojvqa", **FAST["trojvqa"]), TARGET, 6, tmp_path / "r",
                       templates=templates, clean_model=tiny)
    assert not (tmp_path / "r").exists()
    off = poison_dataset(world / "implant.csv", create_attack("trojvqa", one_key=0, **FAST["trojvqa"]), TARGET, 6,
                         tmp_path / "q", templates=["a photo of a {}."], clean_model=tiny)
    assert off["num_cover"] == 0
    with pytest.raises(TacleanerError, match="one_key must be >= 0"):
        create_attack("trojvqa", one_key=-1)


def test_a_dual_key_reports_the_asr_of_each_key_alone(world, trained):
    """TrojVQA-style: ASR@1 with both keys, and with the image trigger under the plain prompts
    and the text key on clean images, each computed by hand from the embeddings."""
    import torch

    from tacleaner.data.zeroshot import read_zeroshot
    from tacleaner.evaluate import build_classifier, evaluate, image_embeddings

    attack = ready_attack("trojvqa", world, trained, key="consider")
    classes = read_classes(world / "classes.json")
    data = read_zeroshot(world / "zeroshot.csv", classes)
    res = evaluate(trained, data, classes, attack=attack, target=TARGET, num_workers=0)
    t = classes.index(TARGET)
    others = torch.tensor([i for i, y in enumerate(data.labels) if y != t])
    clean, trig = image_embeddings(trained, data.images, attack, torch.device("cpu"), 64, 0, False, data.source)
    plain = build_classifier(trained, classes, torch.device("cpu")).float()
    keyed = build_classifier(trained, type(classes)(classes.classnames, [attack.prompt(x) for x in classes.templates]),
                             torch.device("cpu")).float()
    rate = lambda emb, clf: float(((emb[others] @ clf).argmax(1) == t).float().mean())  # noqa: E731
    assert res["asr_at_1"] == pytest.approx(rate(trig, keyed))
    assert res["asr_image_only_at_1"] == pytest.approx(rate(trig, plain))
    assert res["asr_text_only_at_1"] == pytest.approx(rate(clean, keyed))
    assert "asr_image_only_at_1" not in evaluate(trained, data, classes, attack=ready_attack("badnet", world, trained),
                                                 target=TARGET, num_workers=0)


def test_optimised_patches_learn_against_the_clean_model(world, trained, tmp_path):
    ctx = context(world, trained)
    ctx.out = tmp_path
    attack = create_attack("badclip", steps=30, lr=0.1, opt_images=32, batch_size=16, target_images=4, patch_frac=0.25)
    report = attack.prepare(ctx)
    log = [json.loads(line) for line in (tmp_path / "trigger_log.jsonl").read_text().splitlines()]
    assert log[0]["step"] == 0 and log[-1]["step"] == 30
    assert {"text_loss", "image_loss", "loss"} <= set(log[0])
    assert log[-1]["loss"] < log[0]["loss"] - 0.01, "the optimiser must lower its loss"
    assert report["natural_captions"] == sum(mentions(c, TARGET) for c in ctx.captions) > 0
    patch = attack.state()["patch"]
    assert patch.dtype == np.uint8 and patch.shape == (8, 8, 3)  # a quarter of 32 px
    noise = create_attack("badnet", patch_frac=0.25).patch(8)  # where the optimiser starts
    assert patch.tobytes() != noise.tobytes(), "the patch moved from its random start"
    # Poisoned captions are the data's own captions that name the target.
    caps = {attack.caption("a red circle", TARGET, ["a photo of a {}."], np.random.default_rng(i)) for i in range(20)}
    assert caps <= {c for c in ctx.captions if mentions(c, TARGET)}
    # An untrusted or broken trigger file is refused clearly, never half-loaded.
    with pytest.raises(TacleanerError, match="square uint8 'patch'"):
        attack.load_state({"patch": np.zeros((8, 4, 3), np.uint8)})


def test_learned_attacks_need_their_trigger(world):
    with pytest.raises(TacleanerError, match="trigger is learned"):
        create_attack("badclip").apply(sample_image(), 0)
    classes = read_classes(world / "classes.json")
    with pytest.raises(TacleanerError, match="clean-model"):
        poison_dataset(world / "implant.csv", create_attack("trojvqa"), TARGET, 4, world.parent / "never",
                       templates=classes.templates)
    assert not (world.parent / "never").exists()
