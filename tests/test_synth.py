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
