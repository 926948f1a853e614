"""The grid: which units an experiment has, and every stage of them with its dependencies, in
the order they start (a world's pretraining just before its first unit; the selections right
after the tune units, which they wait for)."""
from __future__ import annotations

from dataclasses import dataclass

from ..fileio import read_json
from ..selection import TEST, TUNE
from .config import ExperimentConfig
from .filtering import DATA_DEFENSES
from .layout import Layout
from .settings import defense_cost


@dataclass(frozen=True)
class Unit:
    """A world and an attack entry (by index), with the set it belongs to under held-out
    conditions (None without them)."""

    world: int
    attack: int
    split: str | None = None


@dataclass(frozen=True)
class Backdoor:
    """One backdoored model: a unit's world and attack entry, and an implant seed."""

    world: int
    attack: int
    implant: int


@dataclass(frozen=True)
class Step:
    """A stage to run: ``key`` (what others depend on), the registered stage's name and its
    arguments after the experiment."""

    key: str
    stage: str
    args: tuple
    deps: tuple[str, ...] = ()


def units(cfg: ExperimentConfig) -> list[Unit]:
    """Every unit: tune units before test units."""
    ids = [a.id for a in cfg.attacks]
    if cfg.held_out is None:
        return [Unit(w, a) for w in cfg.plan.world for a in range(len(ids))]
    return [Unit(w, ids.index(name), split) for split, cs in ((TUNE, cfg.held_out.tune), (TEST, cfg.held_out.test))
            for w, name in cs.units()]


def steps(cfg: ExperimentConfig) -> list[Step]:
    """Every stage of the grid with its dependencies, in a good starting order.

    A world's pretraining is listed just before its first unit, so that among ready stages the
    scheduler finishes whole worlds in order (tune worlds first: the selection can run while
    test worlds pretrain) instead of pretraining every world before any cleaning."""
    groups = cfg.groups()
    tuned: dict[str, list[str]] = {g: [] for g in groups}  # the stages each selection reads
    order = sorted(range(len(cfg.defenses)), key=lambda k: -defense_cost(cfg, k))
    out: list[Step] = []
    selected, pretrained = False, set[int]()
    for unit in units(cfg):
        if unit.split == TEST and groups and not selected:  # right after the tune units: they unblock the test set
            out += [Step(f"select/{g}", "select", (g,), tuple(tuned[g])) for g in groups]
            selected = True
        if unit.world not in pretrained:
            out.append(Step(f"pretrain/{unit.world}", "pretrain", (unit.world,)))
            pretrained.add(unit.world)
        for i in cfg.plan.implant:
            out += _unit_steps(cfg, unit, i, order, tuned)
    return out


def _unit_steps(cfg: ExperimentConfig, unit: Unit, i: int, order: list[int], tuned: dict[str, list[str]]) -> list[Step]:
    """One backdoored model's stages: poison, implant, then each defense per clean seed (a test
    unit runs each group's chosen candidate instead of the candidates)."""
    b = Backdoor(unit.world, unit.attack, i)
    name = f"{unit.world}/{cfg.attacks[unit.attack].id}/{i}"
    out = [Step(f"poison/{name}", "poison", (b,), (f"pretrain/{unit.world}",)),
           Step(f"implant/{name}", "implant", (b,), (f"poison/{name}",))]
    seeds = cfg.plan.clean_seeds(i)

    def after_first(folder: str, on_data: bool, c: int) -> tuple[str, ...]:
        # A data defense's first clean seed scores the implant set into <folder>/detect; the
        # other seeds reuse it, so they wait for that stage instead of scoring it again at once.
        return (f"defense/{name}/{folder}/{seeds[0]}",) if on_data and c != seeds[0] else ()

    for c in seeds:
        for k in order:
            d = cfg.defenses[k]
            if d.group and unit.split == TEST:
                continue
            key = f"defense/{name}/{d.id}/{c}"
            on_data = d.name in DATA_DEFENSES
            stage = DATA_DEFENSES.get(d.name).stage if on_data else "clean"  # on the data or training, or the model
            out.append(Step(key, stage, (b, k, c), (f"implant/{name}",) + after_first(d.id, on_data, c)))
            if d.group:
                tuned[d.group].append(key)
        if unit.split == TEST:
            out += [Step(f"defense/{name}/{g}/{c}", "chosen", (b, g, c), (f"implant/{name}", f"select/{g}")
                         + after_first(g, any(cfg.defenses[j].name in DATA_DEFENSES for j in ks), c))
                    for g, ks in cfg.groups().items()]
    return out


def chosen(cfg: ExperimentConfig, layout: Layout, group: str) -> int:
    """Index of the defense entry the selection chose for ``group``."""
    chosen_id = read_json(layout.selection(group))["chosen"]
    return next(k for k in cfg.groups()[group] if cfg.defenses[k].id == chosen_id)
