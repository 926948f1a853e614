"""Poisoned-sample detection: the detectors on hand-made embeddings, the AUROC and removal
arithmetic, and the streaming scorer on real image files through a real open_clip model."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tacleaner.data.pairs import read_pairs
from tacleaner.detect import DEFAULT_Z, DetectConfig, detect
from tacleaner.detect.cut import removal_mask, robust_z
from tacleaner.detect.detectors import DETECTORS, Neighbours, lid_mle
from tacleaner.detect.outputs import auroc
from tacleaner.detect.score import DEFAULT_DETECTOR, Reference, reference_rows, score_pairs
from tacleaner.errors import TacleanerError


def cluster_with_outliers(seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """300 points in a tight Gaussian blob and 6 scattered far from it and from each other."""
    g = torch.Generator().manual_seed(seed)
    blob = 0.05 * torch.randn(300, 8, generator=g)
    far = 3.0 * torch.randn(6, 8, generator=g) + 2.0
    points = torch.cat([blob, far])
    truth = np.zeros(len(points), dtype=bool)
    truth[300:] = True
    return points, truth


def test_density_ranks_a_tight_cluster_of_many_above_spread_points():
    """The backdoored model's picture at a high poison rate: 40 near-identical embeddings among
    300 spread ones; with k < 40 they are each other's neighbours."""
    g = torch.Generator().manual_seed(1)
    points = torch.cat([torch.randn(300, 8, generator=g), 0.01 * torch.randn(40, 8, generator=g) + 1.0])
    truth = np.arange(340) >= 300
    rows = list(range(340))
    ref = Reference.build(rows, points, k=8)
    assert auroc(ref.score("density", rows, points, k=8).numpy(), truth) == 1.0
    assert auroc(ref.score("k-distance", rows, points, k=8).numpy(), truth) == 0.0


@pytest.mark.parametrize("name", ["k-distance", "slof", "dao"])
def test_each_detector_ranks_isolated_points_above_a_dense_cluster(name):
    points, truth = cluster_with_outliers()
    rows = list(range(len(points)))
    ref = Reference.build(rows, points, k=8)
    scores = ref.score(name, rows, points, k=8).numpy()
    assert auroc(scores, truth) == 1.0
    assert np.isfinite(scores).all()


def test_a_point_is_never_its_own_neighbour_but_its_duplicate_is():
    points, _ = cluster_with_outliers()
    points = torch.cat([points, points[:1]])  # row 306 duplicates row 0
    rows = list(range(len(points)))
    ref = Reference.build(rows, points, k=4)
    nb_dist, nb_index = torch.cdist(points[:2], points).topk(5, largest=False)
    assert nb_index[1, 0] == 1 and nb_dist[1, 0] == 0  # what plain cdist gives: itself first
    scored = ref.score("k-distance", [1], points[1:2], k=4)
    assert scored.item() == pytest.approx(nb_dist[1, 4].item())  # self excluded: 4th other point
    assert ref.score("k-distance", [0], points[:1], k=1).item() == 0.0  # the duplicate is a neighbour


def test_slof_and_dao_follow_their_definitions_on_a_small_case():
    dist = torch.tensor([[1.0, 2.0]])
    index = torch.tensor([[0, 1]])
    kdist = torch.tensor([4.0, 1.0])
    lid = torch.tensor([1.0, 3.0])
    nb = Neighbours(dist, index, kdist, lid, torch.tensor([7.0]))
    assert DETECTORS.get("k-distance")(nb).item() == 2.0
    # SLOF: the mean of the density ratios (Schubert et al.; Huang et al.'s code), not a ratio of means
    assert DETECTORS.get("slof")(nb).item() == pytest.approx((2 / 4 + 2 / 1) / 2)
    dao = ((2 / 4) ** 1 + (2 / 1) ** 3) / 2
    assert DETECTORS.get("dao")(nb).item() == pytest.approx(math.log(dao))
    assert DETECTORS.get("norm")(nb).item() == 7.0


