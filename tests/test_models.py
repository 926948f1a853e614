"""Model bundles: the batch preprocessing fast path, shipped configs, CLI listings."""
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from tacleaner.cli import main
from tacleaner.data.zeroshot import imagenet_classes
from tacleaner.models import list_models, shipped_models


def test_fast_batch_preprocess_equals_per_image_preprocess(tiny):
    rng = np.random.default_rng(0)
    same = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]
    expected = torch.stack([tiny.preprocess(im) for im in same])
    assert torch.allclose(tiny.images_to_tensor(same), expected, atol=1e-6)
    mixed = same[:2] + [Image.fromarray(rng.integers(0, 256, (48, 40, 3), dtype=np.uint8))]
    assert tiny.images_to_tensor(mixed).shape == (3, 3, 32, 32)
    assert torch.allclose(tiny.images_to_tensor(mixed)[2], tiny.preprocess(mixed[2]))


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
