"""The experiment config: its dataclass, and loading and checking a YAML into it.

Every key is checked when the file is loaded, before any stage starts (docs/experiment-config.md):
first each key's type and value (:mod:`.convert`, the sections' annotations), then what spans
keys or needs the disk and the registries (:func:`check_config`).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from ..attacks import ATTACKS, create_attack
from ..data.zeroshot import BUILTIN_CLASSES
from ..defenses import DEFENSES
from ..errors import TacleanerError
from ..fileio import load_yaml_file
from ..params import build, path_fields
from ..selection import Conditions, create_rule
from ..train import TrainConfig
from .convert import Loc, as_given, from_mapping, positive_int, section
from .filtering import check_defense
from .sections import DATA_PATHS, DataConfig, ModelConfig
from .seeds import SeedPlan
from .specs import RESERVED, AttackSpec, DefenseSpec, attack_list, check_folder_name, defense_list, folder_name


def check_train_settings(value: Any, where: str) -> None:
    """Training overrides (``train``, ``pretrain``, an attack's ``implant``, a defense's
    ``train``) build a :class:`TrainConfig`; kept as the mapping given, since which keys a
    stage sets decides what a defense's own defaults may fill in."""
    if not isinstance(value or {}, dict):
        raise TacleanerError(f"{where}: expected a mapping of training settings, got {value!r}")
    build(TrainConfig, value or {}, f"{where}: training settings")


def train_settings(value: Any, loc: Loc) -> dict[str, Any]:
    check_train_settings(value, loc.where)
    return value or {}


def pretrain_settings(value: Any, loc: Loc) -> dict[str, Any] | None:
    check_train_settings(value, loc.where)
    return value


def seed_plan(value: Any, loc: Loc) -> SeedPlan:
    return SeedPlan.parse(value, loc.label)


def conditions(value: Any, loc: Loc) -> Conditions | None:
    """The tune and test sets, naming attack ids of ``attacks`` (converted before them)."""
    if value is None:
        return None
    try:
        return Conditions.parse(value, [a.id for a in loc.done["attacks"]])
    except TacleanerError as e:
        raise TacleanerError(f"{loc.where}: {e}") from None


@dataclass(kw_only=True)
class ExperimentConfig:
    """The parsed experiment YAML; see ``configs/demo.yaml`` for a commented example and
    ``docs/experiment-config.md`` for every key. Fields are checked in this order."""

    name: Annotated[str, folder_name] = "experiment"
    model: Annotated[ModelConfig, section(ModelConfig)]
    data: Annotated[DataConfig, section(DataConfig)]
    attacks: Annotated[list[AttackSpec], attack_list]
    defenses: Annotated[list[DefenseSpec], defense_list]
    eval_batch_size: Annotated[int, positive_int] = 256
    seeds: Annotated[SeedPlan, seed_plan] = field(default_factory=SeedPlan)
    conditions: Annotated[Conditions | None, conditions] = None  # held-out tune / test sets (selection.py)
    select: Annotated[Any, as_given] = None  # {rule, ...} for defense groups; checked by create_rule
    pretrain: Annotated[dict[str, Any] | None, pretrain_settings] = None  # None: `model` is the clean model
    train: Annotated[dict[str, Any], train_settings] = field(default_factory=dict)  # every stage's defaults

    @property
    def seed_plan(self) -> SeedPlan:
        return self.seeds

    @property
    def held_out(self) -> Conditions | None:
        return self.conditions

    @property
    def plan(self) -> SeedPlan:
        """The seeds the grid runs: held-out conditions name its worlds."""
        if self.conditions is None:
            return self.seeds
        return dataclasses.replace(self.seeds, world=self.conditions.worlds)

    def groups(self) -> dict[str, list[int]]:
        """Defense groups: name -> indices of their candidates, in the order listed."""
        out: dict[str, list[int]] = {}
        for k, d in enumerate(self.defenses):
            if d.group:
                out.setdefault(d.group, []).append(k)
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
    """Check every key of ``raw`` (one-line errors that start with ``where``) into the config."""
    if not isinstance(raw, dict):
        raise TacleanerError(f"{where}: expected a mapping at the top level")
    cfg = from_mapping(ExperimentConfig, copy.deepcopy(raw), where, fields_at=f"{where}: ", sort_keys=True)
    check_config(cfg, raw, where)
    return cfg


def check_config(cfg: ExperimentConfig, raw: dict, where: str) -> None:
    """What spans keys or needs files and registries, in the order a reader would fix it."""
    cfg.model.check(where)
    cfg.data.check(where)
    _check_targets(cfg, where)
    _check_held_out(cfg, raw, where)
    for stage in [a.implant for a in cfg.attacks] + [d.train for d in cfg.defenses]:
        check_train_settings(stage, where)
    if len(cfg.plan.world) > 1 and not cfg.data.is_synth and cfg.pretrain is None and (
            cfg.model.init or cfg.model.pretrained):
        raise TacleanerError(f"{where}: seeds.world varies the synthetic world, the random init and pretraining; "
                             "this config has none of them (fixed data and starting weights)")
    # Fail now, not an hour in, on names and parameters that do not exist.
    for a in cfg.attacks:
        create_attack(a.name, **a.params)
    for d in cfg.defenses:
        check_defense(d.name, d.params)


def _check_targets(cfg: ExperimentConfig, where: str) -> None:
    """Poisoned counts fit a synthetic world; targets name a class of the zero-shot classes
    (checked now, not after pretraining)."""
    if cfg.data.is_synth:
        for i, a in enumerate(cfg.attacks):
            if a.num > cfg.data.synth.implant:
                raise TacleanerError(f"{where}: attacks[{i}].num={a.num}: more than the world's "
                                     f"{cfg.data.synth.implant} implant pairs")
    classes = cfg.data.class_list()
    for i, a in enumerate(cfg.attacks):
        try:
            classes.index(a.target)
        except TacleanerError as e:
            raise TacleanerError(f"{where}: attacks[{i}].target: {e}") from None


def _check_held_out(cfg: ExperimentConfig, raw: dict, where: str) -> None:
    """``conditions``, ``select`` and defense groups: consistent with each other and the data."""
    if cfg.conditions is not None and isinstance(raw.get("seeds"), dict) and "world" in raw["seeds"]:
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
        check_folder_name(g, f"{where}: defenses group")
        if g in ids or g in RESERVED:
            raise TacleanerError(f"{where}: defenses group {g!r} is also a defense id; a group names the chosen "
                                 "setting's rows, so give it a name of its own")
    if not cfg.data.has_validation:
        raise TacleanerError(f"{where}: selection reads validation CA; the data has no validation split "
                             "(data.zeroshot_val, or data.synth.zeroshot_val_per_class > 0)")
