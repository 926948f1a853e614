"""`tacleaner show-trigger` and the stealthiness metrics behind it."""
from __future__ import annotations

import csv
import json
import math
import re

import numpy as np
import pytest
from PIL import Image

from tacleaner.attacks import create_attack
from tacleaner.attacks.show import GUTTER, cell_size, sample_indices, trigger_grid
from tacleaner.attacks.stealth import format_report, linf, psnr, ssim, stealth_report
from tacleaner_cli import main


def rand_image(seed: int, h: int = 32, w: int = 32, low: int = 0, high: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, size=(h, w, 3), dtype=np.uint8)


def smooth_image(seed: int, h: int = 32, w: int = 32) -> np.ndarray:
    """A natural-ish image (smooth gradients plus mild texture), for SSIM to have structure."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    rng = np.random.default_rng(seed)
    channels = [128 + 90 * np.sin(6 * xx * rng.uniform(0.5, 2) + 4 * yy * c) for c in range(3)]
    return np.clip(np.stack(channels, axis=-1) + rng.normal(0, 4, (h, w, 3)), 0, 255).astype(np.uint8)


# -- metrics -----------------------------------------------------------------------------------
def test_identical_images():
    a = rand_image(0)
    assert psnr(a, a) == math.inf
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert linf(a, a) == 0


@pytest.mark.parametrize("d", [1, 5, 17, 100])
def test_constant_offset_gives_the_textbook_psnr(d):
    a = rand_image(1, low=0, high=150)  # no clipping at 255 after the offset
    b = a + np.uint8(d)
    assert psnr(a, b) == pytest.approx(20 * math.log10(255 / d), rel=1e-12)
    assert psnr(b, a) == psnr(a, b)
    assert linf(a, b) == d


def test_ssim_drops_as_noise_grows():
    a = smooth_image(2)
    rng = np.random.default_rng(3)
    scores = []
    for sigma in (2, 8, 25, 60):
        noisy = np.clip(a + rng.normal(0, sigma, a.shape), 0, 255).astype(np.uint8)
        scores.append(ssim(a, noisy))
        assert ssim(noisy, a) == pytest.approx(scores[-1], abs=1e-12)  # symmetric
    assert all(s < 1 for s in scores)
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.9 and scores[-1] < 0.5


def reference_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Wang et al. 2004 written out window by window: a 2-D Gaussian weight, weighted means,
    variances and covariance about the mean (not E[x^2] - mu^2), no separable filtering."""
    r = np.arange(11) - 5
    w = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * 1.5 ** 2))
    w /= w.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    a, b = a.astype(np.float64), b.astype(np.float64)
    per_channel = []
    for ch in range(a.shape[2]):
        values = []
        for i in range(a.shape[0] - 10):
            for j in range(a.shape[1] - 10):
                x, y = a[i:i + 11, j:j + 11, ch], b[i:i + 11, j:j + 11, ch]
                mx, my = (w * x).sum(), (w * y).sum()
                vx, vy = (w * (x - mx) ** 2).sum(), (w * (y - my) ** 2).sum()
                cxy = (w * (x - mx) * (y - my)).sum()
                values.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
        per_channel.append(np.mean(values))
    return float(np.mean(per_channel))


