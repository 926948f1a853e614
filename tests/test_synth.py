import csv
import json

import numpy as np
from PIL import Image

from tacleaner.data.synth import SynthConfig, class_names, generate, make_pair


def test_world_layout_and_formats(world):
    classes = json.loads((world / "classes.json").read_text())
    assert len(classes["classnames"]) >= 40 and all("{}" in t for t in classes["templates"])
    rows = list(csv.DictReader(open(world / "pretrain.csv")))
    assert len(rows) == 192 and set(rows[0]) == {"image", "caption"}
    img = Image.open(world / rows[0]["image"])
    assert img.size == (32, 32) and img.mode == "RGB"
    zs = list(csv.DictReader(open(world / "zeroshot.csv")))
    assert len(zs) == 2 * len(classes["classnames"])
    assert {int(r["label"]) for r in zs} == set(range(len(classes["classnames"])))


def test_captions_have_attributes_relations_and_verbs(world):
    captions = [r["caption"] for r in csv.DictReader(open(world / "pretrain.csv"))]
    text = " ".join(captions)
    for word in ("left of", "above", "next to", "small", "large", "background"):
        assert word in text, word
    assert any(v in text for v in ("sits", "floats", "rests", "lies", "hovers", "stands"))
    assert len(set(captions)) > 0.8 * len(captions)  # varied phrasing, few duplicates


def test_deterministic_for_a_seed(tmp_path):
    a = make_pair(7, "clean", 5, 32)
    b = make_pair(7, "clean", 5, 32)
    c = make_pair(8, "clean", 5, 32)
    assert a[1] == b[1] and a[0].tobytes() == b[0].tobytes()
    assert a[0].tobytes() != c[0].tobytes()
    cfg = SynthConfig(seed=1, pretrain=4, implant=2, clean=2, zeroshot_per_class=1)
    generate(tmp_path / "x", cfg, progress=False)
    generate(tmp_path / "y", cfg, progress=False)
    for split in ("pretrain", "implant", "clean", "zeroshot"):
        assert (tmp_path / "x" / f"{split}.csv").read_text() == (tmp_path / "y" / f"{split}.csv").read_text()
    assert (tmp_path / "x/images/pretrain/000003.png").read_bytes() == (tmp_path / "y/images/pretrain/000003.png").read_bytes()


def test_zero_shot_images_show_their_class(world):
    # The single object's colour dominates the non-background pixels: check the red class.
    rows = list(csv.DictReader(open(world / "zeroshot.csv")))
    red = class_names().index("red circle")
    path = next(r["image"] for r in rows if int(r["label"]) == red)
    px = [tuple(p) for p in np.asarray(Image.open(world / path).convert("RGB")).reshape(-1, 3).tolist()]
    assert sum(1 for r, g, b in px if r > 150 and g < 90 and b < 90) >= 6


def test_web_caption_style_adds_alt_text_forms_and_keeps_the_images():
    from tacleaner.data.synth import COLOURS, SIZES

    web = [make_pair(3, "clean", i, 16) for i in range(400)]
    plain = [make_pair(3, "clean", i, 16, "plain") for i in range(400)]
    assert all(a[0].tobytes() == b[0].tobytes() for a, b in zip(web, plain))
    changed = [a[1] for a, b in zip(web, plain) if a[1] != b[1]]
    assert 0.3 < len(changed) / len(web) < 0.5  # WEB_SHARE of the captions
    text = "\n".join(changed)
    for form in ("close - up of ", "image may contain : ", "how to draw ", "i found this ", " isolated on a ",
                 "illustration of ", ", stock image"):
        assert form in text, form
    assert sum(c.split()[0] in COLOURS or c.split()[0] in SIZES for c in changed) > 40  # no article, as in CC3M


def test_caption_style_is_checked(tmp_path):
    import pytest

    from tacleaner.errors import TacleanerError

    with pytest.raises(TacleanerError, match="captions='cc3m'"):
        SynthConfig(captions="cc3m")
    generate(tmp_path / "w", SynthConfig(pretrain=3, implant=0, clean=0, zeroshot_per_class=0, zeroshot_val_per_class=0,
                                         captions="plain"), progress=False)
    assert json.loads((tmp_path / "w" / "world.json").read_text())["captions"] == "plain"