def test_every_detector_matches_a_hand_computation_on_five_points():
    """Five raw features on a line (lengths 1, 2, 4, 7.5, 20), k = 2, every point in the
    reference: the distances, k-distances, LIDs and each score worked out by hand."""
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [4.0, 0.0], [7.5, 0.0], [20.0, 0.0]], dtype=torch.float64)
    rows = list(range(5))
    ref = Reference.build(rows, x, k=2, features="raw")
    # 2 nearest others: 0 -> (1: 1, 2: 3); 1 -> (0: 1, 2: 2); 2 -> (1: 2, 0: 3); 3 -> (2: 3.5, 1: 5.5);
    # 4 -> (3: 12.5, 2: 16)
    kdist = [3.0, 2.0, 3.0, 5.5, 16.0]
    nbrs = [(1, 2), (0, 2), (1, 0), (2, 1), (3, 2)]
    first = [1.0, 1.0, 2.0, 3.5, 12.5]
    lid = [-1 / (math.log(f / kd) / 2) for f, kd in zip(first, kdist)]  # (log(d1/d2) + log(d2/d2)) / 2
    assert ref.kdist.tolist() == pytest.approx(kdist)
    assert ref.lid.tolist() == pytest.approx(lid)
    agreement = torch.tensor([0.9, 0.1, -0.2, 0.5, 0.3], dtype=torch.float64)
    nb = ref.neighbours(rows, x, k=2, agreement=agreement)
    score = {name: DETECTORS.get(name)(nb).tolist() for name in DETECTORS.names()}
    assert score["disagreement"] == pytest.approx([-0.9, -0.1, 0.2, -0.5, -0.3])
    assert score["k-distance"] == pytest.approx(kdist)
    assert score["norm"] == pytest.approx([1.0, 2.0, 4.0, 7.5, 20.0])
    assert score["density"] == pytest.approx([-math.log(d) for d in kdist])
    assert score["slof"] == pytest.approx([sum(kdist[q] / kdist[o] for o in nbrs[q]) / 2 for q in rows])
    assert score["dao"] == pytest.approx(
        [math.log(sum((kdist[q] / kdist[o]) ** lid[o] for o in nbrs[q]) / 2) for q in rows])
    # normalised features: every point lies on the unit circle at angle 0, all distances 0
    flat = Reference.build(rows, x, k=2, features="normalised")
    assert flat.score("k-distance", rows, x, k=2).tolist() == pytest.approx([0.0] * 5)
    assert flat.score("norm", rows, x, k=2).tolist() == pytest.approx([1.0, 2.0, 4.0, 7.5, 20.0])


def test_lid_of_points_spread_evenly_on_a_line_is_about_one():
    d = torch.arange(1, 101, dtype=torch.float64).unsqueeze(0)  # distances 1..100: uniform in 1-D
    assert lid_mle(d).item() == pytest.approx(1.0, rel=0.05)


def test_auroc_matches_counting_every_pair_with_ties_half():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 200).astype(float)
    truth = rng.random(200) < 0.2
    pos, neg = scores[truth], scores[~truth]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert auroc(scores, truth) == pytest.approx(pairs / (len(pos) * len(neg)))
    with pytest.raises(TacleanerError, match="both"):
        auroc(scores, np.zeros(200, dtype=bool))


def test_removal_takes_the_top_fraction_or_a_threshold_and_always_the_unscored():
    scores = np.array([0.1, 0.9, np.nan, 0.5, 0.7, 0.3, 0.2, 0.8, 0.4, 0.6, 0.05])
    mask, cut = removal_mask(scores, remove=0.2)  # 10 scored: 2 removed, plus the unscored row
    assert sorted(np.flatnonzero(mask)) == [1, 2, 7] and cut == 0.8
    mask, cut = removal_mask(scores, threshold=0.65)
    assert sorted(np.flatnonzero(mask)) == [1, 2, 4, 7] and cut == 0.65
    mask, cut = removal_mask(scores, remove=0.0)
    assert list(np.flatnonzero(mask)) == [2] and math.isinf(cut)


def test_the_robust_z_cut_needs_no_rate_and_follows_the_clean_rows_spread():
    # scored: 0..9 and two far values; median 5.5, MAD 3.0 (scaled: 4.4478)
    scores = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 30.0, 100.0, np.nan])
    z = robust_z(scores)
    assert z[11] == pytest.approx((100 - 5.5) / (1.4826 * 3.0)) and np.isnan(z[12])
    mask, cut = removal_mask(scores, z=3.5)
    assert sorted(np.flatnonzero(mask)) == [10, 11, 12] and cut == 30.0
    # the same clean rows with ten times the poison: the cut still falls between them
    many = np.concatenate([np.arange(100.0), np.full(10, 1000.0)])
    mask, _ = removal_mask(many, z=3.5)
    assert mask[100:].all() and not mask[:100].any()
    mask, cut = removal_mask(np.ones(20), z=3.5)  # equal scores: nothing stands out
    assert not mask.any() and math.isinf(cut)


