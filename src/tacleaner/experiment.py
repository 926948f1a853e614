"""Experiments: a grid of attacks x defenses x seeds over shared, resumable stages.

Stages, each a run folder under the experiment folder, computed once and reused:
``data/`` (the synthetic world, when the config asks for it), ``pretrain/`` (a clean CLIP),
then per attack and seed ``<attack>/seed<S>/poison`` and ``.../implant`` (the backdoored
model), and per defense ``.../<defense>/`` (the cleaned model). Every model is evaluated once
(``eval.json`` beside it). A stage whose output is complete is skipped, so an interrupted run
resumes where it stopped. Results: ``results.json`` (one row per attack, defense and seed),
``results.md`` and ``results.png``.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from .attacks import create_attack, load_attack, poison_dataset
from .data.pairs import read_pairs
from .data.synth import SynthConfig, generate
from .data.zeroshot import read_classes, read_zeroshot
from .defenses import create_defense
from .errors import TacleanerError
from .evaluate import evaluate
from .fileio import prepare_run_dir, read_json, write_json, write_yaml
from .models import create_model, load_model
from .report import write_reports
from .train import TrainConfig, is_complete, resolve_device, train


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


@dataclass
class ExperimentConfig:
    """The parsed experiment YAML; see ``configs/demo.yaml`` for a commented example."""

    model: dict[str, Any]  # name, and optionally pretrained (tag) or init (checkpoint file)
    data: dict[str, Any]  # either {synth: {...}} or paths: pretrain, implant, clean, zeroshot, classes
    attacks: list[AttackSpec]
    defenses: list[DefenseSpec]
    pretrain: dict[str, Any] | None = None  # TrainConfig for clean pretraining; None skips it
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig defaults for every stage
    seeds: list[int] = field(default_factory=lambda: [0])
    eval_batch_size: int = 256
    name: str = "experiment"


def _specs(cls, items: list[dict], where: str) -> list:
    out = []
    for i, item in enumerate(items or []):
        try:
            spec = cls(**item)
        except TypeError as e:
            raise TacleanerError(f"{where}[{i}]: {e}") from None
        spec.id = spec.id or spec.name
        out.append(spec)
    ids = [s.id for s in out]
    if len(set(ids)) != len(ids):
        raise TacleanerError(f"{where}: duplicate entries; give each an 'id'")
    return out


def load_config(path: str | Path) -> tuple[ExperimentConfig, dict]:
    """Parse and validate an experiment YAML; returns the config and the raw dict."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TacleanerError(f"{path}: file not found") from None
    except yaml.YAMLError as e:
        raise TacleanerError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    return parse_config(raw, str(path)), raw


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
    raw["attacks"] = _specs(AttackSpec, raw["attacks"], f"{where}: attacks")
    raw["defenses"] = _specs(DefenseSpec, raw["defenses"], f"{where}: defenses")
    cfg = ExperimentConfig(**raw)
    for stage in [cfg.pretrain or {}, cfg.train] + [a.implant for a in cfg.attacks] + [d.train for d in cfg.defenses]:
        _train_config({}, stage, where)
    # Fail now, not an hour in, on names and parameters that do not exist.
    for a in cfg.attacks:
        create_attack(a.name, **a.params)
    for d in cfg.defenses:
        create_defense(d.name, **d.params)
    return cfg


def _train_config(base: dict, override: dict, where: str) -> TrainConfig:
    merged = {**base, **(override or {})}
    valid = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(merged) - valid)
    if unknown:
        raise TacleanerError(f"{where}: unknown training setting {unknown[0]!r}; valid: {', '.join(sorted(valid))}")
    return TrainConfig(**merged)


