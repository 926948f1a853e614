"""Held-out conditions and a defender's selection rule.

A defender has the suspect model, clean data with a labelled zero-shot set, and what the model
itself reveals; never the trigger, the target or the poisoned set. So a shipped setting is
chosen by a rule that reads only what a defender could measure, on one set of conditions (the
*tune* set: world seeds, attacks with their targets, places and sizes), and reported on another
that took no part in the choice (the *test* set).

In an experiment YAML::

    conditions:
      tune: {world: [0, 1, 2, 3]}              # attacks: [ids] optional, default every attack
      test: {world: [4, 5, 6, 7, 8, 9]}
    select: {rule: ca-budget, ca_budget: 2.0}
    defenses:
      - {name: cleanclip, id: cleanclip-lr1e-3, group: cleanclip, train: {lr: 1.0e-3}}
      - {name: cleanclip, id: cleanclip-lr2e-3, group: cleanclip, train: {lr: 2.0e-3}}

Every candidate of a group runs on the tune conditions; the rule picks one per group from their
*validation* clean accuracy against their own backdoored models (ASR on the true trigger is never
read); the test conditions run the chosen candidate alone, reported under the group's name.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .errors import TacleanerError
from .registry import Registry

TUNE, TEST = "tune", "test"
DEFAULT_RULE = "ca-budget"


@dataclass(frozen=True)
class ConditionSet:
    """World seeds and attack ids (each attack entry fixes a target, a trigger place and size)."""

    world: tuple[int, ...]
    attacks: tuple[str, ...]

    def units(self) -> list[tuple[int, str]]:
        return [(w, a) for w in self.world for a in self.attacks]


@dataclass(frozen=True)
class Conditions:
    """The tune and test sets of an experiment; no (world, attack) unit is in both."""

    tune: ConditionSet
    test: ConditionSet

    @classmethod
    def parse(cls, raw: Any, attack_ids: list[str], where: str = "conditions") -> "Conditions":
        if not isinstance(raw, dict) or set(raw) != {TUNE, TEST}:
            raise TacleanerError(f"{where}: expected a mapping with exactly the keys 'tune' and 'test', got {raw!r}")
        sets = {name: _condition_set(raw[name], attack_ids, f"{where}.{name}") for name in (TUNE, TEST)}
        shared = sorted(set(sets[TUNE].units()) & set(sets[TEST].units()))
        if shared:
            w, a = shared[0]
            raise TacleanerError(f"{where}: world {w} with attack {a!r} is in both the tune and the test set; "
                                 "the conditions a setting is chosen on and those it is reported on must differ")
        return cls(**sets)

    @property
    def worlds(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.tune.world) | set(self.test.world)))

    def split_of(self, w: int, attack: str) -> str | None:
        if (w, attack) in self.test.units():
            return TEST
        if (w, attack) in self.tune.units():
            return TUNE
        return None

    def describe(self) -> str:
        def one(s: ConditionSet) -> str:
            return f"world {', '.join(map(str, s.world))} x attack {', '.join(s.attacks)}"

        return f"tune set: {one(self.tune)}; test set: {one(self.test)}"


def _condition_set(raw: Any, attack_ids: list[str], where: str) -> ConditionSet:
    if not isinstance(raw, dict):
        raise TacleanerError(f"{where}: expected a mapping with 'world' and optionally 'attacks', got {raw!r}")
    unknown = sorted(set(raw) - {"world", "attacks"})
    if unknown:
        raise TacleanerError(f"{where}: unknown key {unknown[0]!r}; valid: attacks, world")
    worlds = raw.get("world")
    if (not isinstance(worlds, list) or not worlds or len(set(worlds)) != len(worlds)
            or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 0 for w in worlds)):
        raise TacleanerError(f"{where}.world: expected a non-empty list of distinct integers >= 0, got {worlds!r}")
    attacks = raw.get("attacks", list(attack_ids))
    if not isinstance(attacks, list) or not attacks or len(set(attacks)) != len(attacks):
        raise TacleanerError(f"{where}.attacks: expected a non-empty list of distinct attack ids, got {attacks!r}")
    for a in attacks:
        if a not in attack_ids:
            raise TacleanerError(f"{where}.attacks: no attack with id {a!r}; ids: {', '.join(attack_ids)}")
    return ConditionSet(tuple(worlds), tuple(attacks))


# -- selection rules ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One candidate setting's evidence on the tune set: per tune run, its validation CA change
    against its own backdoored model (fractions, e.g. -0.012)."""

    id: str
    val_ca_changes: tuple[float, ...]

    @property
    def worst(self) -> float:
        return min(self.val_ca_changes)

    @property
    def mean(self) -> float:
        return sum(self.val_ca_changes) / len(self.val_ca_changes)


