"""Model bundles: the batch preprocessing fast path, shipped configs, CLI listings."""
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from tacleaner.data.zeroshot import imagenet_classes
from tacleaner.models import list_models, shipped_models
from tacleaner_cli import main


def test_fast_batch_preprocess_equals_per_image_preprocess(tiny):
    rng = np.random.default_rng(0)
    same = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]
    expected = torch.stack([tiny.preprocess(im) for im in same])
    assert torch.equal(tiny.images_to_tensor(same), expected)  # the same bits
    # NHWC memory under an NCHW view, which picks the convolution kernels the runs were measured with
    assert tiny.images_to_tensor(same).is_contiguous(memory_format=torch.channels_last)
    mixed = same[:2] + [Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))]
    assert tiny.images_to_tensor(mixed).shape == (3, 3, 32, 32)
    assert torch.allclose(tiny.images_to_tensor(mixed)[2], tiny.preprocess(mixed[2]))


def test_fit_is_preprocess_geometry(tiny):
    """Collate resizes once (``fit``) and reuses the result for every view: fitted, an image of
    any shape or mode gives preprocess's numbers; one at the model's size is left as it is."""
    rng = np.random.default_rng(1)
    photo = Image.fromarray(rng.integers(0, 256, (75, 100, 3), dtype=np.uint8))
    gray = Image.fromarray(rng.integers(0, 256, (40, 33), dtype=np.uint8))  # mode L
    for im in (photo, gray):
        fitted = tiny.fit(im)
        assert fitted.size == (32, 32) and fitted.mode == "RGB"
        assert torch.equal(tiny.images_to_tensor([fitted])[0], tiny.preprocess(im))
    square = Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    assert tiny.fit(square) is square


def test_collate_resizes_each_image_once(tiny, tmp_path):
    """CleanCLIP's two views come from one resize of the image (the augmented view is drawn from
    the fitted image), and the clean view is what preprocess gives."""
    from tacleaner.data.pairs import PairDataset, PairTable
    from tacleaner.defenses import create_defense

    rng = np.random.default_rng(2)
    paths = []
    for i in range(3):
        p = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    table = PairTable(tmp_path / "t.csv", paths, ["a red circle", "a blue square", "a green star"])
    obj = create_defense("cleanclip")
    obj.setup(tiny, table, seed=0)
    calls = []
    geometry = tiny.fit
    tiny.fit = lambda im: calls.append(im.size) or geometry(im)
    try:
        samples = [PairDataset(table)[i] for i in range(3)]
        batch = obj.collate(samples)
    finally:
        del tiny.fit
    assert calls == [(90, 60)] * 3
    assert batch["aug_images"].shape == batch["images"].shape == (3, 3, 32, 32)
    assert torch.equal(batch["images"], torch.stack([tiny.preprocess(s["image"]) for s in samples]))


def test_shipped_tiny_configs_are_registered_with_open_clip():
    assert {"tacleaner-tiny-rn", "tacleaner-tiny-vit"} <= set(shipped_models())
    assert {"tacleaner-tiny-rn", "RN50", "ViT-B-32"} <= set(list_models())


def test_imagenet_metadata_ships():
    c = imagenet_classes()
    assert len(c.classnames) == 1000 and len(c.templates) == 80
    assert c.index("banana") == 954 and all("{}" in t for t in c.templates)


def test_listings(capsys):
    assert main(["attacks"]) == 0
    out = capsys.readouterr().out
    assert "badnet" in out and "blended" in out and "patch_frac" in out
    assert main(["defenses"]) == 0
    assert "finetune" in capsys.readouterr().out
    assert main(["models"]) == 0
    assert "tacleaner-tiny-rn" in capsys.readouterr().out


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "tacleaner", "attacks"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "badnet" in r.stdout
    r = subprocess.run([sys.executable, "-m", "tacleaner", "evaluate", "--data", "x.csv", "--classes", "nope.json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == "error: nope.json: file not found"