def test_ssim_matches_a_direct_window_by_window_computation():
    a = smooth_image(4, 17, 15)
    b = np.clip(a + np.random.default_rng(5).normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    assert ssim(a, b) == pytest.approx(reference_ssim(a, b), abs=1e-10)
    c = rand_image(6, 17, 15)
    assert ssim(a, c) == pytest.approx(reference_ssim(a, c), abs=1e-10)


@pytest.mark.parametrize("h,w", [(1, 1), (5, 7), (10, 40)])
def test_ssim_of_images_smaller_than_the_window(h, w):
    a, b = rand_image(7, h, w), rand_image(8, h, w)
    assert ssim(a, a) == pytest.approx(1.0)
    assert -1 <= ssim(a, b) < 1


def test_stealth_report_leaves_identical_pairs_out_of_the_psnr_mean():
    a = rand_image(9, low=0, high=200)
    pairs = [(a, a), (a, a + np.uint8(5)), (a, a + np.uint8(51))]
    rep = stealth_report(pairs)
    assert rep["count"] == 3 and rep["identical"] == 1
    assert rep["psnr_mean"] == pytest.approx((20 * math.log10(51) + 20 * math.log10(5)) / 2)
    assert rep["linf_max"] == 51 and rep["linf_mean"] == pytest.approx(56 / 3)
    assert rep["ssim_mean"] == pytest.approx(np.mean([ssim(c, t) for c, t in pairs]))
    assert "1 identical" in format_report(rep)
    assert "inf" in format_report(stealth_report([(a, a)]))


# -- the grid ----------------------------------------------------------------------------------
def cell(grid: np.ndarray, n: int, size: int, row: int, col: int) -> np.ndarray:
    """Cell (row, col) of a trigger grid with n columns (the layout trigger_grid documents)."""
    x = grid.shape[1] - (n - col) * (size + GUTTER)
    y = GUTTER + row * (size + GUTTER)
    return grid[y:y + size, x:x + size]


def up(a: np.ndarray, k: int) -> np.ndarray:
    return np.repeat(np.repeat(a, k, axis=0), k, axis=1)


def test_grid_layout_and_rows():
    clean = [rand_image(10), rand_image(11, 16, 32)]
    triggered = [c.copy() for c in clean]
    triggered[0][:4, :4] = 255 - triggered[0][:4, :4]
    triggered[1][8:, 20:] //= 2
    assert cell_size(clean) == 96
    grid = np.asarray(trigger_grid(clean, triggered, amplify=None))
    assert grid.shape[0] == 3 * 96 + 4 * GUTTER and grid.shape[1] > 2 * (96 + GUTTER)
    assert np.array_equal(cell(grid, 2, 96, 0, 0), up(clean[0], 3))
    assert np.array_equal(cell(grid, 2, 96, 1, 0), up(triggered[0], 3))
    # a 16x32 image fills the cell's width and sits in the middle of its height
    assert np.array_equal(cell(grid, 2, 96, 1, 1)[24:72], up(triggered[1], 3))
    diff = cell(grid, 2, 96, 2, 0)
    assert diff.max() == 255 and diff[12:].max() == 0  # auto-scaled; only the changed corner lights up
    fixed = np.asarray(trigger_grid(clean, triggered, amplify=2))
    expected = np.clip(np.abs(triggered[1].astype(int) - clean[1]) * 2, 0, 255).astype(np.uint8)
    assert np.array_equal(cell(fixed, 2, 96, 2, 1)[24:72], up(expected, 3))


def test_grid_of_large_images_is_capped():
    big = [rand_image(12, 500, 400)]
    img = trigger_grid(big, big, amplify=1)
    assert img.height == 3 * 320 + 4 * GUTTER


# -- the command -------------------------------------------------------------------------------
LINE = re.compile(r"^(\S+) on (\d+) images: PSNR ([\d.]+) dB, SSIM ([\d.]+), L-inf (\d+) \(mean ([\d.]+)\) -> (.+)$")


def show(capsys, *argv):
    code = main(["show-trigger", *argv])
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def rows_of(csv_path):
    with open(csv_path, newline="") as f:
        return [row["image"] for row in csv.DictReader(f)]


def expected_images(world, attack, num, seed):
    """The clean and triggered images the command should show, read independently of it."""
    paths = rows_of(world / "implant.csv")
    clean, triggered = [], []
    for i in sample_indices(len(paths), num, seed):
        a = np.asarray(Image.open(world / paths[i]).convert("RGB"))
        clean.append(a)
        triggered.append(attack.trigger(a, i))
    return clean, triggered


@pytest.mark.parametrize("name,params", [("badnet", {}), ("blended", {"alpha": 0.2}),
                                         ("badnet", {"patch_frac": 0.5, "location": "top-left"})])
def test_show_trigger_draws_the_grid_and_reports_stealth(capsys, world, tmp_path, name, params):
    out = tmp_path / "grid.png"
    argv = ["--attack", name, "--data", str(world / "implant.csv"), "--out", str(out), "--num", "5", "--seed", "3",
            "--frame", "32"]  # the world's images are the tiny model's 32 px frame
    code, stdout, err = show(capsys, *argv, *[f"--param={k}={v}" for k, v in params.items()])
    assert code == 0, err
    clean, triggered = expected_images(world, create_attack(name, **params), 5, 3)
    report = stealth_report(zip(clean, triggered))
    assert stdout == f"{name} on 5 images: {format_report(report)} -> {out}"
    assert LINE.match(stdout)
    grid = np.asarray(Image.open(out))
    assert grid.shape[0] == 3 * 96 + 4 * GUTTER
    for col in range(5):
        assert np.array_equal(cell(grid, 5, 96, 0, col), up(clean[col], 3))
        assert np.array_equal(cell(grid, 5, 96, 1, col), up(triggered[col], 3))


def test_blended_is_stealthier_than_a_big_patch(capsys, world, tmp_path):
    figures = {}
    for name, param in (("blended", "alpha=0.2"), ("badnet", "patch_frac=0.5")):
        code, stdout, err = show(capsys, "--attack", name, "--param", param, "--data", str(world / "implant.csv"),
                                 "--out", str(tmp_path / f"{name}.png"))
        assert code == 0, err
        figures[name] = float(LINE.match(stdout).group(3))
    assert figures["blended"] > figures["badnet"]


def test_zero_shot_csv_and_fixed_amplify(capsys, world, tmp_path):
    code, stdout, err = show(capsys, "--attack", "badnet", "--data", str(world / "zeroshot.csv"), "--num", "3",
                             "--amplify", "4", "--out", str(tmp_path / "zs.png"))
    assert code == 0, err
    assert stdout.startswith("badnet on 3 images: PSNR ")


def test_trigger_of_a_poisoning_run(capsys, world, tmp_path):
    run = tmp_path / "run"
    assert main(["poison", "--data", str(world / "implant.csv"), "--attack", "badnet", "--param", "pattern_seed=7",
                 "--target", "0", "--num", "4", "--out", str(run), "--classes", str(world / "classes.json")]) == 0
    capsys.readouterr()
    data = ["--data", str(world / "implant.csv"), "--out", str(tmp_path / "g.png")]
    code, from_run, err = show(capsys, "--trigger", str(run), *data)
    assert code == 0, err
    assert_one_line_error(*show(capsys, "--attack", "badnet", *data), "g.png", "exists", "--overwrite")
    data.append("--overwrite")
    code, direct, err = show(capsys, "--attack", "badnet", "--param", "pattern_seed=7", *data)
    assert code == 0, err
    assert from_run == direct
    assert_one_line_error(*show(capsys, "--trigger", str(run), "--attack", "blended", *data), "used badnet")
    assert_one_line_error(*show(capsys, "--trigger", str(run), "--param", "alpha=0.1", *data), "--param")
    assert_one_line_error(*show(capsys, "--trigger", str(tmp_path / "nowhere"), *data), "not found")
    assert_one_line_error(*show(capsys, "--trigger", str(run), "--frame", "64", *data), "32 px frame")


def assert_one_line_error(code, stdout, err, *needles):
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and not stdout, err
    for n in needles:
        assert n in lines[0], (n, err)


def test_bad_input_gives_one_line_errors(capsys, world, tmp_path):
    data = ["--data", str(world / "implant.csv"), "--out", str(tmp_path / "g.png")]
    assert_one_line_error(*show(capsys, "--attack", "badnet", "--data", str(tmp_path / "missing.csv"),
                                "--out", str(tmp_path / "g.png")), "missing.csv", "not found")
    assert_one_line_error(*show(capsys, "--attack", "nosuch", *data), "unknown attack 'nosuch'", "badnet")
    assert_one_line_error(*show(capsys, "--attack", "badnet", "--num", "0", *data), "--num")
    assert_one_line_error(*show(capsys, "--attack", "badnet", "--amplify", "-1", *data), "--amplify")
    assert_one_line_error(*show(capsys, *data), "--attack", "--trigger")
    assert_one_line_error(*show(capsys, "--attack", "badnet", "--param", "alpha=1", *data), "no parameter 'alpha'")
    assert_one_line_error(*show(capsys, "--attack", "badnet", "--data", str(world / "implant.csv"),
                                "--out", str(tmp_path)), "is a folder")
    assert not (tmp_path / "g.png").exists()


# -- learned triggers --------------------------------------------------------------------------
FAST_BADCLIP = ["--param", "steps=3", "--param", "opt_images=16", "--param", "batch_size=8",
                "--param", "target_images=4", "--param", "patch_frac=0.25", "--param", "location=top-left"]


def test_learned_attack_needs_a_run_or_a_target(capsys, world, tmp_path, trained_checkpoint):
    data = ["--data", str(world / "implant.csv"), "--out", str(tmp_path / "g.png"), "--classes",
            str(world / "classes.json")]
    assert_one_line_error(*show(capsys, "--attack", "badclip", *data),
                          "learns its trigger", "--trigger RUN", "--target LABEL")
    assert_one_line_error(*show(capsys, "--attack", "badclip", "--target", "yellow star", *data), "--clean-model")

    code, stdout, err = show(capsys, "--attack", "badclip", "--target", "yellow star", "--seed", "5", "--num", "4",
                             "--clean-model", str(trained_checkpoint), *FAST_BADCLIP, *data)
    assert code == 0, err
    assert "prepared badclip trigger: steps 3" in err
    assert stdout.startswith("badclip on 4 images:")
    # The learned 8 px patch sits in the top-left corner of every triggered cell (drawn 3x).
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    corners = [cell(grid, 4, 96, 1, col)[:24, :24] for col in range(4)]
    assert all(np.array_equal(c, corners[0]) for c in corners[1:])
    assert not np.array_equal(cell(grid, 4, 96, 0, 0)[:24, :24], corners[0])


def test_learned_trigger_from_a_run_matches_the_poisoned_images(capsys, world, tmp_path, trained_checkpoint):
    run = tmp_path / "run"
    n = len(rows_of(world / "implant.csv"))
    assert main(["--quiet", "poison", "--data", str(world / "implant.csv"), "--attack", "badclip",
                 "--target", "yellow star", "--num", str(n // 2), "--seed", "9", "--out", str(run),
                 "--classes", str(world / "classes.json"), "--clean-model", str(trained_checkpoint),
                 *FAST_BADCLIP]) == 0
    capsys.readouterr()
    code, stdout, err = show(capsys, "--trigger", str(run), "--data", str(world / "implant.csv"),
                             "--out", str(tmp_path / "g.png"), "--num", "6", "--seed", "1")
    assert code == 0, err
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    poisoned = set(json.loads((run / "poisoned_indices.json").read_text()))
    shown = [i for i in sample_indices(n, 6, 1) if i in poisoned]
    assert shown, "the sample should include poisoned rows"
    for col, i in enumerate(sample_indices(n, 6, 1)):
        if i in poisoned:
            image = np.asarray(Image.open(run / "images" / f"{i:07d}.png").convert("RGB"))
            assert np.array_equal(cell(grid, 6, 96, 1, col), up(image, 3))
