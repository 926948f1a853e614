"""End to end through the CLI on tiny settings: the numbers must say the backdoor was learned."""
import json

import pytest
import yaml

from tacleaner_cli import main

TINY_TRAIN = ["--batch-size", "64", "--warmup-steps", "10", "--log-every", "5"]


def implant_and_evaluate(d, poison: str, implant: str, evals: dict[str, str]) -> None:
    """Implant by fine-tuning the pretrained model on the poisoning run ``d/poison``, then
    evaluate each ``{json name: model folder}`` under exactly that run's trigger."""
    w = d / "world"
    assert main(["--quiet", "train", "--data", str(d / poison / "data.csv"), "--model", "tacleaner-tiny-rn",
                 "--init", str(d / "pre" / "model.safetensors"), "--out", str(d / implant), "--epochs", "5",
                 "--lr", "2e-3", *TINY_TRAIN]) == 0
    for name, folder in evals.items():
        assert main(["--quiet", "evaluate", "--checkpoint", str(d / folder / "model.safetensors"),
                     "--data", str(w / "zeroshot.csv"), "--classes", str(w / "classes.json"),
                     "--trigger", str(d / poison), "--out", str(d / f"{name}.json")]) == 0


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """synth -> train -> poison -> implant -> evaluate -> clean -> evaluate, all via main()."""
    d = tmp_path_factory.mktemp("e2e")
    w = d / "world"
    assert main(["--quiet", "synth", "--out", str(w), "--seed", "1", "--pretrain", "2048", "--implant", "1024",
                 "--clean", "512", "--zeroshot-per-class", "2"]) == 0
    assert main(["--quiet", "train", "--data", str(w / "pretrain.csv"), "--model", "tacleaner-tiny-rn",
                 "--out", str(d / "pre"), "--epochs", "3", "--lr", "2e-3", *TINY_TRAIN]) == 0
    assert main(["--quiet", "poison", "--data", str(w / "implant.csv"), "--attack", "badnet", "--target", "yellow star",
                 "--num", "256", "--out", str(d / "poison"), "--classes", str(w / "classes.json"),
                 "--param", "patch_frac=0.25", "--param", "location=bottom-right"]) == 0
    implant_and_evaluate(d, "poison", "implant", {"clean_model": "pre", "backdoored": "implant"})
    assert main(["--quiet", "clean", "--defense", "finetune", "--checkpoint", str(d / "implant" / "model.safetensors"),
                 "--data", str(w / "clean.csv"), "--out", str(d / "cleaned"), "--epochs", "1", "--lr", "1e-4",
                 "--check", str(w / "zeroshot_val.csv"), "--check-classes", str(w / "classes.json"), *TINY_TRAIN]) == 0
    return d


def test_clean_with_check_scans_before_and_after_and_compares_the_suspected_class(pipeline):
    """`tacleaner clean --check`: the starting model and the cleaned one scanned on the given
    clean images; the class the first scan found most attracting, measured on both."""
    check = json.loads((pipeline / "cleaned" / "check.json").read_text())
    change = check["before_after"]
    assert change["target"] == check["before"]["target"]
    assert change["attraction_before"] == check["before"]["attraction"]
    assert change["anomaly_before"] == check["before"]["anomaly"]
    assert 0 <= change["attraction_after"] <= 1
    assert check["after"]["attraction"] >= change["attraction_after"]  # the after scan's top is its most attracting


def test_backdoor_is_learned_and_metrics_complete(pipeline):
    clean = json.loads((pipeline / "clean_model.json").read_text())
    bad = json.loads((pipeline / "backdoored.json").read_text())
    for res in (clean, bad):
        for key in ("clean_acc", "asr_at_1", "asr_at_10", "num_images", "num_asr_images", "target", "attack",
                    "checkpoint"):
            assert key in res, key
        assert res["target"] == "yellow star" and res["attack"] == "badnet"
        assert res["attack_params"]["location"] == "bottom-right"
    assert bad["asr_at_1"] >= 0.6, bad
    assert bad["asr_at_1"] >= clean["asr_at_1"] + 0.4, (clean, bad)


