"""Experiment grids through the CLI: seeds as an axis, statistics in every report, parallel
stages that give the same numbers, resume, and bit-identical reruns on one machine."""
import json
import shutil
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from tacleaner_cli import main

CONFIG = {
    "name": "tiny",
    "model": {"name": "tacleaner-tiny-rn"},
    "data": {"synth": {"seed": 2, "pretrain": 128, "implant": 128, "clean": 64, "zeroshot_per_class": 1,
                       "zeroshot_val_per_class": 1}},
    "pretrain": {"epochs": 1, "lr": 2e-3},
    "train": {"batch_size": 32, "warmup_steps": 2, "threads": 1},
    "attacks": [{"name": "blended", "target": "red circle", "num": 16, "implant": {"epochs": 1}}],
    "defenses": [{"name": "finetune", "train": {"epochs": 1, "lr": 1e-4}},
                 {"name": "cleanclip", "train": {"epochs": 1, "lr": 1e-4}}],
    "seeds": {"implant": [0, 1], "clean": [0, 1]},
}
METRICS = ("clean_acc", "asr_at_1", "asr_at_10", "val_clean_acc", "val_asr_at_1", "val_asr_at_10")


def run_grid(tmp_path, name, config, *extra):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / name
    assert main(["--quiet", "run", str(path), "--out", str(out), *extra]) == 0
    return path, out


@pytest.fixture(scope="module")
def grids(tmp_path_factory) -> tuple[Path, Path]:
    """CONFIG's grid run twice, with ``--jobs 2`` and serially, made once for this module (the
    resume test, its last user, removes and redoes one defense of the serial one)."""
    d = tmp_path_factory.mktemp("grid")
    _, parallel = run_grid(d, "parallel", CONFIG, "--jobs", "2")
    _, serial = run_grid(d, "serial", CONFIG)
    return parallel, serial


def test_one_row_per_seed_triple_with_val_and_test(grids):
    rows = json.loads((grids[0] / "results.json").read_text())
    keys = [(r["defense"], r["world_seed"], r["implant_seed"], r["clean_seed"]) for r in rows]
    expected = []
    for i in (0, 1):
        expected += [("clean model", 0, i, None), ("none", 0, i, None)]
        expected += [(d, 0, i, c) for d in ("finetune", "cleanclip") for c in (0, 1)]
    assert keys == expected
    for r in rows:
        assert all(0 <= r[m] <= 1 for m in METRICS), r
    folder = grids[0] / "world0" / "blended" / "implant1"
    assert (folder / "poison" / "manifest.json").is_file() and (folder / "backdoored" / "eval.json").is_file()
    assert (folder / "cleanclip" / "clean1" / "model.safetensors").is_file()
    meta = json.loads((folder / "cleanclip" / "clean1" / "metadata.json").read_text())
    env = meta["environment"]
    assert env["torch_threads"] == 1 and env["precision"] == "fp32" and env["packages"]["torch"]
    assert env["cpu_model"] and "torch_cpu_capability" in env


def test_reports_carry_intervals_and_paired_verdicts(grids):
    agg = json.loads((grids[0] / "aggregate.json").read_text())
    assert agg["interval"].startswith("Student-t 95%")
    cc = next(s for s in agg["summaries"] if s["defense"] == "cleanclip")
    assert cc["n"] == 2 and cc["unit"] == "backdoored models"
    assert cc["asr_at_1"]["lo"] <= cc["asr_at_1"]["mean"] <= cc["asr_at_1"]["hi"]
    pairs = {(c["a"], c["b"], c["metric"]) for c in agg["comparisons"]}
    assert ("cleanclip", "none", "asr_at_1") in pairs and ("cleanclip", "finetune", "clean_acc") in pairs
    assert all(c["verdict"] for c in agg["comparisons"])
    md = (grids[0] / "results.md").read_text()
    assert "| attack | defense | n | CA % | ASR@1 % | ASR@10 % |" in md and "seeds: world 0; implant 0, 1; clean 0, 1" in md
    assert "cleanclip − finetune" in md and "| blended | cleanclip | 0 | 1 | 1 |" in md
    assert (grids[0] / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    env = json.loads((grids[0] / "environment.json").read_text())
    assert env["packages"]["tacleaner"]


def test_parallel_jobs_give_bit_identical_results(grids):
    """Same config and seeds on one machine: identical metrics and weights, with or without
    parallel stages (each stage seeds itself and fixes its threads)."""
    parallel, serial = (json.loads((g / "results.json").read_text()) for g in grids)
    assert [{m: r[m] for m in METRICS} for r in parallel] == [{m: r[m] for m in METRICS} for r in serial]
    rel = "world0/blended/implant1/cleanclip/clean0/model.safetensors"
    a, b = load_file(grids[0] / rel), load_file(grids[1] / rel)
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)


def test_parallel_experiment_stages_do_not_wait_on_the_experiment_lock(grids):
    """`run --jobs 2` (the parallel grid of ``grids``): the parent holds the
    experiment folder, worker processes write the stage folders inside it; the grid completes
    and leaves no lock behind."""
    parallel = grids[0]
    assert (parallel / "results.json").is_file()
    assert (parallel / "world0" / "blended" / "implant1" / "cleanclip" / "clean1" / "metadata.json").is_file()
    assert not list(parallel.rglob("*.lock"))