SELECTION_RULES: Registry = Registry("selection rule")


@SELECTION_RULES.register(DEFAULT_RULE)
@dataclass(frozen=True)
class CaBudget:
    """The strongest candidate whose validation CA stays within ``ca_budget`` points of its
    backdoored model's on every tune run. Candidates are listed weakest first (a lower rate,
    fewer steps); a defender knows that order without knowing the trigger. When none keeps
    the budget, the weakest."""

    ca_budget: float = 2.0  # points of validation CA a setting may cost on its worst tune run

    def keeps(self, change: float) -> bool:
        """Whether a validation CA change (a fraction) stays within the budget."""
        return change >= -self.ca_budget / 100 - 1e-12

    def choose(self, candidates: list[Candidate]) -> tuple[int, str]:
        ok = [k for k, c in enumerate(candidates) if self.keeps(c.worst)]
        if not ok:
            return 0, (f"no candidate kept validation CA within {self.ca_budget:g} points on every tune run; "
                       "the weakest (listed first) is used")
        return ok[-1], (f"the strongest (last listed) candidate whose validation CA stayed within "
                        f"{self.ca_budget:g} points of its backdoored model on every tune run")


@SELECTION_RULES.register("max-val-ca")
@dataclass(frozen=True)
class MaxValCa:
    """The candidate with the highest mean validation CA change (for knobs with no known order
    of strength); ties go to the one listed first."""

    def choose(self, candidates: list[Candidate]) -> tuple[int, str]:
        best = max(range(len(candidates)), key=lambda k: (candidates[k].mean, -k))
        return best, "the highest mean validation CA change against the backdoored models on the tune runs"


def create_rule(raw: Any, where: str = "select") -> Any:
    """The selection rule of a config's ``select`` mapping (``rule`` plus the rule's parameters)."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise TacleanerError(f"{where}: expected a mapping such as {{rule: ca-budget, ca_budget: 2.0}}, got {raw!r}")
    params = dict(raw)
    name = rule_name(raw)
    params.pop("rule", None)
    try:
        rule = SELECTION_RULES.create(name, **params)
    except TacleanerError as e:
        raise TacleanerError(f"{where}: {e}") from None
    if isinstance(rule, CaBudget) and rule.ca_budget < 0:
        raise TacleanerError(f"{where}.ca_budget={rule.ca_budget:g}: expected a number >= 0")
    return rule


def rule_name(raw: Any) -> str:
    """The rule a config's ``select`` mapping names (the default when it names none)."""
    return raw.get("rule", DEFAULT_RULE) if isinstance(raw, dict) else DEFAULT_RULE


def select(rule: Any, group: str, candidates: list[Candidate], name: str = DEFAULT_RULE) -> dict[str, Any]:
    """Apply ``rule`` to a group's candidates; the record written to ``selection/<group>.json``."""
    if not candidates or any(not c.val_ca_changes for c in candidates):
        raise TacleanerError(f"selection of {group!r}: every candidate needs validation results on the tune set")
    k, reason = rule.choose(candidates)
    return {"group": group, "rule": name, "rule_settings": asdict(rule), "reason": reason,
            "chosen": candidates[k].id,
            "candidates": [{"id": c.id, "val_ca_changes": list(c.val_ca_changes), "worst": c.worst, "mean": c.mean}
                           for c in candidates],
            "reads": "validation CA of the cleaned and of the backdoored models only (no ASR, no trigger)"}
