"""The stages of an experiment, as plain functions registered by name (the grid's steps name
them). Each runs in this process or in a worker, writes its own run folder, and returns at once
when that folder is complete, so an interrupted grid resumes where it stopped. Under torchrun
every process runs every stage: training and evaluation are shared, rank 0 alone writes data,
poisons and the selection."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..attacks import create_attack, load_attack, poison_dataset
from ..data.pairs import read_pairs
from ..data.zeroshot import read_classes, read_zeroshot
from ..defenses import DEFENSES, create_defense
from ..detect import detect
from ..environment import environment, precision_of
from ..errors import TacleanerError
from ..evaluate import build_classifier, evaluate
from ..fileio import atomic_path, read_json, write_json
from ..models import load_model, read_meta, save_model
from ..models.factory import input_size
from ..registry import Registry
from ..selection import TUNE, Candidate, create_rule, rule_name, select
from ..train import TrainConfig, is_complete, train
from .context import Context
from .filtering import DATA_DEFENSES, defense_entry
from .grid import Backdoor, chosen, units
from .layout import MODEL
from .settings import (
    defense_config,
    for_jobs,
    implant_config,
    pretrain_config,
    set_threads,
    shared_config,
    train_config,
)
from .world import base_model, check_overlap, data_paths

STAGES: Registry[Callable[..., None]] = Registry("stage")


@STAGES.register("pretrain")
def pretrain(exp: Context, w: int) -> None:
    """World ``w``'s clean model (pretrained, or the starting weights saved), evaluated."""
    paths, layout = data_paths(exp, w), exp.layout
    tcfg = for_jobs(pretrain_config(exp.cfg, w), exp.jobs)
    set_threads(tcfg)
    pretrained = exp.cfg.pretrain is not None
    checkpoint = layout.clean_checkpoint(w, pretrained)
    if pretrained:
        train_stage(exp, layout.pretrain(w), None, paths["pretrain"], "finetune", {}, tcfg, f"world{w}/pretrain",
                    world=w)
    elif not exp.dist.on_main(checkpoint.is_file):
        base = base_model(exp.cfg, w)  # every process draws it (the same seed), rank 0 saves it

        def save() -> None:
            with atomic_path(checkpoint) as tmp:
                save_model(base, tmp)

        exp.dist.on_main(save)
    eval_stage(exp, checkpoint, layout.clean_eval(w), paths)


@STAGES.register("poison")
def poison(exp: Context, b: Backdoor) -> None:
    """Poison the implant set (rank 0) and evaluate the clean model under the trigger."""
    unit = exp.layout.unit(b.world, exp.cfg.attacks[b.attack].id, b.implant)
    check_overlap(exp, b.world)
    set_threads(for_jobs(shared_config(exp.cfg), exp.jobs))
    exp.dist.on_main(lambda: _poison(exp, b))
    attack, target = load_attack(unit.poison)
    checkpoint = exp.layout.clean_checkpoint(b.world, exp.cfg.pretrain is not None)
    eval_stage(exp, checkpoint, unit.clean_model_eval, data_paths(exp, b.world), attack, target)


def _poison(exp: Context, b: Backdoor) -> None:
    spec = exp.cfg.attacks[b.attack]
    unit, paths = exp.layout.unit(b.world, spec.id, b.implant), data_paths(exp, b.world)
    if unit.poison_manifest.is_file():
        return
    classes = read_classes(paths["classes"])
    target = classes.classnames[classes.index(spec.target)]
    attack = create_attack(spec.name, **spec.params)
    exp.log(f"stage world{b.world}/{spec.id}/implant{b.implant}: poisoning {spec.num} pairs toward {target!r}")
    ckpt = exp.layout.clean_checkpoint(b.world, exp.cfg.pretrain is not None)
    clean = load_model(ckpt) if attack.needs_model else None
    frame = input_size(read_meta(ckpt)["model_cfg"])  # the clean model's input is the trigger's frame
    poison_dataset(paths["implant"], attack, target, spec.num, unit.poison, seed=b.implant,
                   templates=classes.templates, classnames=classes.classnames, overwrite=True, device=exp.device, log=exp.log,
                   clean_model=clean, frame=frame)