def test_resume_redoes_only_what_is_missing(grids, tmp_path, capsys):
    """On the serial grid of ``grids`` (its last user here): one defense's stages removed, a
    resumed run redoes those alone and reproduces its numbers bit for bit."""
    out = grids[1]
    path = out.parent / "serial.yaml"
    implant_model = out / "world0" / "blended" / "implant0" / "backdoored" / "model.safetensors"
    before = implant_model.stat().st_mtime_ns
    first = json.loads((out / "results.json").read_text())
    shutil.rmtree(out / "world0" / "blended" / "implant0" / "finetune")
    (out / "results.json").unlink()
    assert main(["--quiet", "run", str(path), "--out", str(out)]) == 2  # exists: needs --resume
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(out), "--resume"]) == 0  # with progress shown
    assert capsys.readouterr().out.count("| attack | defense | n |") == 1  # the results table, printed once
    assert implant_model.stat().st_mtime_ns == before
    again = json.loads((out / "results.json").read_text())
    assert [r["defense"] for r in again] == ["clean model", "none", "finetune", "finetune", "cleanclip",
                                             "cleanclip"] * 2
    assert again == first  # the redone stages reproduce their numbers bit for bit
    # A changed config is not silently mixed into an old folder.
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({**CONFIG, "seeds": [1]}))
    assert main(["--quiet", "run", str(changed), "--out", str(out), "--resume"]) == 2
    assert "config changed" in capsys.readouterr().err


