"""The literature's protocol as a shipped config: its settings are the published ones, and a
smoke version of it (tiny model, tiny data, a few steps) runs end to end through `tacleaner run`."""
import json
from pathlib import Path

import pytest
import yaml

from tacleaner.experiment import parse_config
from tacleaner_cli import main

PAPER = Path(__file__).resolve().parents[1] / "experiments" / "paper" / "rn50-cc3m.yaml"


def test_paper_config_states_the_protocol():
    raw = yaml.safe_load(PAPER.read_text())
    assert raw["model"] == {"name": "RN50-quickgelu", "pretrained": "openai"}
    assert raw["data"]["classes"] == "imagenet"
    for a in raw["attacks"]:
        assert (a["target"], a["num"]) == ("banana", 1500)
        assert abs(a["params"]["patch_frac"] * 224 - 16) < 1e-6  # 16 px at 224
        assert a["implant"]["epochs"] == 10 and a["implant"]["batch_size"] == 128
    assert sorted(a["implant"]["lr"] for a in raw["attacks"]) == [1e-6, 1e-6, 1e-5]
    for d in raw["defenses"]:
        assert d["train"] == {"epochs": 10, "batch_size": 64, "lr": 1e-5, "warmup_steps": 50}
    assert {d["name"] for d in raw["defenses"]} == {"finetune", "cleanclip", "tacleaner"}


def test_paper_config_runs_as_a_smoke_version(world, tmp_path):
    """Everything of the shipped config but the scale: the tiny model, the test world, one seed,
    two steps per stage."""
    raw = yaml.safe_load(PAPER.read_text())
    raw["model"] = {"name": "tacleaner-tiny-rn"}
    raw["data"] = {k: str(world / f) for k, f in (("implant", "implant.csv"), ("clean", "clean.csv"),
                                                  ("zeroshot", "zeroshot.csv"), ("classes", "classes.json"))}
    raw["train"] = {**raw["train"], "num_workers": 0, "threads": 1, "max_steps": 2}
    raw["seeds"] = [0]
    for a in raw["attacks"]:
        a["target"], a["num"] = "yellow star", 8
        a["implant"] = {**a["implant"], "batch_size": 16, "warmup_steps": 1}
        if a["name"] == "badclip":
            a["params"].update(steps=2, opt_images=8, batch_size=4, target_images=2)
    for d in raw["defenses"]:
        d["train"] = {**d["train"], "batch_size": 16, "warmup_steps": 1}
    parse_config(raw)  # loads and checks as shipped, but for model and data
    config = tmp_path / "smoke.yaml"
    config.write_text(yaml.safe_dump(raw))
    assert main(["--quiet", "run", str(config), "--out", str(tmp_path / "run")]) == 0
    rows = json.loads((tmp_path / "run" / "results.json").read_text())
    assert {(r["attack"], r["defense"]) for r in rows} == {
        (a, d) for a in ("badnet", "badnet-lr1e-5", "badclip")
        for d in ("clean model", "none", "finetune", "cleanclip", "tacleaner", "tacleaner-random")}
    meta = json.loads((tmp_path / "run" / "world0" / "badclip" / "implant0" / "tacleaner" / "clean0"
                       / "metadata.json").read_text())
    assert meta["completed"] and meta["steps"] == 2


@pytest.mark.parametrize("path", sorted(p.name for p in PAPER.parents[1].glob("*.yaml")))
def test_every_shipped_experiment_grid_loads(path):
    """Each grid in experiments/ passes the config check that `tacleaner run` makes first
    (every attack, defense and training setting typed and known)."""
    from tacleaner.experiment import load_config

    cfg, raw = load_config(PAPER.parents[1] / path)
    assert cfg.attacks and raw["name"] == cfg.name  # defenses may be empty (trojvqa-dualkey: the implant only)


def test_the_paper_scale_schedule_grid_is_held_out_and_paired(world):
    """experiments/paper/rn50-cc3m-badclip-schedules.yaml: BadCLIP only, the schedule chosen on
    one target and reported on three others, the same schedules for both defenses, and it loads
    (data pointed at the test world, the rest as shipped)."""
    raw = yaml.safe_load(PAPER.with_name("rn50-cc3m-badclip-schedules.yaml").read_text())
    assert {a["name"] for a in raw["attacks"]} == {"badclip"}
    tune, test = raw["conditions"]["tune"]["attacks"], raw["conditions"]["test"]["attacks"]
    targets = {a["id"]: a["target"] for a in raw["attacks"]}
    assert len(test) == 3 and not {targets[a] for a in tune} & {targets[a] for a in test}
    schedules = {g: [(d["train"]["epochs"], d["train"]["lr"]) for d in raw["defenses"] if d["group"] == g]
                 for g in ("cleanclip", "tacleaner")}
    assert schedules["cleanclip"] == schedules["tacleaner"] and len(schedules["cleanclip"]) >= 3
    raw["model"] = {"name": "tacleaner-tiny-rn"}
    raw["data"] = {k: str(world / f) for k, f in (("implant", "implant.csv"), ("clean", "clean.csv"),
                                                  ("zeroshot", "zeroshot.csv"), ("zeroshot_val", "zeroshot.csv"),
                                                  ("classes", "classes.json"))}
    for a in raw["attacks"]:
        a["target"] = "yellow star"
    cfg = parse_config(raw)
    assert cfg.conditions.test.attacks == tuple(test)
