"""Each stage's training settings: the experiment's ``train`` under the stage's own overrides,
with the seed the seed plan gives it."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from ..params import build
from ..train import TrainConfig, with_defaults
from .config import ExperimentConfig
from .filtering import defense_entry
from .specs import AttackSpec, DefenseSpec


def train_config(base: dict[str, Any], override: dict[str, Any] | None, where: str) -> TrainConfig:
    return build(TrainConfig, {**base, **(override or {})}, f"{where}: training settings")


def shared_config(cfg: ExperimentConfig) -> TrainConfig:
    """The experiment-wide settings alone (stages that do not train: poisoning)."""
    return train_config(cfg.train, {}, "train")


def pretrain_config(cfg: ExperimentConfig, w: int) -> TrainConfig:
    """Clean pretraining of world ``w``: the world seed shifts the data order."""
    tcfg = train_config(cfg.train, cfg.pretrain or {}, "pretrain")
    return dataclasses.replace(tcfg, seed=tcfg.seed + w)


def implant_config(cfg: ExperimentConfig, spec: AttackSpec, i: int) -> TrainConfig:
    return train_config({**cfg.train, "seed": i}, spec.implant, f"{spec.id}.implant")


def defense_config(cfg: ExperimentConfig, d: DefenseSpec, c: int) -> TrainConfig:
    """A defense's own defaults lowest, then ``train``, the clean seed, the entry's ``train``."""
    settings = {**cfg.train, "seed": c, **(d.train if isinstance(d.train, dict) else {})}
    base = with_defaults(defense_entry(d.name).train_defaults, settings)
    return train_config(base, d.train, f"{d.id}.train")


def defense_cost(cfg: ExperimentConfig, k: int) -> float:
    """A defense stage's relative cost: the objective's cost per pair times its epochs."""
    d = cfg.defenses[k]
    return defense_entry(d.name).relative_cost * defense_config(cfg, d, 0).epochs


def for_jobs(tcfg: TrainConfig, jobs: int) -> TrainConfig:
    """Unset threads under parallel jobs: share the cores (results then depend on ``jobs``;
    fix ``threads`` in the config for results that do not)."""
    if tcfg.threads == 0 and jobs > 1:
        return dataclasses.replace(tcfg, threads=max(1, (os.cpu_count() or 1) // jobs))
    return tcfg


def set_threads(tcfg: TrainConfig) -> None:
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
