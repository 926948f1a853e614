"""The trigger-inversion defense: what it finds before training, its losses, and its contract."""
import json

import pytest
import torch

from tacleaner.data.pairs import PairDataset, read_pairs
from tacleaner.defenses import DEFENSES, create_defense
from tacleaner.errors import TacleanerError
from tacleaner.scan import patch_masks

# Small probes, and the original design's one target, one size and L-inf probe (the defaults
# search three targets at three sizes with two probe kinds: test_the_defaults_* below).
FAST = {"probe_images": 24, "steps": 2, "patch_steps": 3, "patch_grid": 2, "invert_steps": 3,
        "candidates": 1, "sizes": "0.25", "probe": "linf"}


def test_patch_masks_are_squares_that_reach_the_corners():
    masks = dict(patch_masks(32, 32, 0.25, 3))
    assert len(masks) == 9 and all(float(m.sum()) == 64 for m in masks.values())  # 8 x 8 px
    assert masks["0,0"][0, 0, 0] == 1 and masks["1,1"][0, 31, 31] == 1 and masks["0.5,0.5"][0, 16, 16] == 1


def setup_invert(model, world, **params):
    inv = create_defense("invert", classes=str(world / "classes.json"), **{**FAST, **params})
    inv.setup(model, read_pairs(world / "clean.csv"), seed=0)
    return inv


def test_it_reports_a_target_and_one_trigger_per_place(trained, world, tmp_path):
    inv = setup_invert(trained, world)
    classes = json.loads((world / "classes.json").read_text())["classnames"]
    assert inv.triggers.found["target"] in classes and inv.triggers.found["attraction_rank"] == 1
    assert len(inv.triggers.found["triggers"]) == 4
    assert inv.triggers.masks.shape[0] == inv.triggers.patterns.shape[0] == 4
    flips = [t["flip_rate"] for t in inv.triggers.found["triggers"]]
    assert flips == sorted(flips, reverse=True) and all(0 <= f <= 1 for f in flips)  # best first
    inv.write_report(tmp_path)
    report = json.loads((tmp_path / "inversion.json").read_text())
    assert report["target"] == inv.triggers.found["target"] and (tmp_path / "inverted_trigger.png").stat().st_size > 0
    assert [h["epoch"] for h in report["inversions"]] == [0]
    best = setup_invert(trained, world, places="best", target=classes[2])  # the oracle target
    assert best.triggers.found["target"] == classes[2] and best.triggers.found["target_given"]
    assert best.triggers.masks.shape[0] == 1


def test_stamp_blends_the_trigger_in_pixel_space(trained, world):
    inv = setup_invert(trained, world, places="best")
    x = torch.randn(3, 3, 32, 32)
    x01 = x * inv.triggers.std + inv.triggers.mean
    m, p = inv.triggers.masks[0], inv.triggers.patterns[0]
    expected = ((1 - m) * x01 + m * p - inv.triggers.mean) / inv.triggers.std
    assert torch.allclose(inv.triggers.stamp(x, torch.zeros(3, dtype=torch.long)), expected, atol=1e-5)
    outside = m.expand(3, 32, 32) == 0
    assert torch.allclose(inv.triggers.stamp(x)[:, outside], x[:, outside], atol=1e-5)  # untouched outside the patch


def test_losses_pull_triggered_images_to_their_clean_embedding(trained, world):
    inv = setup_invert(trained, world, places="best")
    ds = PairDataset(read_pairs(world / "clean.csv"))
    batch = inv.collate([ds[i] for i in range(8)])
    trained.model.eval()  # BatchNorm as in the frozen copy: the model has not moved yet
    out = inv.losses(trained.model, batch)
    assert set(out) == {"clip_loss", "align_loss", "keep_loss"}
    assert float(out["keep_loss"].detach()) < 1e-8  # the model is its own starting point
    with torch.no_grad():
        stamped = trained.model.encode_image(inv.triggers.stamp(batch["images"], torch.zeros(8, dtype=torch.long)),
                                             normalize=True)
        clean0 = inv.frozen.encode_image(batch["images"], normalize=True)
    assert float(out["align_loss"].detach()) == pytest.approx(float((stamped - clean0).pow(2).sum(1).mean()), rel=1e-4)
    assert float(out["align_loss"].detach()) > 0


def test_without_classes_it_fails_before_any_run_folder(world, trained_checkpoint, tmp_path, capsys):
    from tacleaner_cli import main

    out = tmp_path / "run"
    code = main(["clean", "--defense", "invert", "--checkpoint", str(trained_checkpoint), "--data",
                 str(world / "clean.csv"), "--epochs", "1", "--out", str(out)])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invert needs classes=PATH" in err[0]
    with pytest.raises(TacleanerError, match="not a class of"):
        create_defense("invert", classes=str(world / "classes.json"), target="unicorn").check_ready()


