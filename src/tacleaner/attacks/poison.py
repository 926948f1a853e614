"""Poisoning a dataset: a new CSV, triggered images and a manifest; the source is untouched.

A poisoning run folder holds everything evaluation needs to apply exactly the same trigger:
``manifest.json`` (attack name and parameters, target, seed) and, for attacks whose trigger is
drawn or learned, ``trigger.safetensors`` (plain arrays, loaded without executing code).
"""
from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data.pairs import image_size, load_image, read_pairs
from ..errors import TacleanerError
from ..fileio import atomic_path, read_json, staged_dir, write_json, write_text
from .base import Attack, PoisonContext, create_attack
from .frame import check_frame, frame_for, model_frame

TRIGGER_FILE = "trigger.safetensors"


def save_trigger(attack: Attack, path: Path) -> None:
    from safetensors.numpy import save_file

    arrays = {k: np.ascontiguousarray(v) for k, v in attack.state().items()}
    with atomic_path(path) as tmp:
        save_file(arrays, str(tmp), metadata={"attack": attack.name})


def load_trigger(attack: Attack, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        arrays = load_file(str(path))
    except FileNotFoundError:
        raise TacleanerError(f"{path}: trigger file not found") from None
    except (SafetensorError, OSError) as e:
        raise TacleanerError(f"{path}: not a readable trigger file ({e})") from None
    attack.load_state(arrays)


def require_model(attack: Attack, clean_model: Any) -> None:
    """Attacks that optimise their trigger against the clean model cannot prepare without it."""
    if attack.needs_model and clean_model is None:
        raise TacleanerError(f"attack {attack.name} optimises its trigger against the clean model: "
                             "pass one (--clean-model CHECKPOINT)")


def load_attack(run: str | Path) -> tuple[Attack, str]:
    """The attack of a poisoning run folder (or its ``manifest.json``), with its saved trigger
    and its frame (:attr:`Attack.frame`), and the run's target. Runs poisoned before triggers
    moved into the model's frame have no ``frame``: they get the evaluated model's."""
    run = Path(run)
    manifest_path = run / "manifest.json" if run.is_dir() else run
    m = read_json(manifest_path)
    if not isinstance(m, dict) or "attack" not in m or "params" not in m:
        raise TacleanerError(f"{manifest_path}: not a poisoning manifest (no 'attack' / 'params')")
    attack = create_attack(m["attack"], **m["params"])
    if m.get("frame") is not None:
        attack.frame = check_frame(m["frame"], f"{manifest_path}: frame")
    if m.get("trigger"):
        load_trigger(attack, manifest_path.parent / m["trigger"])
    elif attack.learned:
        raise TacleanerError(f"{manifest_path}: attack {attack.name} learns its trigger but the run saved none")
    return attack, m.get("target")


def poison_dataset(
    data: str | Path,
    attack: Attack,
    target: str,
    num: int,
    out: str | Path,
    *,
    seed: int = 0,
    templates: list[str],
    classnames: Sequence[str] = (),
    image_col: str = "image",
    caption_col: str = "caption",
    overwrite: bool = False,
    clean_model: Any = None,
    device: Any = "cpu",
    log=None,
    frame: int | None = None,
) -> dict:
    """Poison ``num`` pairs of the CSV ``data`` with ``attack`` toward ``target``.

    Attacks with a drawn or learned trigger prepare it first (those with ``needs_model``
    against ``clean_model``, a ClipBundle). Writes into the run folder ``out``: ``data.csv``
    (image, caption; clean rows point at the original images), ``images/`` (the triggered
    copies), ``poisoned_indices.json``, the trigger (where learned) and ``manifest.json``.
    ``classnames`` (with ``templates``) let cover samples say what they show as a class prompt
    (TrojVQA's one-key negatives).
    Everything is written under a temporary name and moved into place when complete: a bad
    image or an interruption leaves ``out`` as it was. Returns the manifest.

    Triggered images are written in the model's frame: resized and centre-cropped to ``frame``
    x ``frame``, then triggered, so the model sees the whole trigger and every image the same
    pattern. Default frame: the clean model's input size; else, when every image to poison is
    square of one size, that size (the data is already framed); else 224. Clean rows keep
    their files.
    """
    table = read_pairs(data, image_col, caption_col)
    if num < 0:
        raise TacleanerError(f"--num must be >= 0, got {num}")
    require_model(attack, clean_model)
    if attack.needs_classnames and not (classnames and templates):
        raise TacleanerError(f"attack {attack.name} needs the class names and prompt templates to say what its cover "
                             "images show (poison_dataset(..., classnames=..., templates=...))")
    rng = np.random.default_rng(seed)
    indices = attack.select(table.captions, target, num, rng)
    attack.frame = frame_for(frame, clean_model, attack.name, sizes=(_row_size(table, i) for i in indices))
    final = Path(out)
    with staged_dir(final, overwrite=overwrite) as out:
        manifest = _poison_into(out, final, table, attack, target, indices, rng, seed=seed, templates=templates,
                                classnames=classnames, clean_model=clean_model, device=device, log=log, source=data)
    return manifest


def _row_size(table, i) -> tuple[int, int]:
    """The image size of row ``i``; an unreadable image is named by its row."""
    try:
        return image_size(table.images[i])
    except TacleanerError as e:
        raise TacleanerError(f"{table.source}: row {int(i) + 2}: {e}; nothing was written") from None


def _poison_into(out: Path, final: Path, table, attack: Attack, target: str, indices, rng, *, seed: int,
                 templates: list[str], classnames: Sequence[str], clean_model: Any, device: Any, log,
                 source) -> dict:
    """The body of :func:`poison_dataset`, writing into the staging folder ``out`` (moved to
    ``final`` afterwards: clean rows point at the source images relative to ``final``)."""
    (out / "images").mkdir(exist_ok=True)
    manifest: dict[str, Any] = {
        "attack": attack.name, "target": target, "num_total": len(table), "seed": seed,
        "source": str(Path(source).resolve()), "data": "data.csv", "poisoned_indices": "poisoned_indices.json",
        "frame": attack.frame,
    }
    if attack.learned:
        t = time.perf_counter()
        ctx = PoisonContext(images=table.images, captions=table.captions, target=target, templates=templates,
                            seed=seed, clean_model=clean_model, device=device, out=out, log=log or (lambda m: None),
                            frame=attack.frame)
        manifest["prepare"] = {**attack.prepare(ctx), "seconds": round(time.perf_counter() - t, 2)}
        save_trigger(attack, out / TRIGGER_FILE)
        load_trigger(attack, out / TRIGGER_FILE)  # poison with exactly the bytes evaluation will load
        manifest["trigger"] = TRIGGER_FILE
    poisoned = set(int(i) for i in indices)
    covered = set(int(i) for i in attack.cover_indices(len(table), indices, rng)) - poisoned
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(("image", "caption"))
    base = final.resolve()
    for i, (img_path, caption) in enumerate(zip(table.images, table.captions)):
        if i in poisoned or i in covered:
            try:
                arr = np.asarray(model_frame(load_image(img_path), attack.frame))
            except TacleanerError as e:
                raise TacleanerError(f"{table.source}: row {i + 2}: {e}; nothing was written") from None
            image = attack.trigger(arr, i) if i in poisoned else attack.cover(arr, i)
            rel = Path("images") / f"{i:07d}.png"
            with atomic_path(out / rel) as tmp:
                from PIL import Image

                Image.fromarray(image).save(tmp, format="PNG")
            if i in poisoned:
                caption = attack.caption(caption, target, templates, rng)
            else:
                caption = attack.cover_caption(caption, i, classnames, templates)
            writer.writerow((rel.as_posix(), caption))
        else:
            writer.writerow((Path(os.path.relpath(img_path, base)).as_posix(), caption))
    write_text(out / "data.csv", buf.getvalue())
    write_json(out / "poisoned_indices.json", sorted(poisoned))
    if covered:
        write_json(out / "cover_indices.json", sorted(covered))
        manifest["cover_indices"] = "cover_indices.json"
    manifest.update({"params": attack.params(), "num_poisoned": len(poisoned), "num_cover": len(covered)})
    write_json(out / "manifest.json", manifest)
    return manifest