def test_stage_outputs(pipeline):
    for stage in ("pre", "implant", "cleaned"):
        folder = pipeline / stage
        for name in ("config.yaml", "log.txt", "metrics.jsonl", "model.safetensors", "metadata.json"):
            assert (folder / name).is_file(), (stage, name)
        assert not (folder / "train_state.pt").exists(), stage  # a complete run keeps no resume state
    manifest = json.loads((pipeline / "poison" / "manifest.json").read_text())
    assert manifest["num_poisoned"] == 256 and manifest["target"] == "yellow star"
    cfg = yaml.safe_load((pipeline / "cleaned" / "config.yaml").read_text())
    assert cfg["objective"]["name"] == "finetune" and cfg["train"]["lr"] == 1e-4


@pytest.mark.parametrize("defense", ["finetune", "cleanclip", "tacleaner"])
def test_each_defense_lowers_asr(pipeline, defense):
    """Three epochs at 1e-3: on an Intel Xeon (2026-12-02) the backdoored model's 95.7% fell to
    44.7% (finetune), 0.0% (cleanclip) and 30.9% (tacleaner) against the bound of 75.7%. Six
    epochs, this test's earlier setting, took twice the time and had left finetune at 68.1%
    against a bound of 72.6% on an AMD EPYC."""
    out = pipeline / f"clean-{defense}"
    w = pipeline / "world"
    assert main(["--quiet", "clean", "--defense", defense, "--checkpoint", str(pipeline / "implant" / "model.safetensors"),
                 "--data", str(w / "clean.csv"), "--out", str(out), "--epochs", "3", "--lr", "1e-3", *TINY_TRAIN]) == 0
    assert main(["--quiet", "evaluate", "--checkpoint", str(out / "model.safetensors"), "--data", str(w / "zeroshot.csv"),
                 "--classes", str(w / "classes.json"), "--trigger", str(pipeline / "poison"),
                 "--out", str(out / "eval.json")]) == 0
    bad = json.loads((pipeline / "backdoored.json").read_text())
    cleaned = json.loads((out / "eval.json").read_text())
    assert cleaned["asr_at_1"] <= bad["asr_at_1"] - 0.2, (bad["asr_at_1"], cleaned["asr_at_1"])
    losses = {k for line in open(out / "metrics.jsonl") for k in json.loads(line) if k.endswith("_loss")}
    expected = {"finetune": {"clip_loss"}, "cleanclip": {"clip_loss", "inmodal_loss"},
                "tacleaner": {"clip_loss", "inmodal_loss", "ta_loss"}}[defense]
    assert losses == expected


def test_learned_trigger_attack_implants_end_to_end(pipeline):
    """BadCLIP: the patch is optimised against the clean model, saved with the poisoning run,
    and evaluation loads exactly that trigger; the implanted model follows it."""
    d, w = pipeline, pipeline / "world"
    assert main(["--quiet", "poison", "--data", str(w / "implant.csv"), "--attack", "badclip", "--target", "yellow star",
                 "--num", "256", "--out", str(d / "poison_badclip"), "--classes", str(w / "classes.json"),
                 "--clean-model", str(d / "pre" / "model.safetensors"), "--param", "patch_frac=0.25",
                 "--param", "location=bottom-right", "--param", "steps=60", "--param", "batch_size=32",
                 "--param", "opt_images=256"]) == 0
    manifest = json.loads((d / "poison_badclip" / "manifest.json").read_text())
    assert manifest["trigger"] == "trigger.safetensors" and manifest["prepare"]["loss_last"] < manifest["prepare"]["loss_first"]
    implant_and_evaluate(d, "poison_badclip", "implant_badclip",
                         {"badclip_clean": "pre", "badclip_backdoored": "implant_badclip"})
    clean = json.loads((d / "badclip_clean.json").read_text())
    bad = json.loads((d / "badclip_backdoored.json").read_text())
    assert bad["attack"] == "badclip" and bad["target"] == "yellow star"
    assert bad["asr_at_1"] >= 0.6 and bad["asr_at_1"] >= clean["asr_at_1"] + 0.3, (clean, bad)


