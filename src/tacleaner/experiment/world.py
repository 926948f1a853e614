"""A world's inputs: its data files (the synthetic world generated once per world seed), the
checks on them (cleaning and implant sets share no image; every attack can draw its samples),
and the starting model."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from ..attacks import create_attack
from ..data.overlap import shared_images
from ..data.pairs import read_pairs
from ..data.synth import generate
from ..data.zeroshot import read_classes
from ..errors import TacleanerError
from ..fileio import read_json, write_json
from ..models import create_model, load_model
from ..models.factory import ClipBundle
from .config import ExperimentConfig
from .context import Context


def data_paths(exp: Context, w: int) -> dict[str, Path]:
    """World ``w``'s files: pretrain, implant, clean, zeroshot[, zeroshot_val] and classes."""
    data = exp.cfg.data
    if data.is_synth:
        return exp.layout.synth_files(w)
    needed = ("implant", "clean", "zeroshot", "classes") + (("pretrain",) if exp.cfg.pretrain is not None else ())
    files = data.files()
    missing = [k for k in needed if k not in files]
    if missing:
        raise TacleanerError(f"config data: missing {missing[0]!r} (or give 'synth')")
    return files


def make_data(exp: Context, w: int) -> None:
    """Generate world ``w``'s synthetic data once (rank 0), its seed shifted by ``w``."""
    if exp.cfg.data.is_synth:
        exp.dist.on_main(lambda: _make_data(exp, w))


def _make_data(exp: Context, w: int) -> None:
    if not exp.layout.world_record(w).is_file():
        synth = exp.cfg.data.synth
        synth = dataclasses.replace(synth, seed=synth.seed + w)
        exp.log(f"stage world{w}/data: generating the synthetic world (seed {synth.seed})")
        generate(exp.layout.data(w), synth, overwrite=True, progress=exp.progress and exp.jobs == 1)


def check_poisonable(exp: Context, w: int) -> None:
    """Every attack entry can draw its ``num`` samples from world ``w``'s implant set, checked
    before any stage runs: a count the data cannot give (label-consistent poisons only captions
    that name the target, and worlds differ in how many do) stops the grid at once, naming the
    entry and the world, not when that world's poisoning comes up hours later. The draw is the
    attack's own ``select``; nothing is written."""
    paths = data_paths(exp, w)
    captions = read_pairs(paths["implant"]).captions
    classes = read_classes(paths["classes"])
    for i, spec in enumerate(exp.cfg.attacks):
        try:
            target = classes.classnames[classes.index(spec.target)]
            create_attack(spec.name, **spec.params).select(captions, target, spec.num, np.random.default_rng(0))
        except TacleanerError as e:
            raise TacleanerError(f"attacks[{i}] ({spec.id}) in world {w} ({paths['implant']}): {e}") from None


def check_overlap(exp: Context, w: int) -> dict:
    """Images shared by the cleaning set and the implant set (by path and by content),
    computed once per world into ``world<W>/overlap.json``; any is an error unless the
    config says ``data.allow_overlap: true``."""
    out = exp.layout.overlap(w)

    def compute() -> None:
        if not out.is_file():
            paths = data_paths(exp, w)
            found = shared_images(read_pairs(paths["clean"]).images, read_pairs(paths["implant"]).images)
            write_json(out, {"clean": str(paths["clean"]), "implant": str(paths["implant"]), **found})

    exp.dist.on_main(compute)
    found = read_json(out)
    shared = found["same_path"] + found["same_content"]
    if shared and not exp.cfg.data.allow_overlap:
        raise TacleanerError(f"the cleaning set shares {shared} image(s) with the implant set ({found['same_path']} "
                             f"by path, {found['same_content']} by content, e.g. {found['examples'][0]}); "
                             "remove them, or set data.allow_overlap: true to run with the overlap (see "
                             f"{out})")
    if shared:
        exp.log(f"world{w}: the cleaning set shares {shared} image(s) with the implant set (allowed)")
    return found


def base_model(cfg: ExperimentConfig, w: int = 0) -> ClipBundle:
    """The starting model: the ``init`` checkpoint, or the architecture drawn with the model
    seed plus the world seed (or its pretrained tag)."""
    m = cfg.model
    if m.init:
        return load_model(m.init, m.name, name_option="model.name in the experiment config")
    torch.manual_seed(m.seed + w)
    return create_model(m.name, pretrained=m.pretrained)
