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


def test_captions_cut_by_the_tokenizer_are_counted_like_skips(recaptioned, tmp_path, capsys):
    """A caption longer than the tokenizer's 77 tokens is cut: counted in the log, metadata.json
    and one warning line, as skipped images are."""
    long = " ".join(["a red star next to a blue circle"] * 20)  # about 160 tokens
    data = recaptioned("long.csv", 64, {i: long for i in range(5)})
    out = tmp_path / "run"
    code = main(["train", "--data", str(data), "--model", "tacleaner-tiny-rn", "--out", str(out), "--epochs", "1",
                 "--batch-size", "32", "--threads", "1", "--lr", "1e-4"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert json.loads((out / "metadata.json").read_text())["truncated_captions"] == 5
    assert "5 captions longer than the tokenizer's context were cut" in (out / "log.txt").read_text()
    warned = [line for line in err.splitlines() if "longer than the tokenizer's context" in line]
    assert len(warned) == 1 and warned[0].startswith("warning:") and "5 of 64 captions" in warned[0]


def test_resume_with_a_lower_rate_after_divergence(world, tmp_path, capsys):
    """The documented way on: `--resume` with a lower `--lr` continues the diverged run (from its
    last finished epoch: here none, as it diverged within the first of 12 steps an epoch) and
    completes it; the same or a higher rate is refused."""
    out = tmp_path / "run"
    base = ["--quiet", "train", "--data", str(world / "clean.csv"), "--model", "tacleaner-tiny-rn", "--out", str(out),
            "--epochs", "2", "--batch-size", "8", "--warmup-steps", "0", "--threads", "1"]
    assert main([*base, "--lr", "1e3"]) == 2
    assert (out / "diverged.json").is_file() and not _complete(out)
    capsys.readouterr()
    assert main([*base, "--lr", "1e3", "--resume"]) == 2
    assert "resume it with a lower --lr" in capsys.readouterr().err
    assert main([*base, "--lr", "1e-3", "--resume"]) == 0, capsys.readouterr().err
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["completed"] and meta["resumed_after_divergence"]["lr"] == 1000
    assert not (out / "diverged.json").exists()
    assert "lr: 0.001" in (out / "config.yaml").read_text()
    assert "resuming a run that diverged" in (out / "log.txt").read_text()


def test_a_diverging_torchrun_job_stops_on_every_rank_with_one_error(world, tmp_path):
    """A learning-rate typo under torchrun: both ranks stop at the same step, the job fails with
    one error line naming the step and the rate, and nothing is marked complete."""
    import os
    import subprocess
    import sys

    torch.manual_seed(0)
    start = tmp_path / "start.safetensors"
    save_model(create_model("tacleaner-tiny-rn"), start)
    out = tmp_path / "diverged"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "tacleaner",
           "--quiet", "clean", "--defense", "cleanclip", "--checkpoint", str(start), "--data", str(world / "clean.csv"),
           "--out", str(out), "--epochs", "1", "--batch-size", "16", "--threads", "1", "--device", "cpu", "--lr", "1e3"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "training diverged at step" in lines[0] and "the run's lr 1000)" in lines[0], done.stderr[-2000:]
    assert "tacleaner_cli" not in done.stderr  # no traceback of ours (torchrun's agent prints its own report)
    assert not (out / "metadata.json").exists() or not json.loads((out / "metadata.json").read_text()).get("completed")
