"""The cleaning set against the implant set: shared images found by path and by content, and a
grid that refuses to run with them unless the config allows it."""
import csv
import json
import shutil

import yaml

from tacleaner.data.overlap import shared_images
from tacleaner.data.pairs import read_pairs
from tacleaner_cli import main


def test_shared_images_by_path_and_by_content(world, tmp_path):
    clean = read_pairs(world / "clean.csv").images
    implant = list(read_pairs(world / "implant.csv").images)
    assert shared_images(clean, implant)["same_path"] == 0 and shared_images(clean, implant)["same_content"] == 0
    copy = tmp_path / "renamed.png"
    shutil.copy(clean[3], copy)  # the same bytes under another name
    found = shared_images(clean, implant + [clean[5], copy])
    assert (found["same_path"], found["same_content"]) == (1, 1)
    assert any("renamed.png" in e for e in found["examples"])


def test_run_refuses_an_overlap_unless_allowed(world, tmp_path, capsys):
    clean = tmp_path / "clean.csv"
    with open(world / "implant.csv", newline="") as f:
        rows = list(csv.reader(f))
    with open(clean, "w", newline="") as f:  # the first 40 implant pairs, as a cleaning set
        csv.writer(f).writerows([[rows[0][0], rows[0][1]]] + [[str(world / r[0]), r[1]] for r in rows[1:41]])
    config = {"name": "overlap", "model": {"name": "tacleaner-tiny-rn"},
              "data": {"implant": str(world / "implant.csv"), "clean": str(clean),
                       "zeroshot": str(world / "zeroshot.csv"), "classes": str(world / "classes.json")},
              "train": {"batch_size": 16, "threads": 1, "max_steps": 1, "warmup_steps": 1},
              "attacks": [{"name": "blended", "target": "red circle", "num": 8, "implant": {"epochs": 1}}],
              "defenses": [{"name": "finetune", "train": {"epochs": 1}}]}
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["--quiet", "run", str(path), "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "shares 40 image(s)" in err and "allow_overlap" in err
    config["data"]["allow_overlap"] = True
    path.write_text(yaml.safe_dump(config))
    assert main(["--quiet", "run", str(path), "--out", str(tmp_path / "b")]) == 0
    found = json.loads((tmp_path / "b" / "world0" / "overlap.json").read_text())
    assert found["same_path"] == 40 and found["same_content"] == 0
    config["data"]["allow_overlap"] = "yes"
    path.write_text(yaml.safe_dump(config))
    assert main(["--quiet", "run", str(path), "--out", str(tmp_path / "c")]) == 2
    assert "allow_overlap" in capsys.readouterr().err
