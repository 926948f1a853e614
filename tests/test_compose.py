"""Defenses compose: ``a+b`` sums a's losses and b's extra terms, with the parameters of both."""
import pytest
import torch

from tacleaner.data.pairs import PairDataset, read_pairs
from tacleaner.defenses import DEFENSES, create_defense
from tacleaner.errors import TacleanerError


def test_a_combination_has_the_parameters_and_training_defaults_of_its_parts():
    combo = create_defense("tacleaner+par", w_ta=0.25, tau=1.5, w_clip=0.5)
    ta, par = combo.parts
    assert (ta.name, par.name) == ("tacleaner", "par")
    assert ta.w_ta == 0.25 and par.tau == 1.5 and ta.w_clip == par.w_clip == 0.5  # a shared knob goes to both
    assert combo.params()["w_ta"] == 0.25 and combo.params()["tau"] == 1.5
    cls = DEFENSES.get("tacleaner+par")
    assert cls.train_defaults == DEFENSES.get("par").train_defaults  # TA-Cleaner brings none
    assert cls.relative_cost == pytest.approx(DEFENSES.get("tacleaner").relative_cost + DEFENSES.get("par").relative_cost)
    assert "tacleaner+par" in DEFENSES and "tacleaner+nothing" not in DEFENSES


@pytest.mark.parametrize("name, needle", [("tacleaner+bogus", "unknown defense 'bogus'"),
                                          ("par+par", "names a part twice"), ("par+", "two or more")])
def test_bad_combinations_are_one_line_errors(name, needle):
    with pytest.raises(TacleanerError, match=needle):
        create_defense(name)


def test_an_unknown_parameter_names_the_combinations_valid_ones():
    with pytest.raises(TacleanerError, match="no parameter 'nope'; valid: .*tau.*w_ta"):
        create_defense("tacleaner+par", nope=1)


def test_losses_are_the_first_parts_and_the_others_extra_terms(tiny, world):
    """cleanclip+par: CleanCLIP's clip and in-modal terms on its batch, PAR's distance term on
    its own (augmented) batch, the CLIP loss once."""
    table = read_pairs(world / "clean.csv")
    combo = create_defense("cleanclip+par", w_inmodal=0.5, noise_p=1.0, erase_p=0.0)
    combo.setup(tiny, table, seed=0)
    ds = PairDataset(table)
    torch.manual_seed(0)
    batch = combo.collate([ds[i] for i in range(8)])
    assert not torch.equal(batch["parts"][0]["images"], batch["parts"][1]["images"])  # PAR's noise on its copy only
    with torch.no_grad():  # move the model away from PAR's frozen copy
        for p in tiny.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tiny.model.eval()
    out = combo.losses(tiny.model, batch)
    assert set(out) == {"clip_loss", "inmodal_loss", "par_loss"}
    cc, par = combo.parts
    own = cc.losses(tiny.model, batch["parts"][0])
    theirs = par.losses(tiny.model, batch["parts"][1])
    for key in ("clip_loss", "inmodal_loss"):
        assert torch.allclose(out[key], own[key])
    assert torch.allclose(out["par_loss"], theirs["par_loss"]) and float(out["par_loss"].detach()) < 0


def test_a_combination_trains_from_the_command_line_and_records_its_name(world, trained_checkpoint, tmp_path):
    import yaml

    from tacleaner_cli import main

    out = tmp_path / "run"
    code = main(["--quiet", "clean", "--defense", "cleanclip+par", "--checkpoint", str(trained_checkpoint),
                 "--data", str(world / "clean.csv"), "--epochs", "1", "--batch-size", "32", "--lr", "1e-4",
                 "--param", "w_inmodal=0.5", "--param", "tau=1.0", "--out", str(out)])
    assert code == 0
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["objective"]["name"] == "cleanclip+par" and cfg["objective"]["tau"] == 1.0
    assert cfg["train"]["lr"] == 1e-4 and cfg["train"]["lr_end"] == 1e-9  # the user's lr over PAR's schedule
    summary = [line for line in (out / "metrics.jsonl").read_text().splitlines() if "summary" in line][-1]
    assert "par_loss" in summary and "inmodal_loss" in summary
