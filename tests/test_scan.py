"""The scan's probes on real models and images: the L-inf probe, the patch probe and their mix."""
import pytest
import torch

from tacleaner.data.zeroshot import read_classes, read_zeroshot
from tacleaner.errors import TacleanerError
from tacleaner.evaluate import build_classifier
from tacleaner.scan import (
    ScanConfig,
    ZeroShotLogits,
    frame_images,
    patch_probe,
    random_patch_masks,
    rank,
    read_reference,
    scan,
)


def test_random_patch_masks_are_squares_of_the_side_at_drawn_places():
    masks = random_patch_masks(64, 32, 32, 0.25, torch.Generator().manual_seed(0))
    assert masks.shape == (64, 1, 32, 32)
    assert set(masks.sum((1, 2, 3)).tolist()) == {64.0}  # 8 x 8 ones each
    for m in masks[:, 0]:
        rows, cols = m.nonzero(as_tuple=True)
        assert rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7  # one square, not scattered
    corners = {tuple(m[0].nonzero()[0].tolist()) for m in masks}
    assert len(corners) > 40  # places differ between images
    again = random_patch_masks(64, 32, 32, 0.25, torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)


def test_settings_are_checked():
    with pytest.raises(TacleanerError, match="probe 'gauss'"):
        ScanConfig(probe="gauss")
    with pytest.raises(TacleanerError, match="patch_sizes '0.25,1.5'"):
        ScanConfig(probe="patch", patch_sizes="0.25,1.5")
    with pytest.raises(TacleanerError, match="patch_sizes 'a'"):
        ScanConfig(patch_sizes="a")
    assert ScanConfig(probe="linf, patch").probes() == ["linf", "patch"]


def test_patch_probe_changes_only_the_patch_and_moves_images(trained, world):
    """One prediction per image and side, against the image's own class; free patches of a third
    of the side move most images of this small model off their class, and at least as many as
    patches of an eighth; the same generator gives the same probes."""
    classes = read_classes(world / "classes.json")
    data = read_zeroshot(world / "zeroshot.csv", classes)
    logits = ZeroShotLogits(trained, build_classifier(trained, classes, "cpu").float())
    trained.model.requires_grad_(False)
    x, y = frame_images(trained, data, 32)
    cfg = ScanConfig(probe="patch", patch_sizes="0.125,0.333", patch_steps=5)
    pred, start = patch_probe(logits, x, y, cfg, torch.Generator().manual_seed(1))
    assert pred.shape == start.shape == (2 * len(x),) and torch.equal(start, torch.cat([y, y]))
    small, large = (pred[:len(x)] != y).float().mean(), (pred[len(x):] != y).float().mean()
    assert large >= 0.5 and large >= small, (small, large)
    again, _ = patch_probe(logits, x, y, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(pred, again)  # the places and starts come from the generator alone


def test_a_mixed_scan_averages_the_kinds_and_records_each(trained, world):
    classes = read_classes(world / "classes.json")
    data = read_zeroshot(world / "zeroshot.csv", classes)
    common = {"images": 32, "top": 0, "patch_steps": 3, "steps": 3}
    mixed, _ = scan(trained, data, classes, ScanConfig(probe="linf,patch", **common))
    linf, _ = scan(trained, data, classes, ScanConfig(probe="linf", **common))
    patch, _ = scan(trained, data, classes, ScanConfig(probe="patch", **common))
    by_name = {k: {r.name: r for r in rep.classes} for k, rep in (("linf", linf), ("patch", patch))}
    for r in mixed.classes:
        assert set(r.by_probe) == {"linf", "patch"}
        assert r.by_probe["linf"] == pytest.approx(by_name["linf"][r.name].attraction)
        assert r.by_probe["patch"] == pytest.approx(by_name["patch"][r.name].attraction)
        assert r.attraction == pytest.approx((r.by_probe["linf"] + r.by_probe["patch"]) / 2)
    assert sum(r.by_probe["patch"] for r in mixed.classes) <= 1 + 1e-6
    assert sum(r.by_probe["patch"] for r in mixed.classes) > 0


def test_rank_against_a_reference_scores_the_attraction_gained():
    """Five classes, two probe kinds. Alone, the natural attractor ``a`` ranks first; against a
    reference that draws probes to ``a`` as much, ``b`` (which gained 0.15) does. Hand computed:
    gains 0, .15, 0, .01, -.01 -> median 0, MAD 0.01 -> b's index .15 / (1.4826 x .01) = 10.117."""
    names = ["a", "b", "c", "d", "e"]
    shares = {"linf": [0.4, 0.2, 0.02, 0.05, 0.0], "patch": [0.2, 0.2, 0.02, 0.01, 0.02]}
    alone = rank(shares, names)
    assert [r.name for r in alone][:2] == ["a", "b"] and alone[0].reference_attraction is None
    ref = {"a": 0.3, "b": 0.05, "c": 0.02, "d": 0.02, "e": 0.02}
    rows = rank(shares, names, ref)
    assert [r.name for r in rows] == ["b", "d", "a", "c", "e"]
    assert rows[0].anomaly == pytest.approx(0.15 / (1.4826 * 0.01))
    assert rows[0].attraction == pytest.approx(0.2) and rows[0].reference_attraction == 0.05
    assert rows[2].anomaly == pytest.approx(0.0, abs=1e-9)  # a gained nothing


def test_a_reference_must_be_a_comparable_scan():
    cfg = ScanConfig()
    good = {"settings": {**cfg.__dict__}, "classes": [{"name": n, "by_probe": {"linf": 0.1, "patch": 0.3}}
                                                      for n in ("a", "b")]}
    assert read_reference(good, cfg, ["b", "a"], "r.json") == {"a": pytest.approx(0.2), "b": pytest.approx(0.2)}
    with pytest.raises(TacleanerError, match=r"^r.json: scanned with eps 0.1, this scan uses 0.031"):
        read_reference({**good, "settings": {**cfg.__dict__, "eps": 0.1}}, cfg, ["a", "b"], "r.json")
    with pytest.raises(TacleanerError, match="its classes are not this scan's classes"):
        read_reference(good, cfg, ["a", "c"], "r.json")
    with pytest.raises(TacleanerError, match="a scan made against a reference"):
        read_reference({**good, "reference": "x.json"}, cfg, ["a", "b"], "r.json")
    with pytest.raises(TacleanerError, match="not a scan.json"):
        read_reference({"rows": 3}, cfg, ["a", "b"], "r.json")
