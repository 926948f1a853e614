"""PAR (Perturb and Recover): the capped distance to the frozen starting model, its augmentation,
and a short cleaning run through the shared loop."""
import pytest
import torch

from tacleaner.data.pairs import read_pairs
from tacleaner.defenses import create_defense
from tacleaner.errors import TacleanerError


def setup_par(tiny, world, **params):
    par = create_defense("par", **params)
    par.setup(tiny, read_pairs(world / "clean.csv"), seed=0)
    return par


def test_distance_terms_match_their_definition_and_switch_off_above_tau(tiny, world):
    par = setup_par(tiny, world, noise_p=0.0, erase_p=0.0)
    from tacleaner.data.pairs import PairDataset

    ds = PairDataset(read_pairs(world / "clean.csv"))
    batch = par.collate([ds[i] for i in range(8)])
    with torch.no_grad():  # move the model away from its frozen copy
        for p in tiny.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = par.losses(tiny.model, batch)
    with torch.no_grad():
        img = tiny.model.encode_image(batch["images"], normalize=True)
        img0 = par.frozen.encode_image(batch["images"], normalize=True)
        txt = tiny.model.encode_text(batch["texts"], normalize=True)
        txt0 = par.frozen.encode_text(batch["texts"], normalize=True)
    d_img = ((img - img0) ** 2).sum(1).mean()
    d_txt = ((txt - txt0) ** 2).sum(1).mean()
    assert 0 < d_img < 2.15 and 0 < d_txt < 2.15
    assert torch.allclose(out["par_loss"], -0.5 * (d_img + d_txt), atol=1e-6)
    out["par_loss"].backward()  # a gradient that pushes away from the start
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tiny.model.visual.parameters())
    tau = float(d_img) * 0.5  # below the image distance: that term is switched off
    par_low = setup_par(tiny, world, noise_p=0.0, erase_p=0.0, tau=tau)
    par_low.frozen = par.frozen
    capped = float(par_low.losses(tiny.model, batch)["par_loss"])
    expected = -0.5 * (float(d_txt) if float(d_txt) <= tau else 0.0)
    assert abs(capped - expected) < 1e-5


def test_augmentation_noise_only_brightens_and_erases_a_small_square(tiny, world):
    par = setup_par(tiny, world, noise_p=1.0, erase_p=0.0)
    x = torch.zeros(4, 3, 32, 32)  # the normalised mean colour
    torch.manual_seed(0)
    y01 = par.augment(x.clone()) * par.std + par.mean
    x01 = x * par.std + par.mean
    assert (y01 >= x01 - 1e-6).all() and (y01 > x01 + 1e-3).any()  # the public code's clipped noise
    par = setup_par(tiny, world, noise_p=0.0, erase_p=1.0)
    y = par.augment(torch.ones(4, 3, 32, 32))
    erased = (y == 0).all(dim=1).sum(dim=(1, 2))
    assert ((erased >= 1) & (erased <= 0.02 * 32 * 32)).all()


def test_bad_par_parameters_are_refused():
    for bad in ({"tau": 0}, {"noise_p": 2}, {"erase_scale": [0.5, 0.1]}):
        try:
            create_defense("par", **bad)
        except TacleanerError as e:
            assert "par needs" in str(e)
        else:
            raise AssertionError(bad)


def test_par_brings_its_learning_rate_schedule_under_the_users_settings(world, tmp_path, capsys):
    """PAR's public train.py: lr 3e-6 reached in a straight line from 3e-5 over half the steps,
    then a cosine to 1e-9; a setting the user gives wins."""

    from tacleaner.train import TrainConfig, schedule
    from tacleaner_cli import main

    cfg = TrainConfig(**{**create_defense("par").train_defaults, "epochs": 2})
    f = schedule(cfg, 10)
    lrs = [cfg.lr * f(s) for s in range(10)]
    assert lrs[0] == pytest.approx(3e-5) and lrs[4] == pytest.approx(3e-6)  # 5 warm-up steps, both ends
    assert lrs[0] > lrs[2] > lrs[4] and lrs[5] == pytest.approx(3e-6) and lrs[9] < lrs[6]
    assert cfg.lr * f(10) == pytest.approx(1e-9)
    legacy = schedule(TrainConfig(warmup_steps=4, lr=1.0), 12)  # the default schedule is unchanged
    assert [legacy(s) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]

    from tacleaner.models import create_model, save_model

    ckpt = tmp_path / "m.safetensors"
    save_model(create_model("tacleaner-tiny-rn"), ckpt)
    for extra, lr in (([], 3e-6), (["--lr", "1e-5"], 1e-5)):
        out = tmp_path / f"run{len(extra)}"
        assert main(["--quiet", "clean", "--defense", "par", "--checkpoint", str(ckpt), "--data",
                     str(world / "clean.csv"), "--out", str(out), "--epochs", "1", "--batch-size", "32",
                     "--max-steps", "1", *extra]) == 0
        import yaml

        train = yaml.safe_load((out / "config.yaml").read_text())["train"]
        assert train["lr"] == lr and train["lr_start"] == 3e-5 and train["weight_decay"] == 1e-4
    from tacleaner.train import with_defaults

    given = with_defaults(create_defense("par").train_defaults, {"warmup_steps": 20})
    assert given["warmup_steps"] == 20 and "warmup_fraction" not in given  # a warm-up the user gives is kept
    capsys.readouterr()
