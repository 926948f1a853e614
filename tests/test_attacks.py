"""Contract tests for every registered attack, plus per-attack checks on fixed seeds."""
import csv
import json

import numpy as np
import pytest
from PIL import Image

from tacleaner.attacks import ATTACKS, create_attack, poison_dataset
from tacleaner.data.pairs import load_image
from tacleaner.data.zeroshot import read_classes
from tacleaner.errors import TacleanerError


def sample_image(seed=0, size=32):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8))


@pytest.mark.parametrize("name", ATTACKS.names())
def test_contract_trigger(name):
    attack = create_attack(name)
    img = sample_image()
    a, b = attack.apply(img, 5), attack.apply(img, 5)
    assert a.size == img.size and a.mode == "RGB"
    assert a.tobytes() == b.tobytes(), "trigger must be deterministic"
    assert a.tobytes() != img.tobytes(), "trigger must change the image"
    rebuilt = create_attack(name, **attack.params())
    assert rebuilt.apply(img, 5).tobytes() == a.tobytes(), "params() must rebuild the same trigger"
    other = create_attack(name, pattern_seed=attack.pattern_seed + 1)
    assert other.apply(img, 5).tobytes() != a.tobytes(), "pattern_seed must change the trigger"


@pytest.mark.parametrize("name", ATTACKS.names())
def test_contract_poisoning_matches_evaluation_trigger(name, world, tmp_path):
    attack = create_attack(name)
    classes = read_classes(world / "classes.json")
    m = poison_dataset(world / "implant.csv", attack, "yellow star", 12, tmp_path / "p", seed=4,
                       templates=classes.templates)
    indices = json.loads((tmp_path / "p" / "poisoned_indices.json").read_text())
    assert len(indices) == 12 == m["num_poisoned"] and m["attack"] == name
    src = list(csv.DictReader(open(world / "implant.csv")))
    out = list(csv.DictReader(open(tmp_path / "p" / "data.csv")))
    assert len(out) == len(src)
    for i, (s, o) in enumerate(zip(src, out)):
        if i in indices:
            expected = attack.apply(load_image(world / s["image"]), i)
            assert load_image(tmp_path / "p" / o["image"]).tobytes() == expected.tobytes()
            assert "yellow star" in o["caption"] or not attack.changes_caption
        else:
            assert (tmp_path / "p" / o["image"]).resolve() == (world / s["image"]).resolve()
            assert o["caption"] == s["caption"]
    # The same seed selects the same samples; the source data is untouched.
    poison_dataset(world / "implant.csv", attack, "yellow star", 12, tmp_path / "q", seed=4, templates=classes.templates)
    assert json.loads((tmp_path / "q" / "poisoned_indices.json").read_text()) == indices
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
    with pytest.raises(TacleanerError, match="badnet location 'middle'"):
        create_attack("badnet", location="middle")
    with pytest.raises(TacleanerError, match="no parameter 'size'"):
        create_attack("blended", size=3)