@STAGES.register("implant")
def implant(exp: Context, b: Backdoor) -> None:
    """Train the backdoor into the clean model on the poisoned pairs, then evaluate it."""
    spec = exp.cfg.attacks[b.attack]
    unit = exp.layout.unit(b.world, spec.id, b.implant)
    tcfg = for_jobs(implant_config(exp.cfg, spec, b.implant), exp.jobs)
    set_threads(tcfg)
    ckpt = train_stage(exp, unit.backdoored, exp.layout.clean_checkpoint(b.world, exp.cfg.pretrain is not None),
                       unit.poisoned_pairs, "finetune", {}, tcfg, f"world{b.world}/{spec.id}/implant{b.implant}")
    attack, target = load_attack(unit.poison)
    eval_stage(exp, ckpt, unit.backdoored_eval, data_paths(exp, b.world), attack, target)


@STAGES.register("clean")
def clean(exp: Context, b: Backdoor, k: int, c: int, folder: str = "") -> None:
    """Clean with defense ``k`` into ``<defense id>/clean<c>`` (or ``<folder>/clean<c>``)."""
    spec, d = exp.cfg.attacks[b.attack], exp.cfg.defenses[k]
    unit, paths = exp.layout.unit(b.world, spec.id, b.implant), data_paths(exp, b.world)
    tcfg = for_jobs(defense_config(exp.cfg, d, c), exp.jobs)
    set_threads(tcfg)
    out = unit.cleaned(folder or d.id, c)
    world = {p: str(paths[key]) for p, key in defense_entry(d.name).world_files.items()
             if d.params.get(p) is None and paths.get(key)}
    ckpt = train_stage(exp, out, unit.backdoored_model, paths["clean"], d.name, {**world, **d.params}, tcfg,
                       f"world{b.world}/{spec.id}/implant{b.implant} {folder or d.id} clean{c}")
    attack, target = load_attack(unit.poison)
    eval_stage(exp, ckpt, unit.cleaned_eval(folder or d.id, c), paths, attack, target)


@STAGES.register("filter")
def filter_data(exp: Context, b: Backdoor, k: int, c: int, folder: str = "") -> None:
    """A data defense: score the implant set with the backdoored model into ``<id>/detect``
    (once per backdoored model), then train the clean model again on the pairs kept, with the
    implant's settings and the clean seed, into ``<id>/clean<c>``."""
    spec, d = exp.cfg.attacks[b.attack], exp.cfg.defenses[k]
    unit, paths = exp.layout.unit(b.world, spec.id, b.implant), data_paths(exp, b.world)
    label = f"world{b.world}/{spec.id}/implant{b.implant} {folder or d.id}"
    settings = DATA_DEFENSES.create(d.name, **d.params)
    found = unit.cleaned(folder or d.id, c).parent / "detect"
    set_threads(for_jobs(shared_config(exp.cfg), exp.jobs))
    if not exp.dist.on_main((found / "summary.json").is_file):
        exp.log(f"stage {label}: scoring the implant set")
        bundle = load_model(unit.backdoored_model)
        bundle.model.to(exp.device)
        detect(bundle, read_pairs(unit.poisoned_pairs), settings.detect_config(), found, exp.device,
               **settings.cut(), poisoned=unit.poison / "poisoned_indices.json", overwrite=True)
    tcfg = for_jobs(train_config({**exp.cfg.train, "seed": c}, {**spec.implant, **d.train}, f"{d.id}.train"), exp.jobs)
    set_threads(tcfg)
    ckpt = train_stage(exp, unit.cleaned(folder or d.id, c), exp.layout.clean_checkpoint(b.world, exp.cfg.pretrain
                       is not None), found / "clean.csv", "finetune", {}, tcfg, f"{label} clean{c}")
    attack, target = load_attack(unit.poison)
    eval_stage(exp, ckpt, unit.cleaned_eval(folder or d.id, c), paths, attack, target)


@STAGES.register("train-under")
def train_under(exp: Context, b: Backdoor, k: int, c: int, folder: str = "") -> None:
    """A training-time defense: the clean model trained again on the implant's poisoned pairs
    under the defense's objective, with the implant's settings and the clean seed, into
    ``<id>/clean<c>``."""
    spec, d = exp.cfg.attacks[b.attack], exp.cfg.defenses[k]
    unit, paths = exp.layout.unit(b.world, spec.id, b.implant), data_paths(exp, b.world)
    entry = DATA_DEFENSES.get(d.name)
    params = dict(d.params)
    if "poisoned" in {f.name for f in dataclasses.fields(DEFENSES.get(entry.objective))}:
        params.setdefault("poisoned", str(unit.poison / "poisoned_indices.json"))
    tcfg = for_jobs(train_config({**exp.cfg.train, "seed": c}, {**spec.implant, **d.train}, f"{d.id}.train"), exp.jobs)
    set_threads(tcfg)
    ckpt = train_stage(exp, unit.cleaned(folder or d.id, c), exp.layout.clean_checkpoint(b.world, exp.cfg.pretrain
                       is not None), unit.poisoned_pairs, entry.objective, params, tcfg,
                       f"world{b.world}/{spec.id}/implant{b.implant} {folder or d.id} clean{c}")
    attack, target = load_attack(unit.poison)
    eval_stage(exp, ckpt, unit.cleaned_eval(folder or d.id, c), paths, attack, target)


