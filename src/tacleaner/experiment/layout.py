"""The experiment folder's layout: every path a stage or a report writes, named once.

Existing folders resume against these names, so they do not change::

    config.yaml  log.txt  results.json  aggregate.json  results.md  results.png  environment.json
    selection/<group>.json            the selection rule's choice (held-out conditions)
    tune/                             the tune set's reports (held-out conditions)
    world<W>/data/                    the synthetic world (pretrain.csv ... classes.json, world.json)
    world<W>/pretrain/ | base.safetensors   the clean model (pretrained, or the starting weights)
    world<W>/pretrain_eval.json  world<W>/overlap.json
    world<W>/<attack id>/implant<I>/  one backdoored model (:class:`UnitFolder`)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MODEL = "model.safetensors"  # a training run's weights, in its run folder
EVAL = "eval.json"  # a model's evaluation, beside it
SYNTH_FILES = ("pretrain", "implant", "clean", "zeroshot", "zeroshot_val")


@dataclass(frozen=True)
class UnitFolder:
    """``world<W>/<attack id>/implant<I>``: the poisoned data, the backdoored model and every
    cleaning of it (``<defense id or group>/clean<C>``)."""

    root: Path

    @property
    def poison(self) -> Path:
        return self.root / "poison"

    @property
    def poisoned_pairs(self) -> Path:
        return self.poison / "data.csv"

    @property
    def poison_manifest(self) -> Path:
        return self.poison / "manifest.json"

    @property
    def clean_model_eval(self) -> Path:
        """The clean model under this unit's trigger."""
        return self.root / "clean_model_eval.json"

    @property
    def backdoored(self) -> Path:
        return self.root / "backdoored"

    @property
    def backdoored_model(self) -> Path:
        return self.backdoored / MODEL

    @property
    def backdoored_eval(self) -> Path:
        return self.backdoored / EVAL

    def cleaned(self, folder: str, clean_seed: int) -> Path:
        return self.root / folder / f"clean{clean_seed}"

    def cleaned_eval(self, folder: str, clean_seed: int) -> Path:
        return self.cleaned(folder, clean_seed) / EVAL


@dataclass(frozen=True)
class Layout:
    """The paths of one experiment folder ``out``."""

    out: Path

    @property
    def config(self) -> Path:
        return self.out / "config.yaml"

    @property
    def log(self) -> Path:
        return self.out / "log.txt"

    @property
    def results(self) -> Path:
        return self.out / "results.json"

    @property
    def environment(self) -> Path:
        return self.out / "environment.json"

    @property
    def tune(self) -> Path:
        """The tune set's reports under held-out conditions."""
        return self.out / "tune"

    def selection(self, group: str) -> Path:
        return self.out / "selection" / f"{group}.json"

    def world(self, w: int) -> Path:
        return self.out / f"world{w}"

    def data(self, w: int) -> Path:
        """The synthetic world of world seed ``w``."""
        return self.world(w) / "data"

    def synth_files(self, w: int) -> dict[str, Path]:
        root = self.data(w)
        return {k: root / f"{k}.csv" for k in SYNTH_FILES} | {"classes": root / "classes.json"}

    def world_record(self, w: int) -> Path:
        """Written last by the world's generation: the world is complete."""
        return self.data(w) / "world.json"

    def pretrain(self, w: int) -> Path:
        return self.world(w) / "pretrain"

    def clean_checkpoint(self, w: int, pretrained: bool) -> Path:
        """The clean model: the pretraining run's, or the starting weights saved once."""
        return self.pretrain(w) / MODEL if pretrained else self.world(w) / "base.safetensors"

    def clean_eval(self, w: int) -> Path:
        return self.world(w) / "pretrain_eval.json"

    def overlap(self, w: int) -> Path:
        return self.world(w) / "overlap.json"

    def unit(self, w: int, attack_id: str, implant: int) -> UnitFolder:
        return UnitFolder(self.world(w) / attack_id / f"implant{implant}")
