"""Shared fixtures: a tiny synthetic world on disk and the shipped tiny model."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from tacleaner.data.synth import SynthConfig, generate

logging.getLogger().setLevel(logging.ERROR)  # open_clip's "initialized randomly" notices


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
