"""The CUDA path: training in every precision, evaluation, and a one-process NCCL job.
Skipped where there is no GPU; ``benchmarks/gpu_check.sh`` runs them on one."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _train(world, out, objective, **cfg):
    from tacleaner.data.pairs import read_pairs
    from tacleaner.defenses import create_defense
    from tacleaner.models import create_model
    from tacleaner.train import TrainConfig, train

    torch.manual_seed(0)
    bundle = create_model("tacleaner-tiny-rn")
    start = {k: v.clone() for k, v in bundle.model.state_dict().items()}
    train(bundle, read_pairs(world / "clean.csv"), create_defense(objective), TrainConfig(
        epochs=1, batch_size=32, lr=1e-3, warmup_steps=1, device="cuda", log_every=1, **cfg), out, progress=False)
    return start, bundle


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("objective", ["finetune", "cleanclip"])
def test_training_on_cuda_in_every_precision(world, tmp_path, objective, precision):
    start, bundle = _train(world, tmp_path / "run", objective, precision=precision, channels_last=precision == "bf16")
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    saved = load_file(tmp_path / "run" / "model.safetensors")
    assert any(not torch.equal(saved[k].cpu(), start[k].cpu()) for k in saved if saved[k].is_floating_point())
    meta = json.loads((tmp_path / "run" / "metadata.json").read_text())
    assert meta["precision"] == precision and meta["environment"]["device"].startswith("cuda")
    assert meta["environment"]["cuda_device"]


def test_cuda_and_cpu_evaluation_agree(world, trained):
    from tacleaner.attacks import create_attack
    from tacleaner.data.zeroshot import read_classes, read_zeroshot
    from tacleaner.evaluate import evaluate

    classes = read_classes(world / "classes.json")
    data = read_zeroshot(world / "zeroshot.csv", classes)
    kw = dict(attack=create_attack("badnet"), target=0)
    cpu = evaluate(trained, data, classes, device="cpu", **kw)
    gpu = evaluate(trained, data, classes, device="cuda", **kw)  # bf16 autocast: a few images may flip
    assert abs(gpu["clean_acc"] - cpu["clean_acc"]) <= 0.05
    assert abs(gpu["asr_at_1"] - cpu["asr_at_1"]) <= 0.05


def test_one_process_nccl_job(world, tmp_path):
    """`torchrun --nproc_per_node 1` takes the multi-process path (DDP, collectives) on NCCL."""
    from tacleaner.models import create_model, save_model

    torch.manual_seed(0)
    ckpt = tmp_path / "tiny.safetensors"
    save_model(create_model("tacleaner-tiny-rn"), ckpt)
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                        "-m", "tacleaner", "--quiet", "clean", "--defense", "cleanclip", "--checkpoint", str(ckpt),
                        "--data", str(world / "clean.csv"), "--out", str(out), "--epochs", "1", "--batch-size", "32",
                        "--device", "cuda"], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["processes"] == 1 and meta["backend"] == "nccl" and meta["completed"]
