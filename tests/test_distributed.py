"""Several processes through the one training loop: real torchrun jobs on the gloo backend (CPU)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from tacleaner.distributed import Dist, EpochBatches, shard
from tacleaner.errors import TacleanerError
from tacleaner.models import save_model
from tacleaner_cli import main

DRIVER = Path(__file__).with_name("ddp_driver.py")
OBJECTIVES = ["finetune", "cleanclip", "tacleaner", "par", "invert", "tacleaner+par"]


def torchrun(nproc: int, *args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(), **kw)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "summary" not in line]


@pytest.fixture(scope="module")
def pairs_with_a_broken_image(world, tmp_path_factory) -> Path:
    """The world's clean split with one image that fails to decode, so that the ranks of a
    global batch hold different numbers of pairs (the gather must cope)."""
    root = tmp_path_factory.mktemp("ddp")
    with open(world / "clean.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    broken = root / "broken.png"
    broken.write_bytes(b"not a png")
    victim = list(EpochBatches(len(rows), 16, 0))[0][-1]  # in the first batch, on rank 1 of 2
    for i, row in enumerate(rows):
        row["image"] = str(broken) if i == victim else str((world / row["image"]).resolve())
    out = root / "clean.csv"
    with open(out, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    # what each image shows (mask: truth), the broken one standing in for the image it replaced
    scenes = {r["image"]: r for r in map(json.loads, (world / "scenes.jsonl").read_text().splitlines())}
    with open(root / "scenes.jsonl", "w", encoding="utf-8") as f:
        for i, row in enumerate(rows):
            original = Path(row["image"]).relative_to(world.resolve()).as_posix() if i != victim else None
            scene = scenes[original] if original else scenes[f"images/clean/{victim:06d}.png"]
            f.write(json.dumps({**scene, "image": row["image"]}) + "\n")
    return out


def test_two_processes_match_one_with_the_global_batch(pairs_with_a_broken_image, world, tmp_path):
    """Per-rank batch B/2 on 2 gloo processes = one process with batch B: every step's losses
    (relative 1e-4) and the weights after 4 steps. The driver sets AdamW's eps to 1 so that
    an update is proportional to its gradient: with eps 1e-6 Adam divides the gradient's scale
    away (a gradient off by the number of ranks would pass) and magnifies rounding noise in
    near-zero gradients."""
    data = str(pairs_with_a_broken_image)
    env = {**_env(), "DDP_TEST_EPS": "1.0", "DDP_TEST_CLASSES": str(world / "classes.json")}
    one = subprocess.run([sys.executable, str(DRIVER), data, str(tmp_path / "one"), "16", *OBJECTIVES],
                         capture_output=True, text=True, timeout=300, env=env)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(DRIVER), data, str(tmp_path / "two"), "16", *OBJECTIVES],
                         capture_output=True, text=True, timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    for name in OBJECTIVES:
        a, b = tmp_path / "one" / name, tmp_path / "two" / name
        ma, mb = metrics(a), metrics(b)
        assert [r["step"] for r in ma] == [r["step"] for r in mb] == [1, 2, 3, 4]
        for ra, rb in zip(ma, mb):
            for key in [k for k in ra if k.endswith("loss") or k.startswith("ta_masked")]:  # masked: gathered rows
                assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-6), (name, ra["step"], key)
        if name.startswith("tacleaner"):  # the masking (of equivalent positives; by truth) was exercised
            assert any(r["ta_masked"] > 0 for r in ma), name
        if name == "tacleaner+par":  # by truth: the subtext -> image direction is counted as well
            assert any(r["ta_masked_images"] > 0 for r in ma)
        summary = json.loads((b / "metrics.jsonl").read_text().splitlines()[-1])
        assert summary["skipped_images"] == 1 and summary["pairs"] == 4 * 16 - 1  # the broken image, counted once
        wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
        for key in wa:
            assert torch.allclose(wb[key], wa[key], rtol=1e-4, atol=1e-6), (name, key)
        meta = json.loads((b / "metadata.json").read_text())
        assert meta["processes"] == 2 and meta["backend"] == "gloo"
        assert json.loads((a / "metadata.json").read_text())["processes"] == 1


def test_epoch_batches_keep_the_single_process_order():
    """World size 1 gives exactly the order of a shuffled DataLoader with the same seed (runs
    made before multi-process training keep their data), and the ranks' parts of each global
    batch, in rank order, are that batch."""
    n, b, seed = 103, 16, 7
    loader = DataLoader(list(range(n)), batch_size=b, shuffle=True, drop_last=True,
                        generator=torch.Generator().manual_seed(seed))
    expected = [batch.tolist() for batch in loader]
    assert list(EpochBatches(n, b, seed)) == expected
    for world in (2, 4):
        parts = [list(EpochBatches(n, b, seed, Dist(r, world))) for r in range(world)]
        assert all(len(p) == len(expected) for p in parts)
        assert [sum((p[i] for p in parts), []) for i in range(len(expected))] == expected
    small = [list(EpochBatches(10, 16, 0, Dist(r, 4))) for r in range(4)]  # a small set: one batch, split
    assert [[len(x) for x in p] for p in small] == [[2], [3], [2], [3]]
    with pytest.raises(TacleanerError, match="multiple of the 3 processes"):
        EpochBatches(n, 16, 0, Dist(0, 3))
    assert [list(shard(10, Dist(r, 3))) for r in range(3)] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from tacleaner.models import create_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_model(create_model("tacleaner-tiny-rn"), path)
    return path


def _clean_args(world: Path, ckpt: Path, out: Path, epochs: int) -> list[str]:
    return ["-m", "tacleaner", "--quiet", "clean", "--defense", "cleanclip", "--checkpoint", str(ckpt),
            "--data", str(world / "clean.csv"), "--out", str(out), "--epochs", str(epochs), "--batch-size", "16",
            "--threads", "1", "--device", "cpu"]


def _rank_pids(launcher: int) -> dict[int, int]:
    """rank -> pid of the processes torchrun's agent started."""
    out = {}
    kids = subprocess.run(["pgrep", "-P", str(launcher)], capture_output=True, text=True).stdout.split()
    for pid in map(int, kids):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for item in env:
            if item.startswith(b"RANK="):
                out[int(item[5:])] = pid
    return out


