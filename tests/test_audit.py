"""`tacleaner audit` end to end on a tiny world: every step's output, the report that joins them
(rendered in a real headless chromium), resuming, and bad inputs in one line each."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from tacleaner_cli import main


@pytest.fixture(scope="module")
def suspect(world, trained_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """A BadNet model: the trained tiny model fine-tuned on the world's implant set with 40 of its
    160 pairs poisoned toward yellow star; the trained model is its base."""
    d = tmp_path_factory.mktemp("suspect")
    assert main(["--quiet", "poison", "--data", str(world / "implant.csv"), "--attack", "badnet", "--target",
                 "yellow star", "--num", "40", "--out", str(d / "poison"), "--classes", str(world / "classes.json"),
                 "--param", "patch_frac=0.25", "--param", "location=bottom-right"]) == 0
    assert main(["--quiet", "train", "--data", str(d / "poison" / "data.csv"), "--init", str(trained_checkpoint),
                 "--out", str(d / "implant"), "--epochs", "4", "--lr", "2e-3", "--batch-size", "32",
                 "--warmup-steps", "5"]) == 0
    return {"model": d / "implant" / "model.safetensors", "base": trained_checkpoint,
            "pairs": d / "poison" / "data.csv", "root": d}


def audit_args(world: Path, suspect: dict[str, Path], out: Path) -> list[str]:
    return ["--quiet", "audit", "--checkpoint", str(suspect["model"]), "--zeroshot", str(world / "zeroshot.csv"),
            "--classes", str(world / "classes.json"), "--out", str(out), "--data", str(suspect["pairs"]),
            "--clean-data", str(world / "clean.csv"), "--base", str(suspect["base"]), "--rates", "1e-4,1e-3",
            "--epochs", "1", "--batch-size", "32", "--scan-images", "48"]


@pytest.fixture(scope="module")
def audited(world, suspect) -> Path:
    out = suspect["root"] / "audit"
    assert main(audit_args(world, suspect, out)) == 0
    return out


def test_the_report_joins_every_steps_output(audited, world):
    report = json.loads((audited / "report.json").read_text())
    scan = json.loads((audited / "scan" / "scan.json").read_text())
    assert [f["id"] for f in report["findings"]] == ["scan", "detect", "cleaning", "accuracy"]
    sentence = scan["decision"]["sentence"]
    assert report["decision"].startswith(sentence[0].upper() + sentence[1:])
    assert scan["reference"] == str(audited / "scan_base" / "scan.json")  # --base: ranked against the base's scan
    # the halves: every labelled image in exactly one, each class in both
    halves = {}
    for name in ("validation", "test"):
        with open(audited / "split" / f"{name}.csv", newline="") as f:
            halves[name] = list(csv.DictReader(f))
    with open(world / "zeroshot.csv", newline="") as f:
        assert len(halves["validation"]) + len(halves["test"]) == len(list(csv.DictReader(f)))
    assert not {r["image"] for r in halves["validation"]} & {r["image"] for r in halves["test"]}
    assert {r["label"] for r in halves["validation"]} == {r["label"] for r in halves["test"]}
    # detection: the 20 highest scores of scores.csv, highest first; the rest written as clean.csv
    with open(audited / "detect" / "scores.csv", newline="") as f:
        scores = sorted((float(r["score"]) for r in csv.DictReader(f) if r["score"]), reverse=True)
    shown = report["detect"]["suspicious"]
    assert [s["score"] for s in shown] == pytest.approx(scores[:20])
    if scan["decision"]["suspected"]:  # the flagged pairs naming the suspected class, highest first
        named = report["detect"]["target"]
        assert named["name"] == scan["decision"]["target"] and len(named["suspicious"]) == min(20, named["flagged_naming"])
        got = [s["score"] for s in named["suspicious"]]
        assert got == sorted(got, reverse=True) and all(g >= report["detect"]["cut"] for g in got)
        assert all(named["name"] in s["caption"].lower() for s in named["suspicious"])
    else:
        assert "target" not in report["detect"]
    with open(audited / "detect" / "clean.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == report["detect"]["kept"] == 160 - report["detect"]["removed"]
    # cleaning: strongest first; the rule's choice is a candidate it trained; the measure before
    # and after is the first scan's class, measured on the cleaned model's scan
    cleaned = report["cleaning"]
    assert cleaned["chosen"] in {"cleanclip-lr0.0001", "cleanclip-lr0.001"}
    assert (audited / "clean" / cleaned["chosen"] / "model.safetensors").is_file()
    assert (audited / "clean" / "cleanclip-lr0.001.validation.json").is_file()  # the strongest is tried first
    change = cleaned["scan_after"]["before_after"]
    assert change["target"] == scan["decision"]["target"]
    assert change["attraction_before"] == pytest.approx(scan["classes"][0]["attraction"])
    t = cleaned["test_ca"]
    assert t["images"] == len(halves["test"])
    for key in ("before", "after", "change"):
        lo, hi = t[f"{key}_ci"]
        assert lo <= t[key] + 1e-9 and t[key] <= hi + 1e-9
    assert t["change"] == pytest.approx(t["after"] - t["before"])
    md = (audited / "report.md").read_text()
    assert report["decision"] in md and md.count("Reproduce: `tacleaner ") == 4 and md.count("Reliability: ") == 4


def test_the_report_renders_in_a_headless_browser(audited):
    """report.html opened from disk in Debian's chromium, offline: the decision is shown first,
    and every figure and thumbnail of report.json is an image the browser decoded."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("chromium not found: run scripts/install_browser.sh (make test does)")
    from playwright.sync_api import sync_playwright

    report = json.loads((audited / "report.json").read_text())
    pictures = sum(len(f.get("figures", [])) + len(f.get("thumbnails", [])) for f in report["findings"])
    requests = []
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        page = b.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.goto((audited / "report.html").resolve().as_uri())
        decision = page.locator("#decision")
        assert decision.is_visible() and decision.inner_text() == report["decision"]
        first = page.evaluate("document.querySelector('h1').nextElementSibling.id")
        assert first == "decision"
        sizes = page.evaluate("[...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])")
        for f in report["findings"]:
            assert page.locator(f"#{f['id']} h2").inner_text() == f["title"]
        b.close()
    assert len(sizes) == pictures >= 2 + 20
    assert all(done and w > 0 and h > 0 for done, w, h in sizes), sizes
    assert all(u.startswith(("file:", "data:")) for u in requests), requests  # nothing fetched from a network


