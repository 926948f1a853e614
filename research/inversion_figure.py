"""What the invert defense recovers, beside the real trigger: one row per backdoored model of a
grid, showing a clean image, the same image with the attack's real trigger, and with the three
patches the defense inverts first (before any training, on the backdoored model: its epoch-0
inversion, which is deterministic), labelled with the target it found and each patch's flip rate.

    python research/inversion_figure.py --grid runs/badclip --attacks badclip trojvqa badnet --out docs/research/inversion.png

Reads the grid's folders (world0/data, world0/ATTACK/implantI/{poison,backdoored}); writes one PNG.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from tacleaner.attacks import load_attack
from tacleaner.attacks.frame import model_frame
from tacleaner.data.pairs import load_image, read_pairs
from tacleaner.defenses import create_defense
from tacleaner.defenses.invert import DESIGN
from tacleaner.fileio import atomic_path
from tacleaner.models import load_model
from tacleaner.models.checkpoint import read_meta
from tacleaner.models.factory import input_size

SCALE = 3
LABEL = 14


def row(grid: Path, attack: str, implant: int, shown: int) -> tuple[list[np.ndarray], str]:
    unit = grid / "world0" / attack / f"implant{implant}"
    ckpt = unit / "backdoored" / "model.safetensors"
    bundle = load_model(ckpt)
    table = read_pairs(grid / "world0" / "data" / "clean.csv")
    torch.manual_seed(0)
    inv = create_defense("invert", classes=str(grid / "world0" / "data" / "classes.json"), reinvert=False,
                         **DESIGN)  # what badclip.yaml ran
    inv.setup(bundle, table, seed=implant)
    trig, _ = load_attack(unit / "poison")
    frame = input_size(read_meta(ckpt)["model_cfg"])
    image = np.asarray(model_frame(load_image(table.images[0]), frame))
    x01 = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255
    tiles = [image, trig.trigger(image, 0)]
    for m, p in list(zip(inv.triggers.masks, inv.triggers.patterns))[:shown]:
        tiles.append(((1 - m) * x01 + m * p).mul(255).round().byte().permute(1, 2, 0).numpy())
    flips = ", ".join(f"{100 * t['flip_rate']:.0f}%" for t in inv.triggers.found["triggers"][:shown])
    return tiles, f"{attack} (implant {implant}): target found {inv.triggers.found['target']!r}; flips {flips}"


def main() -> None:
    logging.getLogger().setLevel(logging.ERROR)  # open_clip's "initialized randomly" before the weights load
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", required=True, type=Path)
    ap.add_argument("--attacks", nargs="+", required=True)
    ap.add_argument("--implant", type=int, default=0)
    ap.add_argument("--shown", type=int, default=3, help="inverted patches per row (best first)")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    rows = [row(args.grid, a, args.implant, args.shown) for a in args.attacks]
    side = rows[0][0][0].shape[0] * SCALE
    width = max(len(t) for t, _ in rows) * (side + 4)
    canvas = Image.new("RGB", (width, len(rows) * (side + LABEL + 6)), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for r, (tiles, label) in enumerate(rows):
        top = r * (side + LABEL + 6)
        draw.text((2, top), label, fill=(0, 0, 0))
        for c, tile in enumerate(tiles):
            img = Image.fromarray(tile).resize((side, side), Image.NEAREST)
            canvas.paste(img, (c * (side + 4), top + LABEL))
    with atomic_path(args.out) as tmp:
        canvas.save(tmp, format="PNG")
    print(f"wrote {args.out}: per row a clean image, the real trigger, then the inverted patches")


if __name__ == "__main__":
    main()