def test_signals_joined_by_plus_add_their_robust_z_scores():
    from tacleaner.detect.score import combine

    a = np.array([1.0, 2.0, 3.0, 4.0, 50.0])
    b = np.array([10.0, 30.0, 20.0, 40.0, 0.0])
    np.testing.assert_allclose(combine({"a": a, "b": b}), robust_z(a) + robust_z(b))
    assert combine({"a": a}) is a  # one signal: its own scores, unscaled
    assert DetectConfig(detector="norm+disagreement").parts() == ["norm", "disagreement"]
    with pytest.raises(TacleanerError, match="unknown detector 'lof'"):
        DetectConfig(detector="norm+lof")


def test_reference_sample_is_seeded_and_covers_a_small_set():
    assert reference_rows(10, 20, 0) == list(range(10))
    a, b = reference_rows(1000, 50, 1), reference_rows(1000, 50, 1)
    assert a == b and len(set(a)) == 50 and a == sorted(a) and a != reference_rows(1000, 50, 2)


def test_bad_settings_are_refused_by_name():
    with pytest.raises(TacleanerError, match="unknown detector 'lof'"):
        DetectConfig(detector="lof")
    with pytest.raises(TacleanerError, match="larger than k"):
        DetectConfig(k=16, reference=16)


@pytest.fixture(scope="module")
def poisoned(world, tmp_path_factory):
    """The test world's implant split with a BadNet patch covering 90% of the image on 16 of its
    160 pairs: those 16 images are nearly one image, a tight cluster to any model."""
    from tacleaner.attacks import create_attack, poison_dataset
    from tacleaner.data.zeroshot import read_classes

    out = tmp_path_factory.mktemp("detect") / "poison"
    poison_dataset(world / "implant.csv", create_attack("badnet", patch_frac=0.9), "yellow star", 16, out, seed=0,
                   templates=read_classes(world / "classes.json").templates)
    return out


