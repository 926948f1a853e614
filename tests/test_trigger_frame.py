"""Triggers live in the frame the model sees: on real images of any shape and size, every
triggered model input (poisoning, training, evaluation) holds the whole trigger, and every
image of a run gets the same pattern."""
import csv
import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from tacleaner.attacks import ATTACKS, create_attack, load_attack, poison_dataset
from tacleaner.attacks.frame import model_frame
from tacleaner.data.pairs import PairDataset, load_image, read_pairs
from tacleaner.evaluate import _Images
from tacleaner_cli import main

# width x height: landscape and portrait photos, a small odd one, squares off and at the frame
SIZES = [(500, 375), (375, 500), (640, 427), (97, 61), (300, 300), (32, 32)]
FRAME = 32  # the tiny model's input
SIDE = 8  # patch_frac 0.25 of the frame


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Real JPEG and PNG files of several shapes, and a CSV of them."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    rows = []
    for i, (w, h) in enumerate(SIZES * 2):
        # a smooth picture (JPEG-friendly) with some texture
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * 255 // max(w - 1, 1)), (yy * 255 // max(h - 1, 1)), np.full_like(xx, 40 * (i % 6))], -1)
        noise = rng.integers(0, 30, size=(h, w, 3))
        name = f"img{i}.{'jpg' if i % 2 else 'png'}"
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(root / name)
        rows.append((name, f"a photo number {i} of a thing"))
    with open(root / "data.csv", "w", newline="") as f:
        csv.writer(f).writerows([("image", "caption"), *rows])
    return root


def denormalise(x: torch.Tensor, bundle) -> np.ndarray:
    """A preprocessed [3, s, s] model input back to HxWx3 pixel values (floats)."""
    mean = torch.tensor(bundle.mean).view(3, 1, 1)
    std = torch.tensor(bundle.std).view(3, 1, 1)
    return ((x * std + mean) * 255).permute(1, 2, 0).numpy()


def patch_in(pixels: np.ndarray, attack, index: int) -> bool:
    """Whether the model input holds BadNet's whole patch where the run placed it."""
    y, x = attack.position(FRAME, FRAME, SIDE, index)
    return pixels.shape[:2] == (FRAME, FRAME) and np.abs(pixels[y:y + SIDE, x:x + SIDE] - attack.patch(SIDE)).max() < 0.51


@pytest.mark.parametrize("location", ["bottom-right", "top-left", "middle", "random"])
def test_badnet_patch_is_whole_in_every_model_input(photos, tiny, tmp_path, location):
    run = tmp_path / "poison"
    n = len(SIZES) * 2
    poison_dataset(photos / "data.csv", create_attack("badnet", patch_frac=0.25, location=location), "star", n, run,
                   templates=["a photo of a {}."], frame=FRAME)
    assert json.loads((run / "manifest.json").read_text())["frame"] == FRAME
    attack, _ = load_attack(run)
    assert attack.frame == FRAME
    table = read_pairs(run / "data.csv")
    # poisoning: the files are the model's frame, patch included
    for i, path in enumerate(table.images):
        assert patch_in(np.asarray(load_image(path)).astype(float), attack, i), (location, SIZES[i % len(SIZES)])
    # training: the loader's tensors of the poisoned rows
    data = PairDataset(table)
    x = tiny.images_to_tensor([data[i]["image"] for i in range(n)])
    for i in range(n):
        assert patch_in(denormalise(x[i], tiny), attack, i)
    # evaluation: triggered zero-shot images, read from the clean originals
    originals = read_pairs(photos / "data.csv").images
    ds = _Images(originals, tiny.preprocess, attack, list(range(n)), attack.frame)
    for i in range(n):
        clean, triggered = ds[i]
        assert patch_in(denormalise(triggered, tiny), attack, i)
        assert torch.equal(clean, tiny.preprocess(load_image(originals[i])))


def test_the_check_catches_a_trigger_applied_before_the_crop(photos, tiny):
    """The old way (the patch at the stored resolution, then resize and crop) cuts a
    bottom-right patch off a landscape photo: the check above would fail on it."""
    attack = create_attack("badnet", patch_frac=0.25, location="bottom-right")
    image = load_image(read_pairs(photos / "data.csv").images[0])  # 500 x 375
    stored = tiny.preprocess(Image.fromarray(attack.trigger(np.asarray(image), 0)))
    assert not patch_in(denormalise(stored, tiny), attack, 0)
    assert patch_in(denormalise(tiny.preprocess(attack.apply(image, 0, FRAME)), tiny), attack, 0)


def test_frame_is_open_clips_eval_geometry(photos):
    """Preprocessing a framed image gives the same tensor as preprocessing the original: the
    frame is exactly what the model sees, and clean rows need no framing."""
    preprocess = open_clip.image_transform(FRAME, is_train=False)
    for path in read_pairs(photos / "data.csv").images:
        image = load_image(path)
        assert torch.equal(preprocess(model_frame(image, FRAME)), preprocess(image))


@pytest.mark.parametrize("name", [n for n in ATTACKS.names() if not ATTACKS.get(n).learned])
def test_one_pattern_per_run_on_every_size(name):
    """A flat grey image of any size, framed and triggered, gives one and the same input: the
    pattern does not depend on the stored size (it did when drawn per image size)."""
    attack = create_attack(name)
    inputs = {np.asarray(attack.apply(Image.new("RGB", (w, h), (90, 120, 150)), 3, FRAME)).tobytes()
              for (w, h) in SIZES}
    assert len(inputs) == 1
    out = np.asarray(attack.apply(Image.new("RGB", (500, 375), (90, 120, 150)), 3, FRAME))
    assert out.shape == (FRAME, FRAME, 3)


def test_a_non_square_image_needs_a_frame():
    from tacleaner.errors import TacleanerError

    with pytest.raises(TacleanerError, match="500x375"):
        create_attack("blended").apply(Image.new("RGB", (500, 375)), 0)


def test_poison_cli_frame(photos, world, tmp_path, capsys):
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"classnames": ["star", "moon"], "templates": ["a photo of a {}."]}))
    base = ["--quiet", "poison", "--data", str(photos / "data.csv"), "--attack", "blended", "--target", "star",
            "--num", "3", "--classes", str(classes)]
    assert main([*base, "--out", str(tmp_path / "p224")]) == 0
    assert "224 px model frame" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "p224" / "manifest.json").read_text())
    assert manifest["frame"] == 224
    for row in read_pairs(tmp_path / "p224" / "data.csv").images:
        if row.parent.name == "images":
            assert Image.open(row).size == (224, 224)
    assert main([*base, "--out", str(tmp_path / "p32"), "--frame", "32"]) == 0
    capsys.readouterr()
    # square images of one size are already framed: their side is the default
    assert main(["--quiet", "poison", "--data", str(world / "implant.csv"), "--attack", "blended", "--target", "1",
                 "--num", "3", "--classes", str(world / "classes.json"), "--out", str(tmp_path / "w")]) == 0
    assert "32 px model frame" in capsys.readouterr().out
    assert main([*base, "--out", str(tmp_path / "p4"), "--frame", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--frame" in err and ">= 8" in err
    # show-trigger refuses another frame than the run's
    assert main(["--quiet", "show-trigger", "--trigger", str(tmp_path / "p32"), "--data", str(photos / "data.csv"),
                 "--out", str(tmp_path / "g.png"), "--frame", "64"]) == 2
    assert "32 px frame" in capsys.readouterr().err