def test_scan_reports_every_class_and_writes_the_inverted_triggers(pipeline, capsys):
    """`tacleaner scan`: every class scored, sorted by attraction, the anomaly index being the
    robust z-score of those attractions, triggers inverted for the `top` classes only, the
    report and the picture written. (How often it names the real target is measured, not
    promised: docs/scan.md.)"""
    from tacleaner.scan import anomaly_index

    w = pipeline / "world"
    out = pipeline / "scan_backdoored"
    assert main(["--quiet", "scan", "--checkpoint", str(pipeline / "implant" / "model.safetensors"),
                 "--data", str(w / "zeroshot.csv"), "--classes", str(w / "classes.json"), "--out", str(out),
                 "--param", "images=128", "--param", "top=2", "--param", "invert_steps=40"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "scan.json").read_text())
    rows = report["classes"]
    assert len(rows) == len(json.loads((w / "classes.json").read_text())["classnames"])
    assert [r["attraction"] for r in rows] == sorted((r["attraction"] for r in rows), reverse=True)
    assert sum(r["attraction"] for r in rows) <= 1.0 + 1e-6  # shares of the probed images
    expected = anomaly_index([r["attraction"] for r in rows])
    assert [round(r["anomaly"], 6) for r in rows] == [round(z, 6) for z in expected]
    assert all(0 < r["trigger_area"] < 1 and 0 <= r["trigger_flip"] <= 1 for r in rows[:2])
    assert all(r["trigger_area"] is None for r in rows[2:])
    cut = report["settings"]["cut"]
    assert report["suspects"] == [r["name"] for r in rows if r["anomaly"] >= cut]
    decision = report["decision"]
    assert decision["target"] == rows[0]["name"] and decision["suspected"] == (rows[0]["anomaly"] >= cut)
    said = "backdoor suspected toward" if decision["suspected"] else "no evidence of a backdoor"
    assert f"decision: {said}" in printed and decision["sentence"] in printed
    assert "reliability (" in printed
    assert (out / "inverted_triggers.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["--quiet", "scan", "--checkpoint", str(pipeline / "implant" / "model.safetensors"), "--data",
                 str(w / "zeroshot.csv"), "--classes", str(w / "classes.json"), "--out", str(out)]) == 2  # no silent overwrite