class Experiment:
    """Runs the stages of one experiment folder; see the module docstring."""

    def __init__(self, cfg: ExperimentConfig, raw: dict, out: str | Path, *, resume: bool = False,
                 overwrite: bool = False, progress: bool = True) -> None:
        self.cfg, self.raw, self.progress = cfg, raw, progress
        self.out = prepare_run_dir(out, resume=resume, overwrite=overwrite)
        saved = self.out / "config.yaml"
        if saved.is_file() and yaml.safe_load(saved.read_text()) != raw:
            raise TacleanerError(f"{saved}: the experiment config changed since this folder was started; "
                                 "use a new --out or --overwrite")
        write_yaml(saved, raw)
        self.device = resolve_device(cfg.train.get("device", "auto"))

    def log(self, msg: str) -> None:
        from tqdm import tqdm

        with open(self.out / "log.txt", "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")
        if self.progress:
            tqdm.write(msg)

    # -- stages -----------------------------------------------------------------------------
    def data_paths(self) -> dict[str, Path]:
        d = self.cfg.data
        if "synth" in d:
            root = self.out / "data"
            if not (root / "world.json").is_file():
                self.log("stage data: generating the synthetic world")
                generate(root, SynthConfig(**d["synth"]), overwrite=True, progress=self.progress)
            return {k: root / f"{k}.csv" for k in ("pretrain", "implant", "clean", "zeroshot")} | {
                "classes": root / "classes.json"}
        needed = ("implant", "clean", "zeroshot", "classes") + (("pretrain",) if self.cfg.pretrain is not None else ())
        missing = [k for k in needed if k not in d]
        if missing:
            raise TacleanerError(f"config data: missing {missing[0]!r} (or give 'synth')")
        return {k: Path(v) for k, v in d.items()}

    def stage_train(self, out: Path, init: Path | None, csv: Path, objective, tcfg: TrainConfig, label: str) -> Path:
        if not is_complete(out):
            self.log(f"stage {label}: training")
            bundle = load_model(init) if init else self.base_model()
            torch.manual_seed(tcfg.seed)
            train(bundle, read_pairs(csv), objective, tcfg, out, resume=True, progress=self.progress)
        return out / "model.safetensors"

    def base_model(self):
        m = self.cfg.model
        if m.get("init"):
            return load_model(m["init"], m.get("name"))
        torch.manual_seed(m.get("seed", 0))
        return create_model(m["name"], pretrained=m.get("pretrained"))

    def stage_eval(self, ckpt: Path, out: Path, paths: dict, attack=None, target=None) -> dict:
        if not out.is_file():
            classes = read_classes(paths["classes"])
            zs = read_zeroshot(paths["zeroshot"], classes)
            res = evaluate(load_model(ckpt), zs, classes, attack=attack, target=target, device=self.device,
                           batch_size=self.cfg.eval_batch_size)
            write_json(out, {"checkpoint": str(ckpt), **res})
        return read_json(out)

    # -- the grid ---------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]]:
        paths = self.data_paths()
        base = self.cfg.train
        if self.cfg.pretrain is not None:
            clean_ckpt = self.stage_train(self.out / "pretrain", None, paths["pretrain"], create_defense("finetune"),
                                          _train_config(base, self.cfg.pretrain, "pretrain"), "pretrain")
        else:
            clean_ckpt = self.out / "base.safetensors"
            if not clean_ckpt.is_file():
                from .models import save_model

                save_model(self.base_model(), clean_ckpt)
        rows, references = [], []
        clean_eval = self.stage_eval(clean_ckpt, self.out / "pretrain_eval.json", paths)
        self.log(f"clean model: CA {clean_eval['clean_acc']:.3f}")
        for spec in self.cfg.attacks:
            for seed in self.cfg.seeds:
                root = self.out / spec.id / f"seed{seed}"
                attack, target = self.stage_poison(spec, seed, root, clean_ckpt, paths)
                ref = self.stage_eval(clean_ckpt, root / "clean_model_eval.json", paths, attack, target)
                references.append(self.row(spec.id, "*clean model*", seed, ref))
                rows += self.attack_rows(spec, attack, target, seed, root, clean_ckpt, paths)
        write_json(self.out / "results.json", rows)
        table = write_reports(rows, self.out, clean_eval, references)
        self.log("\n" + table)
        return rows

    def stage_poison(self, spec: AttackSpec, seed: int, root: Path, clean_ckpt: Path, paths: dict):
        """The poisoned implant set; returns the attack with its trigger as saved and the target."""
        if not (root / "poison" / "manifest.json").is_file():
            classes = read_classes(paths["classes"])
            target = classes.classnames[classes.index(spec.target)]
            attack = create_attack(spec.name, **spec.params)
            self.log(f"stage {spec.id}/seed{seed}: poisoning {spec.num} pairs toward {target!r}")
            poison_dataset(paths["implant"], attack, target, spec.num, root / "poison", seed=seed,
                           templates=classes.templates, overwrite=True, device=self.device, log=self.log,
                           clean_model=load_model(clean_ckpt) if attack.needs_model else None)
        return load_attack(root / "poison")

    def attack_rows(self, spec: AttackSpec, attack, target: str, seed: int, root: Path, clean_ckpt: Path,
                    paths: dict) -> list[dict]:
        implant_cfg = _train_config({**self.cfg.train, "seed": seed}, spec.implant, f"{spec.id}.implant")
        backdoored = self.stage_train(root / "implant", clean_ckpt, root / "poison" / "data.csv",
                                      create_defense("finetune"), implant_cfg, f"{spec.id}/seed{seed} implant")
        rows = [self.row(spec.id, "none", seed, self.stage_eval(backdoored, root / "implant" / "eval.json", paths,
                                                                 attack, target))]
        for d in self.cfg.defenses:
            dcfg = _train_config({**self.cfg.train, "seed": seed}, d.train, f"{d.id}.train")
            cleaned = self.stage_train(root / d.id, backdoored, paths["clean"], create_defense(d.name, **d.params),
                                       dcfg, f"{spec.id}/seed{seed} {d.id}")
            rows.append(self.row(spec.id, d.id, seed, self.stage_eval(cleaned, root / d.id / "eval.json", paths,
                                                                       attack, target)))
        return rows

    @staticmethod
    def row(attack: str, defense: str, seed: int, res: dict) -> dict:
        return {"attack": attack, "defense": defense, "seed": seed, "clean_acc": res["clean_acc"],
                "asr_at_1": res["asr_at_1"], "asr_at_10": res["asr_at_10"], "target": res.get("target"),
                "checkpoint": res["checkpoint"]}