@STAGES.register("select")
def select_group(exp: Context, group: str) -> None:
    """Apply the selection rule to a group's candidates on the tune units (validation CA
    only) into ``selection/<group>.json``; kept once written, so a resumed run keeps its choice."""
    path = exp.layout.selection(group)
    if exp.dist.on_main(path.is_file):
        return
    cfg, candidates = exp.cfg, []
    for k in cfg.groups()[group]:
        d, changes = cfg.defenses[k], []
        for u in units(cfg):
            if u.split != TUNE:
                continue
            for i in cfg.plan.implant:
                unit = exp.layout.unit(u.world, cfg.attacks[u.attack].id, i)
                ref = val_ca(unit.backdoored_eval)
                changes += [val_ca(unit.cleaned_eval(d.id, c)) - ref for c in cfg.plan.clean_seeds(i)]
        candidates.append(Candidate(d.id, tuple(changes)))
    record = select(create_rule(cfg.select), group, candidates, rule_name(cfg.select))
    exp.dist.on_main(lambda: write_json(path, record))
    exp.log(f"selection {group}: {record['chosen']} ({record['reason']})")


@STAGES.register("chosen")
def chosen_defense(exp: Context, b: Backdoor, group: str, c: int) -> None:
    """A test unit's cleaning with the candidate its group's selection chose, under the group's name."""
    k = chosen(exp.cfg, exp.layout, group)
    name = exp.cfg.defenses[k].name
    STAGES.get(DATA_DEFENSES.get(name).stage if name in DATA_DEFENSES else "clean")(exp, b, k, c, folder=group)


def val_ca(path: Path) -> float:
    res = read_json(path)
    if not res.get("val"):
        raise TacleanerError(f"{path}: no validation results; selection reads validation CA")
    return res["val"]["clean_acc"]


def train_stage(exp: Context, out: Path, init: Path | None, csv: Path, objective: str, params: dict,
                tcfg: TrainConfig, label: str, world: int = 0) -> Path:
    """Train into the run folder ``out`` unless it is complete; its model file."""
    if not exp.dist.on_main(lambda: is_complete(out)):  # one decision for every process
        exp.log(f"stage {label}: training")
        t0 = time.perf_counter()
        bundle = load_model(init) if init else base_model(exp.cfg, world)
        torch.manual_seed(tcfg.seed)
        obj = create_defense(objective, **params)
        obj.check_ready()
        train(bundle, read_pairs(csv), obj, tcfg, out, resume=True, progress=exp.progress and exp.jobs == 1)
        exp.log(f"stage {label}: done in {time.perf_counter() - t0:.0f} s")
    return out / MODEL


def eval_stage(exp: Context, ckpt: Path, out: Path, paths: dict, attack: Any = None, target: Any = None) -> dict:
    """Evaluate ``ckpt`` into ``out`` unless it exists: the test split, and the validation
    split when the data has one, through one zero-shot classifier."""
    if not exp.dist.on_main(out.is_file):
        classes = read_classes(paths["classes"])
        bundle = load_model(ckpt)
        bundle.model.to(exp.device)
        classifier = build_classifier(bundle, classes, exp.device)

        def run(split: str) -> dict:
            return evaluate(bundle, read_zeroshot(paths[split], classes), classes, attack=attack, target=target,
                            device=exp.device, batch_size=exp.cfg.eval_batch_size, classifier=classifier)

        res = {"checkpoint": str(ckpt), "split": "test", **run("zeroshot")}
        if paths.get("zeroshot_val") and Path(paths["zeroshot_val"]).is_file():
            res["val"] = run("zeroshot_val")
        res["environment"] = environment(exp.device, precision_of(exp.device))
        exp.dist.on_main(lambda: write_json(out, res))
    return read_json(out)
