"""Held-out conditions and the defender's selection rule: candidates run on the tune set only,
the rule reads validation CA only, the test set runs the chosen setting under its group's name,
and the report shows the test set with the tune set beside it."""
import json

import pytest
import yaml

from tacleaner.errors import TacleanerError
from tacleaner.experiment import parse_config
from tacleaner.selection import Candidate, create_rule, select
from test_experiment import CONFIG, run_grid

HELD_OUT = {
    **CONFIG,
    "attacks": [{"name": "blended", "target": "red circle", "num": 16, "implant": {"epochs": 1}}],
    "defenses": [
        {"name": "finetune", "train": {"epochs": 1, "lr": 1e-4}},
        {"name": "cleanclip", "id": "cc-weak", "group": "cleanclip", "train": {"epochs": 1, "lr": 1e-5}},
        {"name": "cleanclip", "id": "cc-strong", "group": "cleanclip", "train": {"epochs": 1, "lr": 3e-3}},
    ],
    "seeds": {"implant": [0], "clean": [0]},
    "conditions": {"tune": {"world": [0]}, "test": {"world": [1]}},
    "select": {"rule": "ca-budget", "ca_budget": 100.0},
}


def test_ca_budget_takes_the_strongest_within_budget_and_never_reads_asr():
    rule = create_rule({"rule": "ca-budget", "ca_budget": 2.0})
    cands = [Candidate("weak", (0.01, -0.005)), Candidate("mid", (-0.019, 0.0)), Candidate("strong", (-0.03, 0.02))]
    record = select(rule, "g", cands)
    assert record["chosen"] == "mid" and record["candidates"][2]["worst"] == pytest.approx(-0.03)
    assert select(create_rule({"ca_budget": 5.0}), "g", cands)["chosen"] == "strong"
    none_ok = select(rule, "g", [Candidate("a", (-0.05,)), Candidate("b", (-0.06,))])
    assert none_ok["chosen"] == "a" and "weakest" in none_ok["reason"]
    assert select(create_rule({"rule": "max-val-ca"}), "g", cands, "max-val-ca")["chosen"] == "weak"
    with pytest.raises(TacleanerError, match="ca_budget"):
        create_rule({"ca_budget": -1})
    with pytest.raises(TacleanerError, match="unknown selection rule"):
        create_rule({"rule": "oracle-asr"})


@pytest.mark.parametrize("change, message", [
    ({"conditions": {"tune": {"world": [0]}, "test": {"world": [0]}}}, "in both the tune and the test set"),
    ({"conditions": {"tune": {"world": [0]}}}, "exactly the keys"),
    ({"conditions": {"tune": {"world": [0]}, "test": {"world": [1], "attacks": ["nope"]}}}, "no attack with id 'nope'"),
    ({"seeds": {"world": [0, 1], "implant": [0]}}, "seeds.world and conditions"),
    ({"conditions": None}, "give conditions"),
    ({"select": {"rule": "oracle"}}, "unknown selection rule"),
    ({"defenses": [{"name": "cleanclip", "id": "cleanclip", "group": "cleanclip"}]}, "also a defense id"),
    ({"data": {"synth": {**CONFIG["data"]["synth"], "zeroshot_val_per_class": 0}}}, "no validation split"),
])
def test_bad_held_out_configs_are_refused_when_loaded(change, message):
    raw = {**HELD_OUT, **change}
    if raw["conditions"] is None:
        del raw["conditions"]
    with pytest.raises(TacleanerError, match=message):
        parse_config(raw)


def test_a_held_out_grid_selects_on_tune_and_reports_test(tmp_path):
    _, out = run_grid(tmp_path, "heldout", HELD_OUT, "--jobs", "2")
    # Candidates ran on the tune world only; the test world ran the group under its own folder.
    tune_unit, test_unit = (out / f"world{w}" / "blended" / "implant0" for w in (0, 1))
    assert (tune_unit / "cc-weak" / "clean0" / "eval.json").is_file()
    assert (tune_unit / "cc-strong" / "clean0" / "eval.json").is_file()
    assert not (test_unit / "cc-weak").exists() and not (test_unit / "cc-strong").exists()
    assert (test_unit / "cleanclip" / "clean0" / "eval.json").is_file()
    record = json.loads((out / "selection" / "cleanclip.json").read_text())
    # A budget of 100 points admits both: the strongest (listed last) is chosen.
    assert record["chosen"] == "cc-strong" and record["rule"] == "ca-budget"
    backdoored = json.loads((tune_unit / "backdoored" / "eval.json").read_text())["val"]["clean_acc"]
    strong = json.loads((tune_unit / "cc-strong" / "clean0" / "eval.json").read_text())["val"]["clean_acc"]
    assert record["candidates"][1]["val_ca_changes"] == [pytest.approx(strong - backdoored)]
    # The chosen setting's training settings are the ones the test stage used.
    cfg = yaml.safe_load((test_unit / "cleanclip" / "clean0" / "config.yaml").read_text())
    assert cfg["train"]["lr"] == pytest.approx(3e-3)
    rows = json.loads((out / "results.json").read_text())
    test_rows = [r for r in rows if r["split"] == "test"]
    assert {r["defense"] for r in test_rows} == {"clean model", "none", "finetune", "cleanclip"}
    assert next(r for r in test_rows if r["defense"] == "cleanclip")["selected"] == "cc-strong"
    assert {r["world_seed"] for r in rows if r["split"] == "tune"} == {0}
    md = (out / "results.md").read_text()
    assert "this page: the test set" in md and "| blended | cleanclip | 1 |" in md and "cc-weak" in md
    assert "**chosen**" in md and "tune: removed" in md
    assert "cc-strong" not in [s["defense"] for s in json.loads((out / "aggregate.json").read_text())["summaries"]]
    tune_md = (out / "tune" / "results.md").read_text()
    assert "| blended | cc-weak | 1 |" in tune_md and "this page: the tune set" in tune_md


