"""SafeCLIP: the mixture split, the nearest-neighbour unimodal loss, the phases, the low-rate
warm-up step, and a run on a really poisoned set with the split measured against its truth."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tacleaner.data.pairs import PairDataset, read_pairs
from tacleaner.defenses import create_defense
from tacleaner.defenses.safeclip import gaussian_mixture_posterior, split_safe
from tacleaner.errors import TacleanerError
from tacleaner.models import create_model, load_model, save_model
from tacleaner.train import TrainConfig, train


def test_the_mixture_separates_two_clusters():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0.1, 0.03, 300), rng.normal(0.5, 0.05, 700)])
    p = gaussian_mixture_posterior(x)
    assert p[300:].mean() > 0.98 and p[:300].mean() < 0.02
    assert np.array_equal(p, gaussian_mixture_posterior(x))  # deterministic
    assert np.all(gaussian_mixture_posterior(np.full(5, 0.3)) == 0.5)


def test_the_split_by_threshold_then_by_share_with_ties_by_similarity():
    sim = np.array([0.9, 0.1, 0.5, 0.6, 0.2])
    post = np.array([1.0, 0.0, 0.95, 1.0, 0.5])
    assert split_safe(sim, post, None, 0.9).tolist() == [True, False, True, True, False]
    # two rows at posterior 1.0: the higher similarity first
    assert split_safe(sim, post, 0.2, 0.9).tolist() == [True, False, False, False, False]
    assert split_safe(sim, post, 0.6, 0.9).tolist() == [True, False, True, True, False]


def test_the_unimodal_loss_picks_nearest_neighbours_from_the_bank():
    defense = create_defense("safeclip", bank_size=4)
    defense.banks = [torch.eye(4), torch.eye(4)]
    z1 = F.normalize(torch.tensor([[0.9, 0.1, 0, 0], [0, 0, 0.2, 1.0]]), dim=-1)
    z2 = F.normalize(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1.0]]), dim=-1)
    scale = torch.tensor(10.0)
    loss = defense.unimodal_loss(z1, z2, 0, scale)
    nn = torch.eye(4)[[0, 3]]  # the neighbours of z1's rows
    assert torch.allclose(loss, F.cross_entropy(scale * z2 @ nn.T, torch.arange(2)))


@pytest.fixture(scope="module")
def poisoned(world, tmp_path_factory):
    from tacleaner_cli import main

    d = tmp_path_factory.mktemp("safeclip")
    assert main(["--quiet", "poison", "--data", str(world / "implant.csv"), "--attack", "badnet", "--target",
                 "yellow star", "--num", "40", "--out", str(d / "poison"), "--classes", str(world / "classes.json"),
                 "--param", "patch_frac=0.25", "--param", "location=bottom-right"]) == 0
    return d / "poison"


def test_phases_losses_and_the_split_on_a_poisoned_set(poisoned, trained_checkpoint, tmp_path):
    table = read_pairs(poisoned / "data.csv")
    defense = create_defense("safeclip", unimodal_epochs=1, clip_warmup_epochs=1, aug_images=False,
                             poisoned=str(poisoned / "poisoned_indices.json"), ratio_step=0.05)
    bundle = load_model(trained_checkpoint)
    defense.setup(bundle, table, seed=0)
    ds = PairDataset(table)
    batch = defense.collate([ds[i] for i in range(16)])
    defense.on_epoch_start(0)
    out = defense.losses(bundle.model, batch)
    assert defense.phase == "unimodal" and float(out["clip_loss"]) == 0 and float(out["unimodal_loss"]) > 0
    assert defense.lr_factor() == 1.0
    defense.on_epoch_start(1)
    out = defense.losses(bundle.model, batch)
    assert defense.phase == "clip-warmup" and float(out["unimodal_loss"]) == 0 and float(out["clip_loss"]) > 0
    assert defense.lr_factor() == 0.01 and float(out["safe_rows"]) == 16
    defense.on_epoch_start(2)
    defense.on_epoch_start(3)
    first, second = defense.epochs_log
    truth = set(json.loads((poisoned / "poisoned_indices.json").read_text()))
    risky = {i for i, s in enumerate(defense.safe.tolist()) if not s}
    assert second["risky"] == len(risky) and second["poisoned_risky"] == len(risky & truth)
    assert second["recall"] == round(len(risky & truth) / len(truth), 4)
    assert second["precision"] == round(len(risky & truth) / len(risky), 4)
    assert second["safe_share"] == pytest.approx(min(first["safe_share"] + 0.05, 0.85), abs=1 / len(table))
    out = defense.losses(bundle.model, batch)
    safe_in_batch = int(defense.safe[batch["index"]].sum())
    assert float(out["safe_rows"]) == safe_in_batch


def test_the_clip_warmup_step_runs_at_a_hundredth_of_the_rate(world, tmp_path):
    """SGD without momentum: the first step's change of the weights is lr x gradient, so the
    warm-up's step is 0.01 times the same step at the full rate."""
    table = read_pairs(world / "clean.csv")
    changes = []
    for factor in (1.0, 0.01):
        torch.manual_seed(0)
        bundle = create_model("tacleaner-tiny-rn")
        before = bundle.model.visual.conv1.weight.detach().clone()
        train(bundle, table, create_defense("safeclip", unimodal_epochs=0, clip_warmup_epochs=1, aug_images=False,
                                            warmup_lr_factor=factor),
              TrainConfig(epochs=1, batch_size=16, lr=0.1, warmup_steps=0, max_steps=1, optimizer="sgd",
                          momentum=0.0, weight_decay=0.0, threads=1), tmp_path / f"f{factor}", progress=False)
        changes.append((bundle.model.visual.conv1.weight.detach() - before).abs().sum())
    assert float(changes[1] / changes[0]) == pytest.approx(0.01, rel=1e-3)


