"""The training loop's precision and memory-format knobs on the CPU (the CUDA side: test_gpu.py)."""
from __future__ import annotations

import json

import pytest
import torch

from tacleaner.data.pairs import read_pairs
from tacleaner.defenses import create_defense
from tacleaner.errors import TacleanerError
from tacleaner.models import create_model
from tacleaner.train import TrainConfig, train
from tacleaner_cli import main


def test_unknown_precision_and_fp16_without_cuda_are_refused(world, tmp_path, capsys):
    with pytest.raises(TacleanerError, match="precision='fp8': choose one of auto, fp32, bf16, fp16"):
        TrainConfig(precision="fp8")
    if not torch.cuda.is_available():
        code = main(["train", "--model", "tacleaner-tiny-rn", "--data", str(world / "pretrain.csv"),
                     "--out", str(tmp_path / "o"), "--precision", "fp16", "--device", "cpu"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.splitlines() == [err] and "fp16 needs a CUDA device" in err


def test_bf16_autocast_and_channels_last_train_on_cpu(world, tmp_path):
    torch.manual_seed(0)
    bundle = create_model("tacleaner-tiny-rn")
    before = bundle.model.visual.conv1.weight.detach().clone()
    train(bundle, read_pairs(world / "clean.csv"), create_defense("finetune"),
          TrainConfig(epochs=1, batch_size=32, max_steps=2, precision="bf16", channels_last=True, device="cpu",
                      log_every=1), tmp_path / "run", progress=False)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in rows if "summary" not in r]) == 2 and all(r["loss"] == r["loss"] for r in rows)
    assert not torch.equal(bundle.model.visual.conv1.weight.detach(), before)
    assert bundle.model.visual.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert json.loads((tmp_path / "run" / "metadata.json").read_text())["precision"] == "bf16"


def test_images_keep_their_layout_unless_channels_last_is_asked_for():
    """Forcing NCHW on the collated images changed which convolution kernels ran and so every
    run's numbers (caught by comparing weights before and after); only `channels_last` converts."""
    from tacleaner.train import _to

    x = torch.rand(2, 4, 4, 3).permute(0, 3, 1, 2)  # channels-last strides, as from an HWC array
    kept = _to(x, torch.device("cpu"), None)
    assert kept.stride() == x.stride() and not kept.is_contiguous()
    assert _to(x, torch.device("cpu"), torch.channels_last).is_contiguous(memory_format=torch.channels_last)
    assert _to([1], torch.device("cpu"), None) == [1]
