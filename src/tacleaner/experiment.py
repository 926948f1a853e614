"""Experiments: a grid of attacks x defenses x seeds over shared, resumable stages.

Three seeds are kept apart (``seeds`` in the config):

- the **world** seed W: the synthetic world (added to ``data.synth.seed``), the model's random
  initialisation (added to ``model.seed``) and the pretraining data order (added to
  ``pretrain.seed``);
- the **implant** seed I: which pairs are poisoned, the trigger's draw, the implant's data order;
- the **clean** seed C: the defense's data order, augmentations and subtext draws.

``seeds: [0, 1, 2]`` is short for ``{world: [0], implant: [0, 1, 2], clean: paired}``: each
backdoored model cleaned once, with the clean seed equal to its implant seed. A mapping varies
each axis independently (the product of the lists).

Stages, each a run folder under the experiment folder, computed once and reused:
``world<W>/data`` (the synthetic world, when the config asks for it), ``world<W>/pretrain`` (a
clean CLIP), per attack and implant seed ``world<W>/<attack>/implant<I>/poison`` and
``.../backdoored``, and per defense and clean seed ``.../<defense>/clean<C>``. Every model is
evaluated once (``eval.json`` beside it) on the test split and, when the data has one, the
validation split. A stage whose output is complete is skipped, so an interrupted run resumes
where it stopped. Independent stages run in parallel with ``jobs`` > 1.

Results: ``results.json`` (one row per attack, defense and seed triple, clean-model rows
included), ``aggregate.json`` (means, intervals, paired comparisons), ``results.md`` and
``results.png``; ``environment.json`` records the machine and software.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from . import distributed
from .attacks import ATTACKS, create_attack, load_attack, poison_dataset
from .data.pairs import read_pairs
from .data.synth import ZEROSHOT_TEMPLATES, SynthConfig, class_names, generate
from .data.zeroshot import BUILTIN_CLASSES, Classes, read_classes, read_zeroshot
from .defenses import DEFENSES, create_defense
from .environment import environment, precision_of
from .errors import TacleanerError
from .evaluate import build_classifier, evaluate
from .fileio import load_yaml_file, prepare_run_dir, read_json, release_run_dir, write_json, write_yaml
from .metric_names import KEY_METRICS, METRICS
from .models import create_model, load_model, read_meta
from .models.factory import input_size
from .params import build, path_fields
from .report import CLEAN_MODEL, per_run_checks, write_reports
from .runlog import RunLog
from .scheduler import Task, run_tasks
from .selection import TEST, TUNE, Candidate, Conditions, create_rule, rule_name, select
from .train import TrainConfig, is_complete, train, with_defaults


@dataclass
class AttackSpec:
    name: str
    target: str
    num: int
    params: dict[str, Any] = field(default_factory=dict)
    implant: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides
    id: str = ""  # folder and table label; defaults to the name


@dataclass
class DefenseSpec:
    name: str
    params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides
    id: str = ""
    group: str = ""  # candidates sharing a group: the selection rule picks one on the tune set (selection.py)


@dataclass(frozen=True)
class SeedPlan:
    """The seeds of an experiment; ``clean`` None pairs each implant seed with itself."""

    world: tuple[int, ...] = (0,)
    implant: tuple[int, ...] = (0,)
    clean: tuple[int, ...] | None = None

    @classmethod
    def parse(cls, raw: Any, where: str = "seeds") -> "SeedPlan":
        def ints(value: Any, key: str) -> tuple[int, ...]:
            value = [value] if isinstance(value, int) and not isinstance(value, bool) else value
            if (not isinstance(value, list) or not value
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
                raise TacleanerError(f"{where}.{key}: expected a non-empty list of integers, got {value!r}")
            if len(set(value)) != len(value):
                raise TacleanerError(f"{where}.{key}: repeated seed in {value}")
            if any(v < 0 for v in value):
                raise TacleanerError(f"{where}.{key}: seeds are >= 0, got {value}")
            return tuple(value)

        if isinstance(raw, list):
            return cls(implant=ints(raw, "implant"))
        if isinstance(raw, dict):
            unknown = sorted(set(raw) - {"world", "implant", "clean"})
            if unknown:
                raise TacleanerError(f"{where}: unknown key {unknown[0]!r}; valid: clean, implant, world")
            clean = raw.get("clean", "paired")
            return cls(world=ints(raw.get("world", [0]), "world"), implant=ints(raw.get("implant", [0]), "implant"),
                       clean=None if clean == "paired" else ints(clean, "clean"))
        raise TacleanerError(f"{where}: expected a list of seeds or a mapping with world / implant / clean")

    def clean_seeds(self, implant: int) -> tuple[int, ...]:
        return (implant,) if self.clean is None else self.clean

    def describe(self) -> str:
        """Which seeds vary, in words, for reports."""
        parts = [f"world {_seq(self.world)}", f"implant {_seq(self.implant)}",
                 "clean = implant (paired)" if self.clean is None else f"clean {_seq(self.clean)}"]
        return "seeds: " + "; ".join(parts)


def _seq(xs: tuple[int, ...]) -> str:
    return ", ".join(map(str, xs))


@dataclass
class ExperimentConfig:
    """The parsed experiment YAML; see ``configs/demo.yaml`` for a commented example and
    ``docs/experiment-config.md`` for every key."""

    model: dict[str, Any]  # name, and optionally seed (random init), pretrained (tag) or init (file)
    data: dict[str, Any]  # {synth: {...}} or paths: pretrain, implant, clean, zeroshot, classes[, zeroshot_val]
    attacks: list[AttackSpec]
    defenses: list[DefenseSpec]
    pretrain: dict[str, Any] | None = None  # TrainConfig for clean pretraining; None skips it
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig defaults for every stage
    seeds: Any = field(default_factory=lambda: [0])  # a list, or {world, implant, clean}; see SeedPlan
    eval_batch_size: int = 256
    name: str = "experiment"
    conditions: Any = None  # {tune: {world, attacks}, test: {...}}: held-out conditions (selection.py)
    select: Any = None  # {rule, ...}: the selection rule for defense groups; default ca-budget, 2 points

    @property
    def seed_plan(self) -> SeedPlan:
        return SeedPlan.parse(self.seeds)

    @property
    def held_out(self) -> Conditions | None:
        if self.conditions is None:
            return None
        return Conditions.parse(self.conditions, [a.id for a in self.attacks])

    def groups(self) -> dict[str, list[int]]:
        """Defense groups: name -> indices of their candidates, in the order listed."""
        out: dict[str, list[int]] = {}
        for k, d in enumerate(self.defenses):
            if d.group:
                out.setdefault(d.group, []).append(k)
        return out


_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")


def _check_folder_name(value: Any, where: str) -> None:
    """Names that become folder names (run name, attack and defense ids) stay one plain path part:
    no "/", no "..", nothing that could write outside the run folder."""
    if not isinstance(value, str) or not _FOLDER_NAME.fullmatch(value) or ".." in value:
        raise TacleanerError(f"{where}: {value!r} is not a valid name (letters, digits and . _ + -, "
                             "starting with a letter or digit; it names a folder)")


def _specs(cls, items: list[dict], where: str) -> list:
    out = []
    if not isinstance(items, list):
        raise TacleanerError(f"{where}: expected a list of entries, got {items!r}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise TacleanerError(f"{where}[{i}]: expected a mapping, got {item!r}")
        spec = build(cls, item, f"{where}[{i}]")
        for key in ("params", "implant", "train"):
            if not isinstance(getattr(spec, key, {}), dict):
                raise TacleanerError(f"{where}[{i}].{key}: expected a mapping, got {getattr(spec, key)!r}")
        if getattr(spec, "num", 0) < 0:
            raise TacleanerError(f"{where}[{i}].num: must be >= 0, got {spec.num}")
        spec.id = spec.id or spec.name
        _check_folder_name(spec.id, f"{where}[{i}].id")
        out.append(spec)
    if not out and cls is AttackSpec:
        raise TacleanerError(f"{where}: empty list; give at least one attack (defenses may be empty)")
    ids = [s.id for s in out]
    if len(set(ids)) != len(ids):
        raise TacleanerError(f"{where}: duplicate entries; give each an 'id'")
    if cls is DefenseSpec and any(i in ("none", CLEAN_MODEL) for i in ids):
        raise TacleanerError(f"{where}: 'none' and {CLEAN_MODEL!r} are reserved row names; use another id")
    return out


def load_config(path: str | Path) -> tuple[ExperimentConfig, dict]:
    """Parse and validate an experiment YAML; returns the config and the raw dict."""
    path = Path(path)
    raw = load_yaml_file(path)
    raw = resolve_paths(raw, path.parent)
    return parse_config(raw, str(path)), raw


def resolve_paths(raw: Any, base: Path) -> Any:
    """Relative file paths of a config (data files, ``model.init``, path parameters such as
    SSBA's ``encoder``) made absolute against ``base``, the YAML's own folder."""
    if not isinstance(raw, dict):
        return raw
    raw = copy.deepcopy(raw)

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value and value not in BUILTIN_CLASSES and not Path(value).is_absolute():
            return str((base / value).resolve())
        return value

    if isinstance(raw.get("data"), dict):
        for key in DATA_PATHS:
            if key in raw["data"]:
                raw["data"][key] = fix(raw["data"][key])
    if isinstance(raw.get("model"), dict) and raw["model"].get("init"):
        raw["model"]["init"] = fix(raw["model"]["init"])
    for key, registry in (("attacks", ATTACKS), ("defenses", DEFENSES)):
        for item in raw.get(key) or []:
            if isinstance(item, dict) and isinstance(item.get("params"), dict) and item.get("name") in registry:
                for name in path_fields(registry.get(item["name"])):
                    if item["params"].get(name):
                        item["params"][name] = fix(item["params"][name])
    return raw


def parse_config(raw: Any, where: str = "config") -> ExperimentConfig:
    if not isinstance(raw, dict):
        raise TacleanerError(f"{where}: expected a mapping at the top level")
    raw = copy.deepcopy(raw)
    known = {f.name for f in dataclasses.fields(ExperimentConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise TacleanerError(f"{where}: unknown key {unknown[0]!r}; valid: {', '.join(sorted(known))}")
    for key in ("model", "data", "attacks", "defenses"):
        if key not in raw:
            raise TacleanerError(f"{where}: missing required key {key!r}")
    if "name" in raw:
        _check_folder_name(raw["name"], f"{where}: name")
    raw["attacks"] = _specs(AttackSpec, raw["attacks"], f"{where}: attacks")
    raw["defenses"] = _specs(DefenseSpec, raw["defenses"], f"{where}: defenses")
    cfg = ExperimentConfig(**raw)
    _check_model_and_data(cfg, where)
    plan = SeedPlan.parse(cfg.seeds, f"{where}: seeds")
    _check_held_out(cfg, where)
    for stage in [cfg.pretrain or {}, cfg.train] + [a.implant for a in cfg.attacks] + [d.train for d in cfg.defenses]:
        _train_config({}, stage, where)
    worlds = plan.world if cfg.conditions is None else cfg.held_out.worlds
    if len(worlds) > 1 and "synth" not in cfg.data and cfg.pretrain is None and (
            cfg.model.get("init") or cfg.model.get("pretrained")):
        raise TacleanerError(f"{where}: seeds.world varies the synthetic world, the random init and pretraining; "
                             "this config has none of them (fixed data and starting weights)")
    # Fail now, not an hour in, on names and parameters that do not exist.
    for a in cfg.attacks:
        create_attack(a.name, **a.params)
    for d in cfg.defenses:
        create_defense(d.name, **d.params)
    return cfg


def _check_held_out(cfg: ExperimentConfig, where: str) -> None:
    """``conditions``, ``select`` and defense groups: consistent with each other and the data."""
    if cfg.conditions is not None:
        try:
            Conditions.parse(cfg.conditions, [a.id for a in cfg.attacks])
        except TacleanerError as e:
            raise TacleanerError(f"{where}: {e}") from None
        if isinstance(cfg.seeds, dict) and "world" in cfg.seeds:
            raise TacleanerError(f"{where}: seeds.world and conditions both name world seeds; give the worlds in "
                                 "conditions.tune / conditions.test only")
    groups = cfg.groups()
    if cfg.select is not None and not groups:
        raise TacleanerError(f"{where}: select: no defense has a 'group' to select in")
    if not groups:
        return
    if cfg.conditions is None:
        raise TacleanerError(f"{where}: defenses with a 'group' are candidates chosen on a tune set; "
                             "give conditions: {tune: ..., test: ...}")
    create_rule(cfg.select, f"{where}: select")
    ids = {d.id for d in cfg.defenses}
    for g in groups:
        _check_folder_name(g, f"{where}: defenses group")
        if g in ids or g in ("none", CLEAN_MODEL):
            raise TacleanerError(f"{where}: defenses group {g!r} is also a defense id; a group names the chosen "
                                 "setting's rows, so give it a name of its own")
    synth = cfg.data.get("synth")
    has_val = (build(SynthConfig, synth or {}, "data.synth").zeroshot_val_per_class > 0 if "synth" in cfg.data
               else bool(cfg.data.get("zeroshot_val")))
    if not has_val:
        raise TacleanerError(f"{where}: selection reads validation CA; the data has no validation split "
                             "(data.zeroshot_val, or data.synth.zeroshot_val_per_class > 0)")


MODEL_KEYS = ("name", "seed", "pretrained", "init")
DATA_PATHS = ("pretrain", "implant", "clean", "zeroshot", "zeroshot_val", "classes")


def _check_model_and_data(cfg: ExperimentConfig, where: str) -> None:
    for key, value, valid in (("model", cfg.model, MODEL_KEYS),
                              ("data", cfg.data, DATA_PATHS + ("synth", "allow_overlap"))):
        if not isinstance(value, dict):
            raise TacleanerError(f"{where}: {key}: expected a mapping, got {value!r}")
        unknown = sorted(set(value) - set(valid))
        if unknown:
            raise TacleanerError(f"{where}: {key}: unknown key {unknown[0]!r}; valid: {', '.join(valid)}")
    if not isinstance(cfg.model.get("name"), str) and not cfg.model.get("init"):
        raise TacleanerError(f"{where}: model: give a 'name' (see `tacleaner models`) or an 'init' checkpoint")
    if isinstance(cfg.model.get("name"), str) and not cfg.model.get("init"):
        from .models.factory import model_config

        try:
            model_config(cfg.model["name"])
        except TacleanerError as e:
            raise TacleanerError(f"{where}: model: {e}") from None
    if cfg.model.get("init") and not Path(cfg.model["init"]).is_file():
        raise TacleanerError(f"{where}: model.init {cfg.model['init']}: checkpoint not found")
    if "seed" in cfg.model and (not isinstance(cfg.model["seed"], int) or isinstance(cfg.model["seed"], bool)
                                or cfg.model["seed"] < 0):
        raise TacleanerError(f"{where}: model.seed={cfg.model['seed']!r}: expected an integer >= 0")
    if not isinstance(cfg.data.get("allow_overlap", False), bool):
        raise TacleanerError(f"{where}: data.allow_overlap={cfg.data['allow_overlap']!r}: expected true or false")
    # Targets name a class of the zero-shot classes: checked now, not after pretraining.
    if "synth" in cfg.data:
        if set(cfg.data) - {"allow_overlap"} != {"synth"}:
            raise TacleanerError(f"{where}: data: give either 'synth' or file paths, not both")
        world = build(SynthConfig, cfg.data["synth"] or {}, f"{where}: data.synth")
        for i, a in enumerate(cfg.attacks):
            if a.num > world.implant:
                raise TacleanerError(f"{where}: attacks[{i}].num={a.num}: more than the world's {world.implant} "
                                     "implant pairs")
        classes = Classes(class_names(), ZEROSHOT_TEMPLATES)
    else:
        for key, value in cfg.data.items():
            if key in DATA_PATHS and not (key == "classes" and value in BUILTIN_CLASSES) and not Path(str(value)).exists():
                raise TacleanerError(f"{where}: data.{key} {value}: file not found")
            if key in ("pretrain", "implant", "clean", "classes") and Path(str(value)).is_dir():
                raise TacleanerError(f"{where}: data.{key} {value}: a folder; give the CSV (JSON for classes) file")
        classes = read_classes(str(cfg.data.get("classes", "imagenet")))
    for i, a in enumerate(cfg.attacks):
        try:
            classes.index(a.target)
        except TacleanerError as e:
            raise TacleanerError(f"{where}: attacks[{i}].target: {e}") from None
    for key in ("eval_batch_size",):
        value = getattr(cfg, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TacleanerError(f"{where}: {key}={value!r}: expected a positive integer")


def _train_config(base: dict, override: dict, where: str) -> TrainConfig:
    if not isinstance(override or {}, dict):
        raise TacleanerError(f"{where}: expected a mapping of training settings, got {override!r}")
    return build(TrainConfig, {**base, **(override or {})}, f"{where}: training settings")


class Experiment:
    """Runs the stages of one experiment folder; see the module docstring."""

    def __init__(self, cfg: ExperimentConfig, raw: dict, out: str | Path, *, resume: bool = False,
                 overwrite: bool = False, progress: bool = True, jobs: int = 1) -> None:
        self.cfg, self.raw, self.progress, self.jobs = cfg, raw, progress, max(1, int(jobs))
        self.held = cfg.held_out
        self.plan = cfg.seed_plan if self.held is None else dataclasses.replace(cfg.seed_plan, world=self.held.worlds)
        # Under torchrun every process walks the same stages in the same order: training and
        # evaluation are shared (DDP, sharded images); rank 0 alone writes data, poisons and reports.
        self.dist, self.device = distributed.setup(cfg.train.get("device", "auto"))
        if self.dist.enabled and self.jobs > 1:
            raise TacleanerError(f"--jobs {self.jobs} with torchrun: the processes share each stage; use --jobs 1")

        def start() -> Path:
            folder = prepare_run_dir(out, resume=resume, overwrite=overwrite)
            saved = folder / "config.yaml"
            if saved.is_file() and yaml.safe_load(saved.read_text()) != raw:
                release_run_dir(folder)
                raise TacleanerError(f"{saved}: the experiment config changed since this folder was started; "
                                     "use a new --out or --overwrite")
            write_yaml(saved, raw)
            return folder

        self.out = self.dist.on_main(start)  # locked by rank 0 (stage folders inside hold locks of their own)

    def close(self) -> None:
        """Give back the experiment folder's lock (workers never take it: they write stage folders)."""
        if self.dist.is_main:
            release_run_dir(self.out)

    def log(self, msg: str) -> None:
        """A line to the experiment's log.txt and, with progress shown, to the console (rank 0 only)."""
        RunLog(self.out / "log.txt", quiet=not self.progress, enabled=self.dist.is_main)(msg)

    # -- folders and settings ---------------------------------------------------------------
    def world_dir(self, w: int) -> Path:
        return self.out / f"world{w}"

    def unit_dir(self, w: int, spec: AttackSpec, i: int) -> Path:
        return self.world_dir(w) / spec.id / f"implant{i}"

    def units(self) -> list[tuple[int, int, str | None]]:
        """(world, attack index, split) of every backdoored-model unit: tune units before test
        units; split None without held-out conditions."""
        ids = [a.id for a in self.cfg.attacks]
        if self.held is None:
            return [(w, a, None) for w in self.plan.world for a in range(len(ids))]
        return [(w, ids.index(name), split) for split, cs in ((TUNE, self.held.tune), (TEST, self.held.test))
                for w, name in cs.units()]

    def selection_path(self, group: str) -> Path:
        return self.out / "selection" / f"{group}.json"

    def data_paths(self, w: int) -> dict[str, Path]:
        d = self.cfg.data
        if "synth" in d:
            root = self.world_dir(w) / "data"
            files = {k: root / f"{k}.csv" for k in ("pretrain", "implant", "clean", "zeroshot", "zeroshot_val")}
            return files | {"classes": root / "classes.json"}
        needed = ("implant", "clean", "zeroshot", "classes") + (("pretrain",) if self.cfg.pretrain is not None else ())
        missing = [k for k in needed if k not in d]
        if missing:
            raise TacleanerError(f"config data: missing {missing[0]!r} (or give 'synth')")
        return {k: Path(v) for k, v in d.items() if k in DATA_PATHS}

    def make_data(self, w: int) -> None:
        if "synth" not in self.cfg.data:
            return
        self.dist.on_main(lambda: self._make_data(w))

    def _make_data(self, w: int) -> None:
        root = self.world_dir(w) / "data"
        if not (root / "world.json").is_file():
            synth = dict(self.cfg.data["synth"])
            synth["seed"] = synth.get("seed", 0) + w
            self.log(f"stage world{w}/data: generating the synthetic world (seed {synth['seed']})")
            generate(root, build(SynthConfig, synth, "data.synth"), overwrite=True, progress=self.progress and self.jobs == 1)

    def stage_threads(self, tcfg: TrainConfig) -> TrainConfig:
        """Unset threads under parallel jobs: share the cores (results then depend on ``jobs``;
        fix ``threads`` in the config for results that do not)."""
        if tcfg.threads == 0 and self.jobs > 1:
            return dataclasses.replace(tcfg, threads=max(1, (os.cpu_count() or 1) // self.jobs))
        return tcfg

    def pretrain_config(self, w: int) -> TrainConfig:
        tcfg = _train_config(self.cfg.train, self.cfg.pretrain or {}, "pretrain")
        return self.stage_threads(dataclasses.replace(tcfg, seed=tcfg.seed + w))

    def clean_checkpoint(self, w: int) -> Path:
        if self.cfg.pretrain is not None:
            return self.world_dir(w) / "pretrain" / "model.safetensors"
        return self.world_dir(w) / "base.safetensors"

    # -- stages (each runs in this process or in a worker) ---------------------------------
    def stage_pretrain(self, w: int) -> None:
        paths = self.data_paths(w)
        tcfg = self.pretrain_config(w)
        _set_threads(tcfg)
        if self.cfg.pretrain is not None:
            self.stage_train(self.world_dir(w) / "pretrain", None, paths["pretrain"], "finetune", {}, tcfg,
                             f"world{w}/pretrain", world=w)
        elif not self.dist.on_main(lambda: self.clean_checkpoint(w).is_file()):
            from .fileio import atomic_path
            from .models import save_model

            base = self.base_model(w)  # every process draws it (the same seed), rank 0 saves it

            def save() -> None:
                with atomic_path(self.clean_checkpoint(w)) as tmp:
                    save_model(base, tmp)

            self.dist.on_main(save)
        self.stage_eval(self.clean_checkpoint(w), self.world_dir(w) / "pretrain_eval.json", paths)

    def check_overlap(self, w: int) -> dict:
        """Images shared by the cleaning set and the implant set (by path and by content),
        computed once per world into ``world<W>/overlap.json``; any is an error unless the
        config says ``data.allow_overlap: true``."""
        out = self.world_dir(w) / "overlap.json"

        def compute() -> None:
            if not out.is_file():
                from .data.overlap import shared_images

                paths = self.data_paths(w)
                found = shared_images(read_pairs(paths["clean"]).images, read_pairs(paths["implant"]).images)
                write_json(out, {"clean": str(paths["clean"]), "implant": str(paths["implant"]), **found})

        self.dist.on_main(compute)
        found = read_json(out)
        shared = found["same_path"] + found["same_content"]
        if shared and not self.cfg.data.get("allow_overlap", False):
            raise TacleanerError(f"the cleaning set shares {shared} image(s) with the implant set ({found['same_path']} "
                                 f"by path, {found['same_content']} by content, e.g. {found['examples'][0]}); "
                                 "remove them, or set data.allow_overlap: true to run with the overlap (see "
                                 f"{out})")
        if shared:
            self.log(f"world{w}: the cleaning set shares {shared} image(s) with the implant set (allowed)")
        return found

    def stage_poison(self, w: int, a: int, i: int) -> None:
        spec = self.cfg.attacks[a]
        root, paths = self.unit_dir(w, spec, i), self.data_paths(w)
        self.check_overlap(w)
        _set_threads(self.stage_threads(_train_config(self.cfg.train, {}, "train")))
        self.dist.on_main(lambda: self._poison(w, a, i))
        attack, target = load_attack(root / "poison")
        self.stage_eval(self.clean_checkpoint(w), root / "clean_model_eval.json", paths, attack, target)

    def _poison(self, w: int, a: int, i: int) -> None:
        spec = self.cfg.attacks[a]
        root, paths = self.unit_dir(w, spec, i), self.data_paths(w)
        if not (root / "poison" / "manifest.json").is_file():
            classes = read_classes(paths["classes"])
            target = classes.classnames[classes.index(spec.target)]
            attack = create_attack(spec.name, **spec.params)
            self.log(f"stage world{w}/{spec.id}/implant{i}: poisoning {spec.num} pairs toward {target!r}")
            ckpt = self.clean_checkpoint(w)
            clean = load_model(ckpt) if attack.needs_model else None
            frame = input_size(read_meta(ckpt)["model_cfg"])  # the clean model's input is the trigger's frame
            poison_dataset(paths["implant"], attack, target, spec.num, root / "poison", seed=i,
                           templates=classes.templates, overwrite=True, device=self.device, log=self.log,
                           clean_model=clean, frame=frame)

    def implant_config(self, spec: AttackSpec, i: int) -> TrainConfig:
        return self.stage_threads(_train_config({**self.cfg.train, "seed": i}, spec.implant, f"{spec.id}.implant"))

    def stage_implant(self, w: int, a: int, i: int) -> None:
        spec = self.cfg.attacks[a]
        root, paths = self.unit_dir(w, spec, i), self.data_paths(w)
        tcfg = self.implant_config(spec, i)
        _set_threads(tcfg)
        ckpt = self.stage_train(root / "backdoored", self.clean_checkpoint(w), root / "poison" / "data.csv",
                                "finetune", {}, tcfg, f"world{w}/{spec.id}/implant{i}")
        attack, target = load_attack(root / "poison")
        self.stage_eval(ckpt, root / "backdoored" / "eval.json", paths, attack, target)

    def defense_config(self, d: DefenseSpec, c: int) -> TrainConfig:
        settings = {**self.cfg.train, "seed": c, **(d.train if isinstance(d.train, dict) else {})}
        base = with_defaults(DEFENSES.get(d.name).train_defaults, settings)  # the defense's own defaults lowest
        return self.stage_threads(_train_config(base, d.train, f"{d.id}.train"))

    def stage_defense(self, w: int, a: int, i: int, k: int, c: int, folder: str = "") -> None:
        """Clean with defense ``k`` into ``<defense id>/clean<c>`` (or ``<folder>/clean<c>``)."""
        spec, d = self.cfg.attacks[a], self.cfg.defenses[k]
        root, paths = self.unit_dir(w, spec, i), self.data_paths(w)
        tcfg = self.defense_config(d, c)
        _set_threads(tcfg)
        out = root / (folder or d.id) / f"clean{c}"
        world = {p: str(paths[key]) for p, key in DEFENSES.get(d.name).world_files.items()
                 if d.params.get(p) is None and paths.get(key)}
        ckpt = self.stage_train(out, root / "backdoored" / "model.safetensors", paths["clean"], d.name,
                                {**world, **d.params},
                                tcfg, f"world{w}/{spec.id}/implant{i} {folder or d.id} clean{c}")
        attack, target = load_attack(root / "poison")
        self.stage_eval(ckpt, out / "eval.json", paths, attack, target)

    def stage_select(self, group: str) -> None:
        """Apply the selection rule to a group's candidates on the tune units (validation CA
        only) into ``selection/<group>.json``; kept once written, so a resumed run keeps its choice."""
        path = self.selection_path(group)
        if self.dist.on_main(path.is_file):
            return
        candidates = []
        for k in self.cfg.groups()[group]:
            d, changes = self.cfg.defenses[k], []
            for w, a, split in self.units():
                if split != TUNE:
                    continue
                for i in self.plan.implant:
                    root = self.unit_dir(w, self.cfg.attacks[a], i)
                    ref = _val_ca(root / "backdoored" / "eval.json")
                    changes += [_val_ca(root / d.id / f"clean{c}" / "eval.json") - ref for c in self.plan.clean_seeds(i)]
            candidates.append(Candidate(d.id, tuple(changes)))
        record = select(create_rule(self.cfg.select), group, candidates, rule_name(self.cfg.select))
        self.dist.on_main(lambda: write_json(path, record))
        self.log(f"selection {group}: {record['chosen']} ({record['reason']})")

    def chosen(self, group: str) -> int:
        """Index of the defense entry the selection chose for ``group``."""
        chosen = read_json(self.selection_path(group))["chosen"]
        return next(k for k in self.cfg.groups()[group] if self.cfg.defenses[k].id == chosen)

    def stage_chosen(self, w: int, a: int, i: int, group: str, c: int) -> None:
        self.stage_defense(w, a, i, self.chosen(group), c, folder=group)

    def stage_train(self, out: Path, init: Path | None, csv: Path, objective: str, params: dict,
                    tcfg: TrainConfig, label: str, world: int = 0) -> Path:
        if not self.dist.on_main(lambda: is_complete(out)):  # one decision for every process
            self.log(f"stage {label}: training")
            t0 = time.perf_counter()
            bundle = load_model(init) if init else self.base_model(world)
            torch.manual_seed(tcfg.seed)
            obj = create_defense(objective, **params)
            obj.check_ready()
            train(bundle, read_pairs(csv), obj, tcfg, out, resume=True,
                  progress=self.progress and self.jobs == 1)
            self.log(f"stage {label}: done in {time.perf_counter() - t0:.0f} s")
        return out / "model.safetensors"

    def base_model(self, w: int = 0):
        m = self.cfg.model
        if m.get("init"):
            return load_model(m["init"], m.get("name"), name_option="model.name in the experiment config")
        torch.manual_seed(m.get("seed", 0) + w)
        return create_model(m["name"], pretrained=m.get("pretrained"))

    def stage_eval(self, ckpt: Path, out: Path, paths: dict, attack=None, target=None) -> dict:
        if not self.dist.on_main(out.is_file):
            classes = read_classes(paths["classes"])
            bundle = load_model(ckpt)
            bundle.model.to(self.device)
            classifier = build_classifier(bundle, classes, self.device)

            def run(split: str) -> dict:  # both splits share the model's zero-shot classifier
                return evaluate(bundle, read_zeroshot(paths[split], classes), classes, attack=attack, target=target,
                                device=self.device, batch_size=self.cfg.eval_batch_size, classifier=classifier)

            res = {"checkpoint": str(ckpt), "split": "test", **run("zeroshot")}
            if paths.get("zeroshot_val") and Path(paths["zeroshot_val"]).is_file():
                res["val"] = run("zeroshot_val")
            res["environment"] = environment(self.device, precision_of(self.device))
            self.dist.on_main(lambda: write_json(out, res))
        return read_json(out)

    # -- the grid ---------------------------------------------------------------------------
    def tasks(self) -> list[Task]:
        """Every stage of the grid with its dependencies, in a good starting order."""
        plan, out = self.plan, []
        groups = self.cfg.groups()
        tuned: dict[str, list[str]] = {g: [] for g in groups}  # the stages each selection reads (filled below)
        # A world's pretraining is listed just before its first unit, so that among ready stages
        # the scheduler finishes whole worlds in order (tune worlds first: the selection can run
        # while test worlds pretrain) instead of pretraining every world before any cleaning.
        order = sorted(range(len(self.cfg.defenses)), key=lambda k: -self.defense_cost(k))
        def selections() -> list[Task]:  # once the tune units have filled ``tuned``
            return [Task(f"select/{g}", _run_stage, (self, "stage_select", (g,)), tuple(tuned[g])) for g in groups]

        for w, a, split in self.units():
            if split == TEST and groups and not any(t.key.startswith("select/") for t in out):
                out += selections()  # right after the tune units: they unblock the test set
            if not any(t.key == f"pretrain/{w}" for t in out):
                out.append(Task(f"pretrain/{w}", _run_stage, (self, "stage_pretrain", (w,))))
            spec = self.cfg.attacks[a]
            for i in plan.implant:
                unit = f"{w}/{spec.id}/{i}"
                out.append(Task(f"poison/{unit}", _run_stage, (self, "stage_poison", (w, a, i)), (f"pretrain/{w}",)))
                out.append(Task(f"implant/{unit}", _run_stage, (self, "stage_implant", (w, a, i)),
                                (f"poison/{unit}",)))
                for c in plan.clean_seeds(i):
                    for k in order:
                        d = self.cfg.defenses[k]
                        if d.group and split == TEST:
                            continue
                        key = f"defense/{unit}/{d.id}/{c}"
                        out.append(Task(key, _run_stage, (self, "stage_defense", (w, a, i, k, c)), (f"implant/{unit}",)))
                        if d.group:
                            tuned[d.group].append(key)
                    if split == TEST:
                        for g in groups:
                            out.append(Task(f"defense/{unit}/{g}/{c}", _run_stage, (self, "stage_chosen", (w, a, i, g, c)),
                                            (f"implant/{unit}", f"select/{g}")))
        return out

    def defense_cost(self, k: int) -> float:
        """A defense stage's relative cost: the objective's cost per pair times its epochs."""
        d = self.cfg.defenses[k]
        return DEFENSES.get(d.name).relative_cost * self.defense_config(d, 0).epochs

    def run(self) -> list[dict[str, Any]]:
        for w in self.plan.world:
            self.make_data(w)
        self.log(f"{self.plan.describe()}; {self.jobs} parallel job(s)")
        run_tasks(self.tasks(), self.jobs)
        return self.dist.on_main(self.report)

    def report(self) -> list[dict[str, Any]]:
        rows, cleans = self.collect()
        write_json(self.out / "results.json", rows)
        write_json(self.out / "environment.json", environment(self.device, precision_of(self.device)))
        if self.held is None:
            table = write_reports(rows, self.out, cleans, self.plan.describe())
        else:  # the report shows the test set; the tune set and the selection sit beside it
            seeds = f"{self.plan.describe()}; {self.held.describe()}"
            by_split = {s: ([r for r in rows if r["split"] == s],
                            [c for c in cleans if c["world_seed"] in getattr(self.held, s).world]) for s in (TUNE, TEST)}
            (tune, tune_cleans), (test, test_cleans) = by_split[TUNE], by_split[TEST]
            write_reports(tune, self.out / "tune", tune_cleans, seeds + " (this page: the tune set)")
            records = [read_json(self.selection_path(g)) for g in self.cfg.groups()]
            table = write_reports(test, self.out, test_cleans, seeds + " (this page: the test set)",
                                  extra=selection_markdown(records, tune, test))
        self.log("\n" + table)
        return rows

    @classmethod
    def reader(cls, cfg: ExperimentConfig, out: str | Path) -> "Experiment":
        """An Experiment over an existing folder for reading its results only: no folder is made
        or locked, nothing runs (a report of a grid still running, :meth:`collect`)."""
        exp = cls.__new__(cls)
        exp.cfg, exp.held, exp.out, exp.jobs, exp.progress = cfg, cfg.held_out, Path(out), 1, False
        exp.plan = cfg.seed_plan if exp.held is None else dataclasses.replace(cfg.seed_plan, world=exp.held.worlds)
        return exp

    def collect(self, complete_only: bool = False) -> tuple[list[dict], list[dict]]:
        """Rows from every stage's ``eval.json``: the clean model under each trigger, the
        backdoored model (``none``) and each defense; and the clean models' own evaluations.
        ``complete_only``: leave out the units (and worlds) whose stages have not all finished
        instead of failing on them (a grid still running)."""
        rows, cleans = [], []
        for w in self.plan.world:
            if complete_only and not (self.world_dir(w) / "pretrain_eval.json").is_file():
                continue
            cleans.append({"world_seed": w, **_metrics(read_json(self.world_dir(w) / "pretrain_eval.json"))})
        groups = [g for g in self.cfg.groups() if not complete_only or self.selection_path(g).is_file()]
        chosen = {g: self.cfg.defenses[self.chosen(g)].id for g in groups}
        for w, a, split in self.units():
            if complete_only and not self._unit_complete(w, a, split, chosen):
                continue
            spec = self.cfg.attacks[a]
            # On test units a group's rows carry the group's name (and the chosen candidate).
            runs = [(d.id, d.id, None) for d in self.cfg.defenses if not (d.group and split == TEST)]
            runs += [(g, g, cid) for g, cid in chosen.items()] if split == TEST else []
            extra = {} if self.held is None else {"split": split}
            for i in self.plan.implant:
                root = self.unit_dir(w, spec, i)
                rows.append({**self.row(spec.id, CLEAN_MODEL, (w, i, None), read_json(root / "clean_model_eval.json")),
                             **extra})
                rows.append({**self.row(spec.id, "none", (w, i, None), read_json(root / "backdoored" / "eval.json")),
                             **extra})
                for label, folder, cid in runs:
                    for c in self.plan.clean_seeds(i):
                        row = self.row(spec.id, label, (w, i, c), read_json(root / folder / f"clean{c}" / "eval.json"))
                        rows.append({**row, **extra, **({"selected": cid} if cid else {})})
        return rows, cleans

    def _unit_complete(self, w: int, a: int, split: str | None, chosen: dict[str, str]) -> bool:
        folders = [d.id for d in self.cfg.defenses if not (d.group and split == TEST)]
        if split == TEST:
            if len(chosen) < len(self.cfg.groups()):
                return False
            folders += list(chosen)
        for i in self.plan.implant:
            root = self.unit_dir(w, self.cfg.attacks[a], i)
            files = [root / "clean_model_eval.json", root / "backdoored" / "eval.json"]
            files += [root / f / f"clean{c}" / "eval.json" for f in folders for c in self.plan.clean_seeds(i)]
            if not all(p.is_file() for p in files):
                return False
        return True

    @staticmethod
    def row(attack: str, defense: str, seeds: tuple[int, int, int | None], res: dict) -> dict:
        w, i, c = seeds
        return {"attack": attack, "defense": defense, "world_seed": w, "implant_seed": i, "clean_seed": c,
                **_metrics(res), "target": res.get("target"), "checkpoint": res["checkpoint"]}


def _metrics(res: dict) -> dict:
    """Test metrics, and validation metrics prefixed ``val_`` (None where not measured); a
    dual-key attack's ASR under each key alone where measured."""
    val = res.get("val") or {}
    extra = {m: res[m] for m in KEY_METRICS if res.get(m) is not None}
    return {**{m: res.get(m) for m in METRICS}, **{f"val_{m}": val.get(m) for m in METRICS}, **extra}


def _val_ca(path: Path) -> float:
    res = read_json(path)
    if not res.get("val"):
        raise TacleanerError(f"{path}: no validation results; selection reads validation CA")
    return res["val"]["clean_acc"]


def selection_markdown(records: list[dict], tune_rows: list[dict], test_rows: list[dict]) -> str:
    """What each selection read and chose, then every defense's per-run checks on the tune set
    (for a group: its chosen candidate) beside those on the test set."""
    lines = ["Selection on the tune set (reads validation CA of the cleaned and backdoored models only; "
             "never ASR or the trigger); val CA change in points, worst / mean over the tune runs:", "",
             "| group | candidate | val CA change, worst | mean | chosen |", "|---|---|---:|---:|---|"]
    chosen = {r["chosen"]: r["group"] for r in records}
    for r in records:
        for c in r["candidates"]:
            mark = f"**chosen** ({r['rule']}: {r['reason']})" if c["id"] == r["chosen"] else ""
            lines.append(f"| {r['group']} | {c['id']} | {100 * c['worst']:+.1f} | {100 * c['mean']:+.1f} | {mark} |")
    tune = {(c["attack"], chosen.get(c["defense"], c["defense"])): c for c in per_run_checks(tune_rows)}
    test = {(c["attack"], c["defense"]): c for c in per_run_checks(test_rows)}
    lines += ["", "Per-run checks (ASR@1 halved and CA within 5 points, test split of each world) on the tune set "
                  "and on the held-out test set:", "",
              "| attack | defense | tune: both | tune: worst CA change | test: ASR@1 halved | test: CA within 5 | "
              "test: both | test: worst ASR@1 % | test: worst CA change |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for key, t in test.items():
        u = tune.get(key)
        tune_cells = (f"{u['both']}/{u['n']} | {100 * u['worst_ca_change']:+.1f}" if u else "— | —")
        lines.append(f"| {key[0]} | {key[1]} | {tune_cells} | {t['asr_halved']}/{t['n']} | {t['ca_kept']}/{t['n']} | "
                     f"{t['both']}/{t['n']} | {100 * t['worst_asr']:.1f} | {100 * t['worst_ca_change']:+.1f} |")
    return "\n".join(lines) + "\n"


def _set_threads(tcfg: TrainConfig) -> None:
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)


def _run_stage(exp: Experiment, method: str, args: tuple) -> None:
    """Module-level entry for worker processes: ``exp.<method>(*args)``."""
    getattr(exp, method)(*args)