def test_a_run_under_safeclip_writes_its_split_and_resumes(poisoned, trained_checkpoint, tmp_path,
                                                            interrupted_at_step):
    """Two epochs straight, and the same stopped in the second epoch (the first's split share
    and memory banks saved) and resumed: the same weights and the same split record."""
    from tacleaner.defenses import DEFENSES

    table = read_pairs(poisoned / "data.csv")
    params = {"unimodal_epochs": 0, "clip_warmup_epochs": 0, "poisoned": str(poisoned / "poisoned_indices.json"),
              "aug_images": False}

    def run(folder, defense):
        torch.manual_seed(0)
        bundle = load_model(trained_checkpoint)
        train(bundle, table, defense, TrainConfig(epochs=2, batch_size=32, lr=1e-4, warmup_steps=1, threads=1),
              tmp_path / folder, progress=False, resume=(tmp_path / folder).exists())
        return bundle

    straight = run("a", create_defense("safeclip", **params))
    with pytest.raises(KeyboardInterrupt):
        run("b", interrupted_at_step(DEFENSES.get("safeclip"), 7)(**params))  # 5 steps per epoch: in the second
    resumed = run("b", create_defense("safeclip", **params))
    assert all(torch.equal(v, resumed.model.state_dict()[k]) for k, v in straight.model.state_dict().items())
    assert json.loads((tmp_path / "b" / "safeclip.json").read_text()) == \
        json.loads((tmp_path / "a" / "safeclip.json").read_text())
    report = json.loads((tmp_path / "a" / "safeclip.json").read_text())
    assert [e["epoch"] for e in report["epochs"]] == [1, 2]
    assert all(0 <= e["precision"] <= 1 and 0 <= e["recall"] <= 1 for e in report["epochs"])
    assert "risky precision" in (tmp_path / "a" / "log.txt").read_text()
    meta = json.loads((tmp_path / "a" / "metadata.json").read_text())
    assert meta["safeclip"] == report["epochs"][-1]
    save_model(load_model(tmp_path / "a" / "model.safetensors"), tmp_path / "copy.safetensors")  # a plain model


def test_bad_settings_are_one_line_errors():
    with pytest.raises(TacleanerError, match="safeclip needs"):
        create_defense("safeclip", ratio_cap=0)


def test_in_a_grid_safeclip_trains_the_implant_again_under_its_objective(tiny_grid):
    """``defenses: [{name: safeclip}]`` in an experiment: the clean model trained again on the
    poisoned implant set under SafeCLIP with the implant's settings, the split measured against
    the poisoning run's truth; its rows sit beside an undefended implant's."""
    import yaml

    code, out, _ = tiny_grid("safeclip", [{"name": "safeclip", "params": {"unimodal_epochs": 0,
                                                                          "clip_warmup_epochs": 0}}],
                             implant_epochs=2)
    assert code == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["defense"] for r in rows] == ["clean model", "none", "safeclip"]
    unit = out / "world0" / "badnet" / "implant0"
    trained = yaml.safe_load((unit / "safeclip" / "clean0" / "config.yaml").read_text())
    assert trained["objective"]["name"] == "safeclip" and trained["objective"]["unimodal_epochs"] == 0
    assert trained["objective"]["poisoned"] == str(unit / "poison" / "poisoned_indices.json")
    assert trained["train"]["epochs"] == 2  # the implant's settings
    assert trained["data"] == str(unit / "poison" / "data.csv")
    report = json.loads((unit / "safeclip" / "clean0" / "safeclip.json").read_text())
    assert [e["epoch"] for e in report["epochs"]] == [1, 2] and report["epochs"][0]["poisoned"] == 16