def test_a_cleaning_run_writes_what_it_inverted(world, trained_checkpoint, tmp_path):
    from tacleaner_cli import main

    out = tmp_path / "run"
    params = [a for k, v in FAST.items() for a in ("--param", f"{k}={v}")]
    code = main(["--quiet", "clean", "--defense", "invert", "--checkpoint", str(trained_checkpoint), "--data",
                 str(world / "clean.csv"), "--epochs", "1", "--batch-size", "32", "--out", str(out),
                 "--param", f"classes={world / 'classes.json'}", *params])
    assert code == 0
    assert json.loads((out / "inversion.json").read_text())["inversions"][0]["triggers"]
    summary = [line for line in (out / "metrics.jsonl").read_text().splitlines() if "summary" in line][-1]
    assert "align_loss" in summary and "keep_loss" in summary


def test_a_run_that_inverts_every_epoch_resumes_mid_epoch_to_the_same_weights(world, trained_checkpoint, tmp_path,
                                                                              interrupted_at_step):
    """Stopped in its second epoch, after the trigger was inverted again on the model being
    cleaned: the checkpoint keeps that trigger, so the resumed run does not invert on its
    mid-epoch weights; weights bit for bit those of an uninterrupted run, and inversion.json
    lists both inversions."""
    from tacleaner.models import load_model
    from tacleaner.train import TrainConfig, train

    table = read_pairs(world / "clean.csv")  # 96 pairs: 6 steps of 16 per epoch
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-3, warmup_steps=2, save_every=2, threads=1)
    params = {**FAST, "classes": str(world / "classes.json"), "reinvert": True}
    torch.manual_seed(0)
    straight = load_model(trained_checkpoint)
    train(straight, table, create_defense("invert", **params), cfg, tmp_path / "a", progress=False)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        stopped = interrupted_at_step(DEFENSES.get("invert"), 9)  # in epoch 2, after its inversion
        train(load_model(trained_checkpoint), table, stopped(**params), cfg, tmp_path / "b", progress=False)
    state = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)
    assert state["epoch"] == 1 and state["within_epoch"]["batches"] == 2 and state["objective"]["inverted_at"] == 1
    torch.manual_seed(123)
    resumed = load_model(trained_checkpoint)
    train(resumed, table, create_defense("invert", **params), cfg, tmp_path / "b", resume=True, progress=False)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    report = json.loads((tmp_path / "b" / "inversion.json").read_text())
    assert [h["epoch"] for h in report["inversions"]] == [0, 1]
    assert report == json.loads((tmp_path / "a" / "inversion.json").read_text())


def test_rectangular_masks_keep_the_square_area():
    wide = dict(patch_masks(32, 32, 0.25, 2, aspect=4.0))
    assert all(float(m.sum()) == 64 for m in wide.values())  # 16 x 4 px, as the 8 x 8 square
    rows, cols = wide["0,0"][0].nonzero(as_tuple=True)
    assert (int(cols.max()) - int(cols.min()) + 1, int(rows.max()) - int(rows.min()) + 1) == (16, 4)


def test_several_candidates_are_inverted_and_the_one_that_flips_most_is_kept(trained, world, tmp_path):
    inv = setup_invert(trained, world, candidates=3, sizes="0.125,0.25", aspects="1,2")
    found = inv.triggers.found
    search = found["target_search"]
    assert [s["attraction_rank"] for s in search] == [1, 2, 3]
    best = max(search, key=lambda s: s["best_flip"])
    assert found["target"] == best["class"] and found["triggers"][0]["flip_rate"] == best["best_flip"]
    flips = sorted((s["best_flip"] for s in search), reverse=True)
    assert found["margin"] == pytest.approx(flips[0] - flips[1])
    assert len(found["triggers"]) == 2 * 2 * 4  # two sides x two ratios x 2 x 2 places
    assert {(t["side"], t["aspect"]) for t in found["triggers"]} == {(0.125, 1.0), (0.125, 2.0), (0.25, 1.0),
                                                                     (0.25, 2.0)}
    areas = {t["side"]: t["mask_area"] for t in found["triggers"] if t["aspect"] == 1.0}
    assert areas == {0.125: 16 / 1024, 0.25: 64 / 1024}
    inv.write_report(tmp_path)
    assert json.loads((tmp_path / "inversion.json").read_text())["inversions"][0]["target_search"] == search
    one = setup_invert(trained, world)  # one candidate: the first class only, no margin
    assert len(one.triggers.found["target_search"]) == 1 and one.triggers.found["margin"] is None
    with pytest.raises(TacleanerError, match="invert sizes='0.5,2'"):
        create_defense("invert", classes=str(world / "classes.json"), sizes="0.5,2")


