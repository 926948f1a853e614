"""A learning rate far too high (`--lr 1e3` for 1e-3) stops train and clean with one line naming
the step and the rate; nothing is written as complete (the torchrun case: test_distributed.py)."""
from __future__ import annotations

import json

import torch

from tacleaner.models import create_model, save_model
from tacleaner_cli import main


def _complete(out) -> bool:
    meta = out / "metadata.json"
    return meta.is_file() and bool(json.loads(meta.read_text()).get("completed"))


def test_train_and_clean_stop_on_a_non_finite_loss(world, tmp_path, capsys):
    torch.manual_seed(0)
    start = tmp_path / "start.safetensors"
    save_model(create_model("tacleaner-tiny-rn"), start)
    runs = {
        "train": ["train", "--data", str(world / "clean.csv"), "--model", "tacleaner-tiny-rn"],
        "clean": ["clean", "--defense", "cleanclip", "--checkpoint", str(start), "--data", str(world / "clean.csv")],
    }
    for name, args in runs.items():
        out = tmp_path / name
        code = main(["--quiet", *args, "--out", str(out), "--epochs", "2", "--batch-size", "32", "--lr", "1e3",
                     "--warmup-steps", "0", "--threads", "1"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, err
        assert len([e for e in err if e.startswith("error:")]) == 1, err
        line = next(e for e in err if e.startswith("error:"))
        assert "training diverged at step" in line and "the run's lr 1000)" in line and str(out) in line, line
        assert not _complete(out)
        step = int(line.split("diverged at step ")[1].split()[0])
        assert step >= 1


def test_a_sane_rate_is_not_stopped(world, tmp_path, capsys):
    out = tmp_path / "ok"
    code = main(["--quiet", "train", "--data", str(world / "clean.csv"), "--model", "tacleaner-tiny-rn", "--out", str(out),
                 "--epochs", "1", "--batch-size", "64", "--lr", "1e-3", "--threads", "1", "--max-steps", "3"])
    assert code == 0, capsys.readouterr().err
    assert _complete(out)
