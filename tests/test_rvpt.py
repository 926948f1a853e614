"""RVPT: deep visual prompts in a real open_clip ViT, the few-shot set, the loss, and training
through the one loop, where only the prompts may change."""
from __future__ import annotations

import csv
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from tacleaner.data.pairs import read_pairs
from tacleaner.defenses import create_defense
from tacleaner.errors import TacleanerError
from tacleaner.models import create_model, load_model, save_model
from tacleaner.models.checkpoint import export_model
from tacleaner.models.prompts import class_tokens, install_prompts, prompt_spec, prompting
from tacleaner.train import TrainConfig, train

VIT = "tacleaner-tiny-vit-p4"


def test_the_tiny_vit_has_four_pixel_patches():
    bundle = create_model(VIT)
    assert bundle.image_size == 32 and bundle.model.visual.conv1.kernel_size == (4, 4)
    assert bundle.model.visual.grid_size == (8, 8)


def test_prompts_change_the_encoder_and_switch_off_exactly():
    torch.manual_seed(0)
    model = create_model(VIT).model.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        before = model.encode_image(x)
        install_prompts(model, 5, 1, generator=torch.Generator().manual_seed(0))
        with prompting(model, False):
            off = model.encode_image(x)
        with class_tokens(model) as trace:
            on = model.encode_image(x)
    assert torch.equal(off, before) and not torch.allclose(on, before)
    assert len(trace) == 3 and trace[0].shape == (3, 96)  # blocks 1-3 of 4 prompted
    assert prompt_spec(model) == {"tokens": 5, "first": 1}
    assert model.visual.transformer.deep_prompts.shape == (3, 5, 96)


def test_a_prompted_model_saves_and_loads_with_its_prompts(tmp_path):
    torch.manual_seed(0)
    bundle = create_model(VIT)
    install_prompts(bundle.model, 4, 2, generator=torch.Generator().manual_seed(1))
    save_model(bundle, tmp_path / "m.safetensors")
    again = load_model(tmp_path / "m.safetensors")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again.model.encode_image(x), bundle.model.eval().encode_image(x))
    assert prompt_spec(again.model) == {"tokens": 4, "first": 2}
    with pytest.raises(TacleanerError, match="deep visual prompts"):
        export_model(again, tmp_path / "m.pt")


def _fewshot_defense(world, **kw):
    params = {"shots": 2, "prompt_tokens": 4, **kw}
    return create_defense("rvpt", fewshot=str(world / "zeroshot_val.csv"), classes=str(world / "classes.json"),
                          **params)


def test_the_few_shot_set_is_k_per_class_of_the_validation_split(world):
    defense = _fewshot_defense(world)
    table = defense.training_table(read_pairs(world / "clean.csv"), seed=0)
    with open(world / "zeroshot_val.csv", newline="") as f:
        val = {str((world / r["image"]).resolve()) for r in csv.DictReader(f)}
    with open(world / "zeroshot.csv", newline="") as f:
        test = {str((world / r["image"]).resolve()) for r in csv.DictReader(f)}
    images = [str(p) for p in table.images]
    assert set(images) <= val and not set(images) & test
    assert len(images) == 2 * 48 and all(table.captions.count(c) == 2 for c in set(table.captions))
    again = _fewshot_defense(world).training_table(read_pairs(world / "clean.csv"), seed=0)
    other = _fewshot_defense(world).training_table(read_pairs(world / "clean.csv"), seed=1)
    assert [str(p) for p in again.images] == images and [str(p) for p in other.images] != images  # drawn by the seed
    with pytest.raises(TacleanerError, match="rvpt needs 11 images of every class"):
        _fewshot_defense(world, shots=11).training_table(table, 0)