def test_the_target_search_can_probe_with_patches(trained, world):
    """``probe``: the target search with the scan's patch probe, recorded with what it found."""
    inv = setup_invert(trained, world, probe="linf,patch", candidates=2)
    classes = json.loads((world / "classes.json").read_text())["classnames"]
    found = inv.triggers.found
    assert found["probe"] == "linf,patch" and found["target"] in classes and len(found["target_search"]) == 2
    assert setup_invert(trained, world).triggers.found["probe"] == "linf"
    with pytest.raises(TacleanerError, match="invert probe='gauss'"):
        create_defense("invert", classes=str(world / "classes.json"), probe="gauss")


def test_the_defaults_are_the_setting_measured_on_held_out_worlds(world):
    """invert's defaults are what experiments/invert-heldout.yaml ran on worlds nobody tuned on
    (docs/selection.md): three candidate targets, sides 1/8, 1/4 and 1/3, both probe kinds; the
    original design (``DESIGN``: one target, the quarter side, the L-inf probe) is a setting."""
    from pathlib import Path

    import yaml

    from tacleaner.defenses.invert import DESIGN

    grid = yaml.safe_load((Path(__file__).resolve().parents[1] / "experiments" / "invert-heldout.yaml").read_text())
    measured = next(d for d in grid["defenses"] if d["name"] == "invert")["params"]
    default = create_defense("invert", classes=str(world / "classes.json"))
    assert {k: default.params()[k] for k in measured} == measured
    assert [side for side, _ in default.shapes()] == [0.125, 0.25, 0.333]
    design = create_defense("invert", classes=str(world / "classes.json"), **DESIGN)
    assert design.shapes() == [(0.25, 1.0)] and design.params()["candidates"] == 1
    assert design.params()["probe"] == "linf"


def test_successive_halving_keeps_the_best_third_twice_and_each_survivor_is_scored_in_full(trained, world):
    """patch_search: 3 targets x 1 size x 4 places = 12 settings -> 4 -> 2 survivors, best
    first, each with its target, size and place; the same generator seed gives the same result;
    the flip rates are those of the survivors' patterns on every probe image not of their target."""
    from tacleaner.evaluate import build_classifier
    from tacleaner.patch_search import invert_patches_halving
    from tacleaner.scan import ZeroShotLogits

    inv = setup_invert(trained, world)
    model = trained.model.eval().requires_grad_(False)
    logits = ZeroShotLogits(trained, build_classifier(trained, inv.triggers.class_list, "cpu").float())
    x = inv.triggers.probe
    with torch.no_grad():
        own = logits(x).argmax(1)

    def run():
        return invert_patches_halving(logits, x, own, [0, 1, 2], [(0.25, 1.0)], 2, 5, 0.1, 64,
                                      torch.Generator().manual_seed(0))

    found = run()
    assert len(found) == 2 and [f["flip"] for f in found] == sorted((f["flip"] for f in found), reverse=True)
    assert all(f["target"] in (0, 1, 2) and f["side"] == 0.25 and f["place"] for f in found)
    again = run()
    assert all(torch.equal(a["pattern"], b["pattern"]) for a, b in zip(found, again))
    best = found[0]
    with torch.no_grad():
        others = x[own != best["target"]]
        z = logits((1 - best["mask"]) * others + best["mask"] * best["pattern"])
    assert best["flip"] == pytest.approx(float((z.argmax(1) == best["target"]).float().mean()))
    model.requires_grad_(True)


def test_halving_search_keeps_its_survivors_and_a_reinversion_goes_on_from_them(trained, world):
    inv = setup_invert(trained, world, search="halving", candidates=2, sizes="0.125,0.25", patch_steps=5)
    found = inv.triggers.found
    assert found["target"] == max(found["target_search"], key=lambda s: s["best_flip"] or -1)["class"]
    kept = len(found["triggers"])
    assert 1 <= kept <= 2 and inv.triggers.masks.shape[0] == kept  # 2 x 2 x 4 = 16 -> 6 -> 2, split by target
    masks, patterns = inv.triggers.masks.clone(), inv.triggers.patterns.clone()
    inv.on_epoch_start(1)
    assert inv.triggers.found["target"] == found["target"] and torch.equal(inv.triggers.masks, masks)
    assert not torch.equal(inv.triggers.patterns, patterns)  # optimised further on the model as it is
    with pytest.raises(TacleanerError, match="invert settings out of range"):
        create_defense("invert", classes=str(world / "classes.json"), search="greedy")
