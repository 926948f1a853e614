"""docs/howto-extend.md's code runs as written: its attack and defense register, take typed
parameters, and work on real images and a real tiny model."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

PAGE = Path(__file__).resolve().parents[1] / "docs" / "howto-extend.md"


def test_the_pages_attack_and_defense_work(world):
    from tacleaner.attacks import ATTACKS
    from tacleaner.defenses import DEFENSES
    from tacleaner.errors import TacleanerError
    from tacleaner.models import create_model

    (code,) = re.findall(r"```python\n(.*?)```", PAGE.read_text(), re.S)
    names: dict = {}
    try:
        exec(compile(code, str(PAGE), "exec"), names)
        image = np.full((32, 32, 3), 7, dtype=np.uint8)
        out = names["attack"].trigger(image, 0)
        assert (out[::8] == 255).all() and (out[1:8] == 7).all() and (image == 7).all()  # input untouched
        with pytest.raises(TacleanerError, match="period"):
            names["tacleaner"].create_attack("stripes", period="x")
        torch.manual_seed(0)
        bundle = create_model("tacleaner-tiny-rn")
        from PIL import Image

        from tacleaner.data.pairs import read_pairs

        table = read_pairs(world / "clean.csv")
        defense = names["defense"]
        defense.setup(bundle, table, 0)  # what the training loop does first
        imgs = torch.stack([bundle.preprocess(Image.open(table.images[i]).convert("RGB")) for i in range(4)])
        texts = bundle.tokenizer([table.captions[i] for i in range(4)])
        losses = defense.losses(bundle.model, {"images": imgs, "texts": texts})
        assert set(losses) == {"clip_loss"} and torch.isfinite(losses["clip_loss"])
    finally:  # the registries are the package's: leave them as they were
        ATTACKS._entries.pop("stripes", None)
        DEFENSES._entries.pop("finetune-soft", None)