def test_detect_writes_every_row_in_order_and_a_clean_set_that_trains(poisoned, trained, tmp_path):
    table = read_pairs(poisoned / "data.csv")
    cfg = DetectConfig(detector="density", k=8, reference=160, batch_size=32, features="normalised")
    out = tmp_path / "det"
    summary = detect(trained, table, cfg, out, torch.device("cpu"), remove=0.1,
                     poisoned=poisoned / "poisoned_indices.json", num_workers=0)
    with open(out / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["row"]) for r in rows] == list(range(len(table)))
    assert [r["caption"] for r in rows] == list(table.captions)
    assert rows[3]["image"] == table.images.rows[3]  # as the input CSV wrote it
    scores = np.array([float(r["score"]) for r in rows])
    kept = read_pairs(out / "clean.csv")
    assert len(kept) == len(table) - 16 == summary["kept"]
    top = set(np.argsort(-scores, kind="mergesort")[:16].tolist())
    assert set(kept.captions) == {c for i, c in enumerate(table.captions) if i not in top}
    assert all(Path(p).is_file() for p in kept.images)  # paths relative to the output folder resolve
    saved = json.loads((out / "summary.json").read_text())
    assert saved["removed"] == 16 and saved["truth"]["poisoned"] == 16
    truth = np.zeros(len(table), dtype=bool)
    truth[json.loads((poisoned / "poisoned_indices.json").read_text())] = True
    assert saved["truth"]["auroc"] == pytest.approx(auroc(scores, truth), abs=1e-3)
    # the scores are the definition's, computed here from the model's embeddings by brute force
    from tacleaner.detect.score import embed_rows

    _, emb = embed_rows(trained, table, range(len(table)), torch.device("cpu"), 32, 0, {})
    d = torch.cdist(emb, emb).fill_diagonal_(float("inf"))
    expected = -torch.log(d.sort(dim=1).values[:, 7]).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-5)
    assert saved["truth"]["removed_poisoned"] == int(truth[sorted(top)].sum())
    assert (out / "histogram.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_norm_and_disagreement_are_the_raw_feature_length_and_the_caption_cosine(poisoned, trained):
    """The rate-free signals computed by brute force from the model: the image feature's length,
    and minus the cosine of image and caption features; joined, the sum of robust z-scores."""
    from tacleaner.data.pairs import load_image

    table = read_pairs(poisoned / "data.csv")
    trained.model.eval()  # batch norm with its running statistics, as scoring runs it
    with torch.no_grad():
        images = torch.stack([trained.preprocess(load_image(p)) for p in table.images])
        img = trained.model.encode_image(images)
        txt = trained.model.encode_text(trained.tokenizer(list(table.captions)), normalize=True)
    norm = img.norm(dim=1).double().numpy()
    dis = -(torch.nn.functional.normalize(img, dim=-1) * txt).sum(dim=1).double().numpy()
    for name, expected in (("norm", norm), ("disagreement", dis), ("norm+disagreement", robust_z(norm) + robust_z(dis))):
        got, _ = score_pairs(trained, table, DetectConfig(detector=name, batch_size=40, chunk=64), torch.device("cpu"),
                             num_workers=0)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_scores_do_not_depend_on_the_chunking(poisoned, trained):
    table = read_pairs(poisoned / "data.csv")
    whole, _ = score_pairs(trained, table, DetectConfig(k=8, reference=64, chunk=4096, batch_size=8),
                           torch.device("cpu"), num_workers=0)
    pieces, _ = score_pairs(trained, table, DetectConfig(k=8, reference=64, chunk=24, batch_size=8),
                            torch.device("cpu"), num_workers=0)
    np.testing.assert_allclose(whole, pieces, rtol=1e-6)


def test_an_unreadable_image_is_left_unscored_counted_and_out_of_the_clean_set(poisoned, trained, tmp_path):
    lines = (poisoned / "data.csv").read_text().splitlines()
    (poisoned / "broken.png").write_bytes(b"not a png")
    lines[2] = "broken.png,a broken image"  # data row 1
    data = poisoned / "with_broken.csv"  # beside data.csv, so that its relative paths hold
    data.write_text("\n".join(lines) + "\n")
    table = read_pairs(data)
    with pytest.warns(UserWarning, match="1 pair.s. not scored .1 unreadable image"):
        summary = detect(trained, table, DetectConfig(k=8, reference=64), tmp_path / "det", torch.device("cpu"),
                         remove=0.0, num_workers=0)
    assert summary["unscored"] == {"unreadable_image": 1}
    with open(tmp_path / "det" / "scores.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[1]["score"] == "" and all(r["score"] for i, r in enumerate(rows) if i != 1)
    assert "a broken image" not in read_pairs(tmp_path / "det" / "clean.csv").captions


def test_detect_refuses_to_replace_a_folder_it_did_not_make(poisoned, trained, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(TacleanerError, match="mine"):
        detect(trained, read_pairs(poisoned / "data.csv"), DetectConfig(k=8, reference=64), tmp_path / "mine",
               torch.device("cpu"), num_workers=0)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_the_command_writes_its_folder_and_refuses_bad_options_in_one_line(poisoned, trained_checkpoint, tmp_path,
                                                                           capsys):
    from tacleaner_cli import main
    from tacleaner_cli.detect import DETECTOR_NAMES

    assert list(DETECTOR_NAMES) == DETECTORS.names()  # the parser's light list is the registry's
    from tacleaner_cli.parser import build_parser

    defaults = build_parser()._subparsers._group_actions[0].choices["detect"].parse_args(
        ["--checkpoint", "m", "--data", "d", "--out", "o"])
    assert defaults.detector == DEFAULT_DETECTOR == DetectConfig().detector  # the parser's default is the library's
    base = ["--quiet", "detect", "--checkpoint", str(trained_checkpoint), "--data", str(poisoned / "data.csv"),
            "--k", "8", "--reference", "64"]
    assert main([*base, "--out", str(tmp_path / "d"), "--poisoned", str(poisoned / "poisoned_indices.json")]) == 0
    printed = capsys.readouterr().out
    assert "scored 160 of 160 pairs with norm+disagreement" in printed and "AUROC" in printed
    # the default cut: every pair whose robust z-score is at least 2, from the scores alone
    with open(tmp_path / "d" / "scores.csv", newline="") as f:
        scores = np.array([float(r["score"]) for r in csv.DictReader(f)])
    expected = int((robust_z(scores) >= DEFAULT_Z).sum())
    summary = json.loads((tmp_path / "d" / "summary.json").read_text())
    assert DEFAULT_Z == 2.0 and summary["z"] == 2.0 and summary["remove"] is None and summary["removed"] == expected
    assert len(read_pairs(tmp_path / "d" / "clean.csv")) == 160 - expected
    for bad, says in ((["--remove", "1.5"], "argument --remove: must be a fraction in [0, 1), got 1.5"),
                      (["--remove", "0.1", "--threshold", "2"], "not allowed with argument"),
                      (["--z", "3", "--remove", "0.1"], "not allowed with argument"),
                      (["--features", "unit"], "invalid choice: 'unit'"),
                      (["--detector", "lof"], "argument --detector: unknown signal 'lof'"),
                      (["--detector", "norm+lof"], "argument --detector: unknown signal 'lof'")):
        assert main([*base, "--out", str(tmp_path / "x"), *bad]) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1
    assert main([*base[:5], str(tmp_path / "none.csv"), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path / 'none.csv'}: file not found"
    assert not (tmp_path / "x").exists()


def test_torchrun_scores_each_share_on_its_process_and_agrees_with_one(poisoned, trained_checkpoint, tmp_path):
    import os
    import subprocess
    import sys

    args = ["-m", "tacleaner", "--quiet", "detect", "--checkpoint", str(trained_checkpoint), "--data",
            str(poisoned / "data.csv"), "--k", "8", "--reference", "64", "--batch-size", "16", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         env=env, timeout=300)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          *args, "--out", str(tmp_path / "two")], capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    read = lambda run: [float(r["score"]) for r in csv.DictReader(open(run / "scores.csv", newline=""))]  # noqa: E731
    np.testing.assert_allclose(read(tmp_path / "one"), read(tmp_path / "two"), rtol=1e-5)
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["rows"] == 160


def test_a_grid_compares_filter_then_train_with_a_fine_tuning_defense_on_the_same_seeds(tiny_grid):
    """The ``filter`` defense in an experiment: the implant set scored with the backdoored model,
    the most suspicious pairs removed, the clean model trained again on the rest; its rows sit
    beside fine-tuning's in results.json and the report."""
    import yaml

    code, out, config = tiny_grid("filter", [
        {"name": "filter", "params": {"detector": "density", "k": 8, "reference": 96, "remove": 0.25}},
        {"name": "finetune", "train": {"epochs": 1, "lr": 1e-4}}])
    assert code == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["defense"] for r in rows] == ["clean model", "none", "filter", "finetune"]
    unit = out / "world0" / "badnet" / "implant0"
    summary = json.loads((unit / "filter" / "detect" / "summary.json").read_text())
    assert summary["removed"] == 24 and summary["kept"] == 72 and summary["truth"]["poisoned"] == 16
    assert len(read_pairs(unit / "filter" / "detect" / "clean.csv")) == 72
    trained = yaml.safe_load((unit / "filter" / "clean0" / "config.yaml").read_text())
    assert trained["train"]["epochs"] == 1 and trained["train"]["lr"] == 5e-4  # the implant's settings
    assert trained["data"] == str(unit / "filter" / "detect" / "clean.csv")
    assert json.loads((unit / "filter" / "clean0" / "metadata.json").read_text())["pairs"] == 72
    assert "| filter |" in (out / "results.md").read_text()
    bad = {**config, "defenses": [{"name": "filter", "params": {"remove": 1.0}}]}
    assert tiny_grid("filter", [], out="bad", config=bad)[0] == 2


def test_later_clean_seeds_of_a_filter_wait_for_the_first_which_scores_the_implant_set():
    """Two seeds' filter stages would otherwise score into the same <id>/detect folder at once."""
    from tacleaner.experiment import parse_config
    from tacleaner.experiment.grid import steps

    cfg = parse_config({
        "name": "g", "model": {"name": "tacleaner-tiny-rn"}, "data": {"synth": {"seed": 0}},
        "attacks": [{"name": "badnet", "target": "red circle", "num": 16}],
        "defenses": [{"name": "filter"}, {"name": "finetune"}],
        "seeds": {"implant": [0], "clean": [0, 1]},
    })
    deps = {s.key: s.deps for s in steps(cfg)}
    assert deps["defense/0/badnet/0/filter/1"] == ("implant/0/badnet/0", "defense/0/badnet/0/filter/0")
    assert deps["defense/0/badnet/0/filter/0"] == ("implant/0/badnet/0",)
    assert deps["defense/0/badnet/0/finetune/1"] == ("implant/0/badnet/0",)  # fine-tuning seeds stay parallel
