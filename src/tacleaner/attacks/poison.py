"""Poisoning a dataset: a new CSV, triggered images and a manifest; the source is untouched."""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from ..data.pairs import load_image, read_pairs
from ..errors import TacleanerError
from ..fileio import atomic_path, prepare_run_dir, write_json, write_text
from .base import Attack


def poison_dataset(
    data: str | Path,
    attack: Attack,
    target: str,
    num: int,
    out: str | Path,
    *,
    seed: int = 0,
    templates: list[str],
    image_col: str = "image",
    caption_col: str = "caption",
    overwrite: bool = False,
) -> dict:
    """Poison ``num`` pairs of the CSV ``data`` with ``attack`` toward ``target``.

    Writes into the run folder ``out``: ``data.csv`` (image, caption; clean rows point at the
    original images), ``images/`` (the triggered copies), ``poisoned_indices.json`` and
    ``manifest.json``. Returns the manifest.
    """
    table = read_pairs(data, image_col, caption_col)
    if num < 0:
        raise TacleanerError(f"--num must be >= 0, got {num}")
    rng = np.random.default_rng(seed)
    indices = attack.select(table.captions, target, num, rng)
    out = prepare_run_dir(out, overwrite=overwrite)
    (out / "images").mkdir(exist_ok=True)
    poisoned = set(int(i) for i in indices)
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(("image", "caption"))
    for i, (img_path, caption) in enumerate(zip(table.images, table.captions)):
        if i in poisoned:
            image = attack.apply(load_image(img_path), i)
            rel = Path("images") / f"{i:07d}.png"
            with atomic_path(out / rel) as tmp:
                image.save(tmp, format="PNG")
            writer.writerow((rel.as_posix(), attack.caption(caption, target, templates, rng)))
        else:
            writer.writerow((Path(os.path.relpath(img_path, out.resolve())).as_posix(), caption))
    write_text(out / "data.csv", buf.getvalue())
    write_json(out / "poisoned_indices.json", sorted(poisoned))
    manifest = {
        "attack": attack.name,
        "params": attack.params(),
        "target": target,
        "num_poisoned": len(poisoned),
        "num_total": len(table),
        "seed": seed,
        "source": str(Path(data).resolve()),
        "data": "data.csv",
        "poisoned_indices": "poisoned_indices.json",
    }
    write_json(out / "manifest.json", manifest)
    return manifest