def test_torchrun_clean_records_its_ranks_and_resumes_after_a_rank_is_killed(world, tiny_checkpoint, tmp_path):
    """`torchrun --nproc_per_node 2 -m tacleaner clean` completes and says so in its run folder;
    killing one rank with SIGKILL after the first checkpoint stops the job, and `--resume`
    finishes it with the weights an uninterrupted job gets. Three epochs: the kill lands within
    a few milliseconds of the first epoch's checkpoint, two epochs (seconds) before the end, and
    the resumed job still has an epoch after its first (the asserted "the job ended before it
    could be interrupted" catches a machine where that margin fails)."""
    epochs = 3
    straight = tmp_path / "straight"
    done = torchrun(2, *_clean_args(world, tiny_checkpoint, straight, epochs))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("wrote") == 1  # rank 0 alone reports
    meta = json.loads((straight / "metadata.json").read_text())
    assert meta["completed"] and meta["processes"] == 2 and meta["backend"] == "gloo"
    assert "2 processes (gloo)" in (straight / "log.txt").read_text()

    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           *_clean_args(world, tiny_checkpoint, run, epochs)]
    job = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    try:
        deadline = time.time() + 240
        while not (run / "train_state.pt").is_file() and time.time() < deadline and job.poll() is None:
            time.sleep(0.05)
        assert job.poll() is None, "the job ended before it could be interrupted"
        pids = _rank_pids(job.pid)
        assert set(pids) == {0, 1}
        os.kill(pids[1], signal.SIGKILL)
        assert job.wait(timeout=120) != 0
    finally:
        if job.poll() is None:
            job.kill()
    assert not (run / "metadata.json").is_file()
    resumed = torchrun(2, *_clean_args(world, tiny_checkpoint, run, epochs), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after epoch" in (run / "log.txt").read_text()
    a, b = load_file(straight / "model.safetensors"), load_file(run / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_torchrun_refuses_commands_that_run_in_one_process(world, tmp_path):
    r = torchrun(2, "-m", "tacleaner", "synth", "--out", str(tmp_path / "w"), "--pretrain", "4")
    assert r.returncode != 0
    assert r.stderr.count("error: synth runs in one process") == 1  # rank 0 says it, once
    assert not (tmp_path / "w").exists()


def test_torchrun_evaluate_shards_the_images_and_agrees_with_one_process(world, tiny_checkpoint, tmp_path):
    args = ["-m", "tacleaner", "--quiet", "evaluate", "--checkpoint", str(tiny_checkpoint), "--data",
            str(world / "zeroshot.csv"), "--classes", str(world / "classes.json"), "--attack", "badnet",
            "--target", "0", "--device", "cpu"]
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one.json")], capture_output=True,
                         text=True, timeout=300, env=_env())
    assert one.returncode == 0, one.stderr
    two = torchrun(2, *args, "--out", str(tmp_path / "two.json"))
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    for key in ("clean_acc", "asr_at_1", "asr_at_10", "num_images", "num_asr_images"):
        assert a[key] == b[key], key
    assert two.stdout.count("CA ") == 1
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_the_process_context_is_not_a_defense_parameter():
    from tacleaner.defenses import DEFENSES, create_defense

    for name in DEFENSES:
        assert "dist" not in create_defense(name).params()
    with pytest.raises(TacleanerError, match="dist"):
        create_defense("finetune", dist=1)


RUN_CONFIG = {
    "name": "ddp", "model": {"name": "tacleaner-tiny-vit"},
    "data": {"synth": {"seed": 2, "pretrain": 64, "implant": 64, "clean": 32, "zeroshot_per_class": 1}},
    "pretrain": {"epochs": 1, "lr": 2e-3},
    "train": {"batch_size": 16, "warmup_steps": 2, "threads": 1, "device": "cpu"},
    "attacks": [{"name": "badnet", "target": "red circle", "num": 8, "implant": {"epochs": 1}}],
    "defenses": [{"name": "finetune", "train": {"epochs": 1, "lr": 1e-4}}],
    "seeds": {"implant": [0], "clean": [0]},
}


def test_torchrun_runs_an_experiment_grid_with_shared_stages(tmp_path):
    """`torchrun -m tacleaner run`: every training stage on both processes (DDP), rank 0 alone
    making the world, poisoning and reporting; the same rows as one process, with CA and ASR
    within a few images (the ranks' BatchNorm-free ViT gives the same training up to rounding)."""
    import yaml

    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump(RUN_CONFIG))
    two = torchrun(2, "-m", "tacleaner", "--quiet", "run", str(config), "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("results in ") == 1
    assert main(["--quiet", "run", str(config), "--out", str(tmp_path / "one")]) == 0  # one process: this one
    stages = ["world0/pretrain", "world0/badnet/implant0/backdoored", "world0/badnet/implant0/finetune/clean0"]
    for stage in stages:
        assert json.loads((tmp_path / "two" / stage / "metadata.json").read_text())["processes"] == 2
        assert json.loads((tmp_path / "one" / stage / "metadata.json").read_text())["processes"] == 1
    rows = {name: json.loads((tmp_path / name / "results.json").read_text()) for name in ("one", "two")}
    assert [(r["attack"], r["defense"]) for r in rows["one"]] == [(r["attack"], r["defense"]) for r in rows["two"]]
    for a, b in zip(rows["one"], rows["two"]):
        assert abs(a["clean_acc"] - b["clean_acc"]) <= 0.05 and abs(a["asr_at_1"] - b["asr_at_1"]) <= 0.05
    log = (tmp_path / "two" / "log.txt").read_text()
    assert log.count("poisoning 8 pairs") == 1  # rank 0 alone poisons and logs