def test_a_scan_with_before_compares_the_class_the_earlier_scan_suspected(pipeline, capsys, tmp_path):
    """`tacleaner scan --before`: the earlier scan's most attracting class, measured again. The
    same model scanned twice (the probes are seeded) gives the same measure before and after; a
    file that is not a scan report is refused in one line."""
    w = pipeline / "world"
    base = ["--quiet", "scan", "--checkpoint", str(pipeline / "implant" / "model.safetensors"), "--data",
            str(w / "zeroshot.csv"), "--classes", str(w / "classes.json"), "--param", "images=64", "--param", "top=0"]
    assert main([*base, "--out", str(tmp_path / "first")]) == 0
    first = json.loads((tmp_path / "first" / "scan.json").read_text())
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "second"), "--before", str(tmp_path / "first" / "scan.json")]) == 0
    printed = capsys.readouterr().out
    change = json.loads((tmp_path / "second" / "scan.json").read_text())["before_after"]
    assert change["target"] == first["decision"]["target"]
    assert change["attraction_before"] == change["attraction_after"] == first["classes"][0]["attraction"]
    assert change["anomaly_before"] == pytest.approx(change["anomaly_after"])
    assert f"{change['target']}, suspected before cleaning: attraction" in printed
    (tmp_path / "not_a_scan.json").write_text('{"rows": 3}')
    assert main([*base, "--before", str(tmp_path / "not_a_scan.json")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {tmp_path / 'not_a_scan.json'}: not a scan.json written by tacleaner scan"


def test_a_scan_against_its_reference_ranks_what_fine_tuning_added(pipeline, capsys, tmp_path):
    """`tacleaner scan --reference`: the pretrained model scanned first, then the model fine-tuned
    from it. Against itself a model gains nothing (every index 0: no evidence); the backdoored
    fine-tune gains most toward its target; a reference scanned otherwise is refused in one line."""
    w = pipeline / "world"

    def base(model: str) -> list[str]:
        return ["--quiet", "scan", "--checkpoint", str(pipeline / model / "model.safetensors"), "--data",
                str(w / "zeroshot.csv"), "--classes", str(w / "classes.json"), "--param", "images=64",
                "--param", "top=0"]

    assert main([*base("pre"), "--out", str(tmp_path / "pre")]) == 0
    ref = tmp_path / "pre" / "scan.json"
    pre = {c["name"]: c["attraction"] for c in json.loads(ref.read_text())["classes"]}
    capsys.readouterr()
    assert main([*base("pre"), "--reference", str(ref), "--out", str(tmp_path / "self")]) == 0
    printed = capsys.readouterr().out
    itself = json.loads((tmp_path / "self" / "scan.json").read_text())
    assert itself["reference"] == str(ref) and not itself["decision"]["suspected"]
    assert all(c["anomaly"] == 0 and c["reference_attraction"] == c["attraction"] for c in itself["classes"])
    assert "decision: no evidence of a backdoor (the class gaining the most attraction" in printed
    assert "each against the model it was fine-tuned from" in printed  # the reference's own reliability line
    assert main([*base("implant"), "--reference", str(ref), "--out", str(tmp_path / "implant")]) == 0
    got = json.loads((tmp_path / "implant" / "scan.json").read_text())
    assert got["classes"][0]["name"] == "yellow star" and got["decision"]["cut"] == 12
    assert all(c["reference_attraction"] == pytest.approx(pre[c["name"]]) for c in got["classes"])
    capsys.readouterr()
    assert main([*base("implant"), "--param", "seed=1", "--reference", str(ref)]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {ref}: scanned with seed 0, this scan uses 1; scan both "
                                               "models with the same settings")


def test_patch_probes_find_the_patch_backdoors_target(pipeline):
    """The patch probe (free squares of 1/8 to 1/3 of the side at random places) ends most often
    in the BadNet model's target, which the L-inf probe ranks far down on this model; on the
    clean model from before the attack, the target does not come first."""
    w = pipeline / "world"
    ranks = {}
    for name, folder in (("backdoored", "implant"), ("clean", "pre")):
        out = pipeline / f"scan_patch_{name}"
        assert main(["--quiet", "scan", "--checkpoint", str(pipeline / folder / "model.safetensors"),
                     "--data", str(w / "zeroshot.csv"), "--classes", str(w / "classes.json"), "--out", str(out),
                     "--param", "probe=patch", "--param", "top=0", "--param", "images=128"]) == 0
        rows = json.loads((out / "scan.json").read_text())["classes"]
        assert all(set(r["by_probe"]) == {"patch"} for r in rows)
        ranks[name] = [r["name"] for r in rows].index("yellow star") + 1
    assert ranks["backdoored"] == 1 and ranks["clean"] > 1, ranks


def test_anomaly_index_is_the_robust_z_score():
    from tacleaner.scan import anomaly_index

    z = anomaly_index([0.0, 0.01, 0.02, 0.01, 0.5])
    assert z[4] == pytest.approx((0.5 - 0.01) / (0.01 * 1.4826)) and z[1] == 0.0 and z[0] < 0
    assert anomaly_index([0.0, 0.0, 0.0, 0.3])[3] == pytest.approx(0.3 / 1e-3)  # MAD 0: a floor, no division by 0