def test_the_loss_is_cross_entropy_plus_alpha_times_the_mean_cosine(world):
    torch.manual_seed(0)
    bundle = create_model(VIT)
    defense = _fewshot_defense(world, alpha=3.0)
    table = defense.training_table(read_pairs(world / "clean.csv"), seed=0)
    defense.setup(bundle, table, seed=0)
    from tacleaner.data.pairs import PairDataset

    ds = PairDataset(table)
    batch = defense.collate([ds[i] for i in range(8)])
    out = defense.losses(bundle.model, batch)
    model = bundle.model
    with torch.no_grad():
        with prompting(model, False), class_tokens(model) as original:
            model.encode_image(batch["images"])
        with class_tokens(model) as prompted:
            image = F.normalize(model.encode_image(batch["images"]), dim=-1)
    cos = torch.stack([F.cosine_similarity(p, o, dim=-1) for p, o in zip(prompted, original)])  # [blocks, batch]
    logits = model.logit_scale.exp() * image @ defense.class_text.T
    assert torch.allclose(out["ce_loss"], F.cross_entropy(logits, batch["labels"]), atol=1e-6)
    assert torch.allclose(out["fr_loss"], 3.0 * cos.mean(), atol=1e-6)
    assert batch["labels"].tolist() == [defense.classnames.index(c) for c in table.captions[:8]]


def test_training_changes_only_the_prompts(world, tmp_path):
    torch.manual_seed(0)
    bundle = create_model(VIT)
    save_model(bundle, tmp_path / "start.safetensors")
    start = load_file(tmp_path / "start.safetensors")
    defense = _fewshot_defense(world)
    train(bundle, read_pairs(world / "clean.csv"), defense,
          TrainConfig(epochs=2, batch_size=16, lr=0.05, warmup_steps=1, threads=1, optimizer="sgd", log_every=1),
          tmp_path / "run", progress=False)
    end = load_file(tmp_path / "run" / "model.safetensors")
    assert set(end) - set(start) == {"visual.transformer.deep_prompts"}
    assert all(torch.equal(end[k], start[k]) for k in start)  # the backdoored model, bit for bit
    cleaned = load_model(tmp_path / "run" / "model.safetensors")
    initial = torch.randn(3, 4, 96, generator=torch.Generator().manual_seed(0)) * 0.02
    assert not torch.allclose(cleaned.model.visual.transformer.deep_prompts, initial)
    rows = [r for r in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
            if "ce_loss" in r and not r.get("summary")]
    assert rows and all("fr_loss" in r and -1 <= r["fr_cosine"] <= 1 for r in rows)


def test_a_resnet_or_a_combination_is_refused_in_one_line(world, tmp_path, capsys, tiny):
    defense = _fewshot_defense(world)
    table = defense.training_table(read_pairs(world / "clean.csv"), seed=0)
    with pytest.raises(TacleanerError, match="need a ViT image encoder; this model's is a ModifiedResNet"):
        defense.setup(tiny, table, seed=0)
    with pytest.raises(TacleanerError, match="rvpt trains on data of its own and cannot be combined"):
        create_defense("rvpt+cleanclip")
    from tacleaner_cli import main

    save_model(tiny, tmp_path / "rn.safetensors")
    code = main(["--quiet", "clean", "--defense", "rvpt", "--checkpoint", str(tmp_path / "rn.safetensors"),
                 "--data", str(world / "clean.csv"), "--out", str(tmp_path / "o"),
                 "--param", f"fewshot={world / 'zeroshot_val.csv'}", "--param", f"classes={world / 'classes.json'}",
                 "--param", "shots=2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: ") and "ViT" in err[-1]


def test_in_a_grid_rvpt_tunes_on_the_worlds_validation_split_and_is_evaluated_with_its_prompts(tiny_grid):
    import yaml

    code, out, _ = tiny_grid("rvpt", [{"name": "rvpt", "params": {"shots": 2, "prompt_tokens": 4},
                                       "train": {"epochs": 1}}], model=VIT, val_per_class=2)
    assert code == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["defense"] for r in rows] == ["clean model", "none", "rvpt"]
    run = out / "world0" / "badnet" / "implant0" / "rvpt" / "clean0"
    settings = yaml.safe_load((run / "config.yaml").read_text())
    assert settings["objective"]["fewshot"] == str(out / "world0" / "data" / "zeroshot_val.csv")
    assert settings["train"]["optimizer"] == "sgd" and settings["train"]["lr"] == 2e-3  # the paper's
    assert json.loads((run / "metadata.json").read_text())["pairs"] == 2 * 48
    assert prompt_spec(load_model(run / "model.safetensors").model) == {"tokens": 4, "first": 1}