def test_an_attack_the_data_cannot_give_stops_the_grid_before_any_stage(tmp_path, capsys):
    """label-consistent poisons only captions naming the target: asking more of a world than
    its implant set has is one line naming the entry and the world, before any training."""
    config = {**CONFIG, "attacks": [CONFIG["attacks"][0], {"name": "label-consistent", "target": "red circle",
                                                           "num": 100, "implant": {"epochs": 1}}],
              "seeds": {"world": [0], "implant": [0]}}
    path = tmp_path / "lc.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "lc"
    assert main(["--quiet", "run", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "attacks[1] (label-consistent) in world 0" in err
    assert "captions name 'red circle'; cannot poison 100" in err and "implant.csv" in err
    assert not (out / "world0" / "pretrain").exists() and not (out / "world0" / "blended").exists()


def test_world_seeds_vary_the_world_and_pretraining(tmp_path):
    config = {**CONFIG, "defenses": CONFIG["defenses"][:1], "seeds": {"world": [0, 1], "implant": [0]}}
    _, out = run_grid(tmp_path, "worlds", config, "--jobs", "2")
    w0, w1 = (json.loads((out / f"world{w}" / "data" / "world.json").read_text()) for w in (0, 1))
    assert (w0["seed"], w1["seed"]) == (2, 3)
    a = load_file(out / "world0" / "pretrain" / "model.safetensors")
    b = load_file(out / "world1" / "pretrain" / "model.safetensors")
    assert any(not (a[k] == b[k]).all() for k in a)
    rows = json.loads((out / "results.json").read_text())
    assert sorted({r["world_seed"] for r in rows}) == [0, 1]
    assert "Clean model (before any attack): CA" in (out / "results.md").read_text()


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc to find child processes")
def test_workers_stop_when_the_parent_is_killed_and_resume_finishes(tmp_path):
    """kill -9 of `tacleaner run --jobs 2`: its stage workers stop within seconds instead of
    training on unseen, and --resume completes the grid."""
    import os
    import signal
    import subprocess
    import sys
    import time

    config = {**CONFIG, "defenses": CONFIG["defenses"][:1], "seeds": {"implant": [0]},
              "pretrain": {"epochs": 3, "lr": 2e-3}}
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "g"
    cmd = [sys.executable, "-m", "tacleaner", "--quiet", "run", str(path), "--out", str(out), "--jobs", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    workers = []
    while time.time() < deadline and not (out / "world0" / "pretrain" / "log.txt").is_file():
        time.sleep(0.2)
    workers = [p for p in _children(proc.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
    assert workers, "no stage worker started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(4)
    alive = [p for p in workers if Path(f"/proc/{p}").exists() and "Z" not in Path(f"/proc/{p}/stat").read_text().split()[2]]
    assert not alive, f"workers still running after their parent died: {alive}"
    assert main(["--quiet", "run", str(path), "--out", str(out), "--resume"]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert [r["defense"] for r in rows] == ["clean model", "none", "finetune"]
    assert json.loads((out / "world0" / "pretrain" / "metadata.json").read_text())["completed"]


def test_a_grid_with_the_inversion_defense_a_combination_and_a_dual_key(tmp_path):
    """The world's class list reaches the inversion defense (the config leaves it unset); a
    combination is a defense name like any other; a dual-key attack's rows carry the ASR of
    each key alone, and the report has their table."""
    fast = {"probe_images": 16, "steps": 2, "patch_steps": 2, "patch_grid": 2}
    config = {**CONFIG,
              "attacks": [{"name": "trojvqa", "target": "red circle", "num": 16, "implant": {"epochs": 1},
                           "params": {"steps": 4, "opt_images": 16, "batch_size": 8}}],
              "defenses": [{"name": "invert", "params": fast, "train": {"epochs": 1, "lr": 1e-4}},
                           {"name": "cleanclip+invert", "params": fast, "train": {"epochs": 1, "lr": 1e-4}}],
              "seeds": [0]}
    _, out = run_grid(tmp_path, "inv", config)
    unit = out / "world0" / "trojvqa" / "implant0"
    for d in ("invert", "cleanclip+invert"):
        cfg = yaml.safe_load((unit / d / "clean0" / "config.yaml").read_text())
        assert Path(cfg["objective"]["classes"]) == out / "world0" / "data" / "classes.json"
        assert json.loads((unit / d / "clean0" / "inversion.json").read_text())["inversions"]
    rows = json.loads((out / "results.json").read_text())
    assert {r["defense"] for r in rows} == {"clean model", "none", "invert", "cleanclip+invert"}
    assert all(0 <= r["asr_image_only_at_1"] <= 1 and 0 <= r["asr_text_only_at_1"] <= 1 for r in rows)
    assert "ASR@1, image trigger alone" in (out / "results.md").read_text()


BAD_CONFIGS = {
    # one fault each; the message names the key, as it did before the config became typed
    "unknown top-level key": ({"bogus": 1}, "config: unknown key 'bogus'; valid: attacks, conditions, data, defenses, "
                                            "eval_batch_size, model, name, pretrain, seeds, select, train"),
    "model key": ({"model": {"name": "tacleaner-tiny-rn", "weights": "x"}},
                  "config: model: unknown key 'weights'; valid: name, seed, pretrained, init"),
    "model seed": ({"model": {"name": "tacleaner-tiny-rn", "seed": -1}}, "config: model.seed=-1: expected an integer >= 0"),
    "model name": ({"model": {}}, "config: model: give a 'name' (see `tacleaner models`) or an 'init' checkpoint"),
    "data key": ({"data": {"synth": {}, "bogus": 1}}, "config: data: unknown key 'bogus'; valid: pretrain, implant, "
                                                       "clean, zeroshot, zeroshot_val, classes, synth, allow_overlap"),
    "data overlap": ({"data": {"synth": {}, "allow_overlap": "yes"}},
                     "config: data.allow_overlap='yes': expected true or false"),
    "data synth": ({"data": {"synth": {"pretrain": "many"}}},
                   "config: data.synth parameter pretrain='many': expected an integer"),
    "data file": ({"data": {"implant": "/nope.csv"}}, "config: data.implant /nope.csv: file not found"),
    "eval batch": ({"eval_batch_size": 0}, "config: eval_batch_size=0: expected a positive integer"),
    "seeds key": ({"seeds": {"implants": [0]}}, "config: seeds: unknown key 'implants'; valid: clean, implant, world"),
    "seeds value": ({"seeds": [0, 0]}, "config: seeds.implant: repeated seed in [0, 0]"),
    "seeds type": ({"seeds": "0,1"}, "config: seeds: expected a list of seeds or a mapping with world / implant / clean"),
    "train": ({"train": {"lr": "fast"}}, "config: training settings parameter lr='fast': expected a finite number"),
    "attack num": ({"attacks": [{"name": "blended", "target": "red circle", "num": -1}]},
                   "config: attacks[0].num: must be >= 0, got -1"),
    "missing": ({"model": None}, "config: missing required key 'model'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_configs_name_the_key(case):
    import re

    from tacleaner.errors import TacleanerError
    from tacleaner.experiment import parse_config

    change, message = BAD_CONFIGS[case]
    raw = {**CONFIG, **change}
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(TacleanerError, match=f"^{re.escape(message)}$"):
        parse_config(raw)


def test_typed_sections_read_like_their_mappings():
    """cfg.model / cfg.data are dataclasses that still read like the YAML's mappings."""
    from tacleaner.experiment import parse_config

    cfg = parse_config(CONFIG)
    assert cfg.model.name == "tacleaner-tiny-rn" and cfg.model.get("init") is None and cfg.model.seed == 0
    assert cfg.data.is_synth and cfg.data.synth.seed == 2 and not [v for v in cfg.data.values() if isinstance(v, str)]
    assert cfg.seed_plan.implant == (0, 1) and cfg.seed_plan.clean == (0, 1)


def test_tasks_start_in_list_order_among_ready_ones():
    from tacleaner.scheduler import Task, run_tasks

    ran = []
    tasks = [Task("b", ran.append, ("b",), ("a",)), Task("a", ran.append, ("a",)), Task("c", ran.append, ("c",)),
             Task("d", ran.append, ("d",), ("b", "c"))]
    run_tasks(tasks)
    assert ran == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="unknown task"):
        run_tasks([Task("x", ran.append, ("x",), ("nope",))])
    with pytest.raises(ValueError, match="unmet dependencies"):
        run_tasks([Task("x", ran.append, ("x",), ("y",)), Task("y", ran.append, ("y",), ("x",))])