def test_a_caption_names_a_class_by_its_words_in_order():
    from tacleaner.audit.run import names

    assert names("a large yellow star.", "yellow star") and names("Yellow  STAR on grey", "yellow star")
    assert not names("a yellow starfish", "yellow star") and not names("a star, yellow", "yellow star")
    assert names("a dog (husky)", "dog") and not names("hotdog stand", "dog")


def test_a_rerun_resumes_and_a_changed_setting_is_refused(audited, world, suspect, capsys):
    model = audited / "clean" / "cleanclip-lr0.001" / "model.safetensors"
    stamp = model.stat().st_mtime_ns
    capsys.readouterr()
    assert main(audit_args(world, suspect, audited)) == 2  # an existing folder, no --resume
    assert "--resume" in capsys.readouterr().err
    assert main([*audit_args(world, suspect, audited), "--resume"]) == 0
    assert model.stat().st_mtime_ns == stamp  # nothing retrained
    assert main([*audit_args(world, suspect, audited), "--resume", "--ca-budget", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {audited}: an audit with other settings (ca_budget); give another --out, or --overwrite "
                   "to start again")


def test_bad_inputs_get_one_line_and_leave_no_folder(world, suspect, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--quiet", "audit", "--checkpoint", str(suspect["model"]), "--zeroshot", str(world / "zeroshot.csv"),
            "--classes", str(world / "classes.json"), "--out", str(out)]

    def error(args: list[str]) -> str:
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err
        assert not out.exists()
        return err.strip()

    missing = tmp_path / "nope.json"
    assert str(missing) in error([*base, "--classes", str(missing)])
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"classnames": ["cat", "dog"], "templates": ["a photo of a {}."]}))
    assert "row 4: label 2 out of range" in error([*base, "--classes", str(other)])  # not the labels' classes
    bad_model = tmp_path / "bad.safetensors"
    bad_model.write_bytes(b"not a model at all")
    assert str(bad_model) in error([*base, "--checkpoint", str(bad_model)])
    assert str(bad_model) in error([*base, "--base", str(bad_model)])
    with open(world / "zeroshot.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    one = tmp_path / "one_class.csv"
    with open(one, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("image", "label"))
        for r in rows[:6]:
            w.writerow((str((world / r["image"]).resolve()), rows[0]["label"]))
    assert error([*base, "--zeroshot", str(one)]).startswith(f"error: {one}: the labelled images show 1 class(es)")
    assert "--defenses 'nosuch'" in error([*base, "--clean-data", str(world / "clean.csv"), "--defenses", "nosuch"])


def test_the_worked_examples_world_is_the_demos():
    """docs/howto-audit.md builds its world with experiments/audit-example.yaml: the demo's data,
    model, pretraining, attack and world and implant seeds, and no defense."""
    from importlib import resources

    import yaml

    root = Path(__file__).resolve().parents[1]
    example = yaml.safe_load((root / "experiments" / "audit-example.yaml").read_text())
    demo = yaml.safe_load(resources.files("tacleaner.configs").joinpath("demo.yaml").read_text())
    for key in ("model", "data", "train", "pretrain", "attacks"):
        assert example[key] == demo[key], key
    assert example["defenses"] == []
    assert example["seeds"]["world"] == demo["seeds"]["world"] and example["seeds"]["implant"] == demo["seeds"]["implant"]
    assert "tacleaner run experiments/audit-example.yaml --out runs/audit-example" in (
        root / "docs" / "howto-audit.md").read_text()


def test_the_how_to_shows_the_recorded_run():
    """docs/howto-audit.md's example output is the recorded audit of the demo's world
    (docs/research/data/audit-demo.json, research/audit_record.py): a changed report or record fails here."""
    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "howto-audit.md").read_text()
    record = json.loads((root / "docs" / "research" / "data" / "audit-demo.json").read_text())
    assert f"    {record['backdoored']['decision']}\n" in page
    assert f"    {record['clean']['decision']}\n" in page
    assert record["backdoored"]["target"] == record["true_target"] and not record["clean"]["suspected"]
    from tacleaner import findings

    for answer in ("scan_reference", "detect", "cleaning", "scan"):
        assert findings.reliability_line(answer) in page  # the lines as the shipped record prints them
