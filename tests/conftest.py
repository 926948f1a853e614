"""Shared fixtures: a tiny synthetic world on disk and the shipped tiny model."""
from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

import pytest
import torch

from tacleaner.data.synth import SynthConfig, generate

logging.getLogger().setLevel(logging.ERROR)  # open_clip's "initialized randomly" notices

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one pytest worker per core (pytest-xdist): each works on one thread, and
    # so do the tacleaner processes the tests start, instead of every process asking for all cores
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"


# The real caption samples the text tests measure on, with their sources: tests/data/README.md
SHARED_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def shared_captions():
    """Read one caption sample of tests/data, a caption per line. A missing file fails the test,
    naming the path: the goals measured on these samples are part of the product, never skipped."""
    def read(name: str) -> list[str]:
        path = SHARED_DATA / name
        if not path.is_file():
            pytest.fail(f"{path} not found: the caption samples ship in tests/data")
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return read


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> Path:
    """A small world: real PNG files and CSVs in the standard formats."""
    root = tmp_path_factory.mktemp("world") / "w"
    generate(root, SynthConfig(seed=3, pretrain=192, implant=160, clean=96, zeroshot_per_class=2), progress=False)
    return root


@pytest.fixture
def tiny():
    from tacleaner.models import create_model

    torch.manual_seed(0)
    return create_model("tacleaner-tiny-rn")


@pytest.fixture(scope="session")
def trained_checkpoint(world, tmp_path_factory) -> Path:
    """The tiny model after a few epochs on the world's pretraining split: enough for its image
    embeddings to tell images apart (at random init they nearly coincide), which attacks that
    optimise a trigger against a clean model need."""
    from tacleaner.data.pairs import read_pairs
    from tacleaner.defenses import create_defense
    from tacleaner.models import create_model
    from tacleaner.train import TrainConfig, train

    out = tmp_path_factory.mktemp("trained") / "run"
    torch.manual_seed(0)
    train(create_model("tacleaner-tiny-rn"), read_pairs(world / "pretrain.csv"), create_defense("finetune"),
          TrainConfig(epochs=6, batch_size=32, lr=2e-3, warmup_steps=5), out, progress=False)
    return out / "model.safetensors"


@pytest.fixture
def trained(trained_checkpoint):
    from tacleaner.models import load_model

    return load_model(trained_checkpoint)


@pytest.fixture
def interrupted_at_step():
    """``make(cls, stop)``: the objective class ``cls`` interrupted (as by Ctrl-C) when its
    ``stop``-th batch arrives, for tests of mid-epoch resume."""
    def make(cls, stop):
        class Interrupted(cls):
            calls = 0

            def losses(self, model, batch):
                self.calls += 1
                if self.calls == stop:
                    raise KeyboardInterrupt
                return super().losses(model, batch)

        return Interrupted

    return make


@pytest.fixture
def recaptioned(world, tmp_path):
    """``make(name, n, captions)``: the world's first ``n`` clean pairs written to ``tmp_path/name``
    (absolute image paths), the caption of each row ``i`` in ``captions`` replaced by ``captions[i]``."""
    def make(name: str, n: int, captions: dict[int, str]) -> Path:
        with open(world / "clean.csv", newline="") as f:
            rows = list(csv.DictReader(f))[:n]
        path = tmp_path / name
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["image", "caption"])
            w.writeheader()
            w.writerows({"image": str((world / r["image"]).resolve()), "caption": captions.get(i, r["caption"])}
                        for i, r in enumerate(rows))
        return path
    return make


@pytest.fixture
def tiny_grid(tmp_path):
    """``run(name, defenses, model=..., implant_epochs=1, val_per_class=1, out="run")``: a
    one-world experiment on a small synthetic world (one BadNet implant toward "red circle", one
    seed), written to ``tmp_path/<name>.yaml`` and run through ``tacleaner run``; returns the
    exit code, the run folder and the config (a test may change and run it again)."""
    import yaml

    from tacleaner_cli import main

    def run(name: str, defenses: list[dict], model: str = "tacleaner-tiny-rn", implant_epochs: int = 1,
            val_per_class: int = 1, out: str = "run", config: dict | None = None):
        config = config or {
            "name": name, "model": {"name": model},
            "data": {"synth": {"seed": 2, "pretrain": 96, "implant": 96, "clean": 64, "zeroshot_per_class": 1,
                               "zeroshot_val_per_class": val_per_class}},
            "pretrain": {"epochs": 1, "lr": 2e-3}, "train": {"batch_size": 32, "warmup_steps": 2, "threads": 1},
            "attacks": [{"name": "badnet", "target": "red circle", "num": 16, "params": {"patch_frac": 0.9},
                         "implant": {"epochs": implant_epochs}}],
            "defenses": defenses,
            "seeds": {"implant": [0], "clean": [0]},
        }
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        return main(["--quiet", "run", str(path), "--out", str(tmp_path / out)]), tmp_path / out, config

    return run


# The modules that take longest (measured with --durations on a 2-core machine), run first: with
# `-n auto --dist loadscope` every module goes to one worker in collection order, so a long module
# started last would run on alone while the other worker idles.
LONGEST_FIRST = ("test_distributed", "test_e2e", "test_experiment", "test_audit", "test_cli_faults", "test_train",
                 "test_safeclip", "test_invert", "test_subtexts", "test_selection", "test_paper_config", "test_detect",
                 "test_divergence")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__.rpartition(".")[2], len(rank)))  # stable: modules stay whole