def test_held_out_summary_says_which_part_fails():
    from tacleaner.report import held_out_summary

    check = lambda n, h, k: {"attack": "badnet", "n": n, "asr_halved": h, "ca_kept": k, "reduced": min(h, k),  # noqa: E731
                             "floor_n": n, "removed": min(h, k) - 1, "worst_asr": 0.3, "worst_ca_change": -0.076,
                             "worst_over_floor": 0.25}
    record = {"command": "tacleaner run x.yaml", "measured": "2026-12-02", "cpu_model": "cpu", "torch": "2",
              "worlds": {"tune": [0, 1], "test": [4, 5, 6]},
              "defenses": [{"attack": "badnet", "defense": "cleanclip", "chosen": "cc-lr1", "test": check(6, 6, 5),
                            "tune": check(4, 4, 4)},
                           {"attack": "badnet", "defense": "finetune", "chosen": None, "test": check(6, 6, 6)}]}
    text = held_out_summary(record)
    assert "CA within 5 points on 5/6" in text and "worst CA change -7.6 points" in text
    assert ("finetune on the held-out worlds: removed 5/6 (ASR@1 within 5 points of the clean model's), reduced 6/6 "
            "(ASR@1 halved)") in text
    assert "+25.0 points from the clean model's" in text
    assert "on the tune worlds removed 3/4, reduced 4/4" in text and "worlds 4, 5, 6" in text and "finished so far" not in text
    partial = held_out_summary({**record, "test_worlds_planned": [4, 5, 6, 7, 8, 9]})
    assert "(3 of the 6 planned held-out worlds finished so far)" in partial
    second = {**record["defenses"][0], "defense": "tacleaner", "chosen": "ta-k0.5", "command": "tacleaner run y.yaml",
              "measured": "2026-12-03", "cpu_model": "other cpu"}
    merged = held_out_summary({**record, "defenses": [*record["defenses"], second]})
    # chosen by another grid: it says which, and when and where that grid ran
    assert "tacleaner (ta-k0.5) [`tacleaner run y.yaml`, measured 2026-12-03 on other cpu]" in merged
    assert "cleanclip (cc-lr1) on" in merged  # the record's own grid is not repeated


def test_the_demo_uses_the_settings_its_held_out_grid_chose():
    """The shipped record (printed by `tacleaner demo`) comes from experiments/demo-heldout.yaml,
    an entry from another grid on the same worlds where it names one (TA-Cleaner's w_ta and k:
    experiments/tacleaner-heldout.yaml); the demo's cleaning settings are the candidates those
    grids' selections chose."""
    from importlib import resources
    from pathlib import Path

    from tacleaner.experiment import load_config

    configs = resources.files("tacleaner.configs")
    record = json.loads(configs.joinpath("demo.heldout.json").read_text())
    grid, _ = load_config(Path(__file__).resolve().parents[1] / "experiments" / "demo-heldout.yaml")
    demo = parse_config(yaml.safe_load(configs.joinpath("demo.yaml").read_text()))
    planned = record["test_worlds_planned"]
    assert planned == list(grid.held_out.test.world) and len(planned) >= 6
    assert record["worlds"]["test"] and set(record["worlds"]["test"]) <= set(planned)
    assert not set(planned) & set(grid.held_out.tune.world)
    assert record["worlds"]["tune"] == list(grid.held_out.tune.world)
    assert set(demo.seed_plan.world) <= set(grid.held_out.tune.world)
    entries = {d["defense"]: d for d in record["defenses"]}
    root = Path(__file__).resolve().parents[1]
    for d in demo.defenses:
        entry = entries[d.name]
        source, _ = load_config(root / entry.get("config", "experiments/demo-heldout.yaml"))
        assert (source.held_out.tune.world, source.held_out.test.world) == (grid.held_out.tune.world, grid.held_out.test.world)
        cand = next(c for c in source.defenses if c.id == entry["chosen"])
        assert (cand.name, cand.params, cand.train) == (d.name, d.params, d.train), d.name


def test_selections_wait_for_every_tune_candidate_and_come_before_the_test_units():
    from tacleaner.experiment import Experiment

    cfg = parse_config({**HELD_OUT, "conditions": {"tune": {"world": [0, 1]}, "test": {"world": [2]}}})
    exp = Experiment.__new__(Experiment)  # the task list only: no folder
    exp.cfg, exp.held, exp.jobs = cfg, cfg.held_out, 1
    exp.plan = type(cfg.seed_plan)(world=(0, 1, 2), implant=(0,), clean=(0,))
    keys = [t.key for t in exp.tasks()]
    select = next(t for t in exp.tasks() if t.key == "select/cleanclip")
    assert set(select.deps) == {f"defense/{w}/blended/0/{c}/0" for w in (0, 1) for c in ("cc-weak", "cc-strong")}
    assert keys.index("select/cleanclip") < keys.index("pretrain/2") < keys.index("defense/2/blended/0/cleanclip/0")
    assert keys.index("defense/0/blended/0/cc-weak/0") < keys.index("pretrain/1")
