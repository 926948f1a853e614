"""Which defense, at which rate: the defender's rule on the user's own model and images.

The candidates are registered defenses, each at a few learning rates (weakest first), with the
demo's settings for everything else (``configs/demo.yaml``: its in-modal and subtext weights,
4 epochs of batch 64). Per defense the rule is :class:`tacleaner.selection.CaBudget`, the rule
the shipped settings were chosen with: the strongest rate whose validation clean accuracy stays
within ``ca_budget`` points of the suspect model's. The candidates are cleaned strongest first and
the first within the budget is the rule's choice, so weaker ones are not trained for nothing.
Between defenses (when more than one is named) the choice goes to the one after which the
scan's suspected class drew the fewest probes (the trigger-free measure of
docs/research/results-trigger-free.md), ties to the higher validation accuracy. Nothing here reads a
trigger, a target or a poison rate.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from ..defenses import DEFENSES
from ..errors import TacleanerError

SCHEDULE = {"epochs": 4, "batch_size": 64, "warmup_steps": 20}  # the demo's cleaning schedule
RATES = (5e-4, 1e-3, 1.5e-3)  # weakest first; the last is the demo's rate
DEFENSE = "cleanclip"


@lru_cache(maxsize=1)
def demo_params() -> dict[str, dict[str, Any]]:
    """Each defense's parameters as the demo runs it (``configs/demo.yaml``)."""
    text = resources.files("tacleaner.configs").joinpath("demo.yaml").read_text(encoding="utf-8")
    return {d["name"]: dict(d.get("params") or {}) for d in yaml.safe_load(text)["defenses"]}


@dataclass(frozen=True)
class Candidate:
    defense: str
    lr: float

    @property
    def id(self) -> str:
        return f"{self.defense}-lr{self.lr:g}"

    @property
    def params(self) -> dict[str, Any]:
        return demo_params().get(self.defense, {})

    def command(self, checkpoint: str, data: str, out: str, epochs: int, batch_size: int) -> str:
        params = " ".join(f"--param {k}={v}" for k, v in self.params.items())
        return (f"tacleaner clean --defense {self.defense} --lr {self.lr:g} {params} --epochs {epochs} "
                f"--batch-size {batch_size} --warmup-steps {SCHEDULE['warmup_steps']} --checkpoint {checkpoint} "
                f"--data {data} --out {out}").replace("  ", " ")


def candidates(defenses: list[str], rates: list[float]) -> dict[str, list[Candidate]]:
    """Per defense, its candidates weakest (lowest rate) first; unknown names fail in one line."""
    if not rates or any(not r > 0 for r in rates):
        raise TacleanerError(f"--rates {','.join(map(str, rates))}: expected positive learning rates")
    out = {}
    for name in defenses:
        if name not in DEFENSES.names():
            raise TacleanerError(f"--defenses {name!r}: not a defense; choose from {', '.join(DEFENSES.names())}")
        out[name] = [Candidate(name, r) for r in sorted(set(rates))]
    return out


def across(chosen: list[dict[str, Any]]) -> tuple[dict[str, Any], str]:
    """Between the defenses' chosen candidates (each with ``attraction_after`` and
    ``val_ca_change``): the lowest attraction of the suspected class after cleaning."""
    best = min(chosen, key=lambda c: (c["attraction_after"], -c["val_ca_change"]))
    if len(chosen) == 1:
        return best, "the only defense named"
    return best, ("of each defense's choice, the one after which the scan's suspected class drew the fewest probes "
                  "(ties: the higher validation accuracy)")
