"""research/training_losses.py, the loss table of docs/research/reproduction.md: last-epoch means per
defense, unfinished cleanings left out, masking ranges of one defense, and its errors."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "research" / "training_losses.py"
spec = importlib.util.spec_from_file_location("training_losses", SCRIPT)
training_losses = importlib.util.module_from_spec(spec)
spec.loader.exec_module(training_losses)


def _cleaning(root: Path, world: int, defense: str, last: dict, *, finished: bool = True, masking=None) -> None:
    d = root / f"world{world}" / "badclip" / "implant0" / defense / "clean0"
    d.mkdir(parents=True)
    rows = [{"epoch": 1, "step": 1, "clip_loss": 9.0},
            {"epoch": 1, "summary": True, "clip_loss": 5.0, "inmodal_loss": 5.0},  # not the last epoch
            {"epoch": 2, "step": 2, "clip_loss": 9.0},
            {"epoch": 2, "summary": True, **last}]
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:
        (d / "eval.json").write_text("{}")
    if masking is not None:
        (d / "subtext_masking.json").write_text(json.dumps({"epochs": masking}))


def test_last_epoch_means_per_defense_and_masking_of_one(tmp_path, capsys):
    _cleaning(tmp_path, 0, "cleanclip", {"clip_loss": 0.4, "inmodal_loss": 0.6})
    _cleaning(tmp_path, 1, "cleanclip", {"clip_loss": 0.6, "inmodal_loss": 0.4})
    _cleaning(tmp_path, 0, "tacleaner", {"clip_loss": 0.7, "inmodal_loss": 0.5, "ta_loss": 1.0, "ta_masked": 3.0},
              masking=[{"selected": 10, "distinct_positives": 4}, {"selected": 12, "distinct_positives": 7}])
    _cleaning(tmp_path, 1, "tacleaner", {"clip_loss": 99.0}, finished=False)  # no eval.json: left out
    _cleaning(tmp_path, 0, "tacleaner-random", {"clip_loss": 0.1}, masking=[{"selected": 500}])
    _cleaning(tmp_path, 0, "tacleaner-truth", {"clip_loss": 0.5, "ta_masked": 90.0, "ta_masked_images": 180.0},
              masking=[{"negatives_true_of_image": 40, "masked_subtext_to_image": 3000}])
    assert training_losses.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| cleanclip | 2 | 0.500 | 0.500 | 0.000 | 0.0 | 0.0 |" in out
    assert "| tacleaner | 1 | 0.700 | 0.500 | 1.000 | 3.0 | 0.0 |" in out
    assert "| tacleaner-truth | 1 | 0.500 | 0.000 | 0.000 | 90.0 | 180.0 |" in out
    assert "(1 unfinished cleanings left out)" in out
    assert "tacleaner's masking, per epoch over 2 cleanings" not in out  # the unfinished one wrote none
    assert "selected: 10-12" in out and "distinct_positives: 4-7" in out  # not tacleaner-random's 500


def test_a_bad_line_or_an_empty_folder_is_a_one_line_error(tmp_path, capsys):
    assert training_losses.main([str(tmp_path)]) == 1
    assert "no cleaning with a metrics.jsonl" in capsys.readouterr().err
    _cleaning(tmp_path, 0, "cleanclip", {"clip_loss": 0.4})
    path = tmp_path / "world0" / "badclip" / "implant0" / "cleanclip" / "clean0" / "metrics.jsonl"
    path.write_text(path.read_text() + "{not json\n")
    assert training_losses.main([str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and str(path) in err and "line 5" in err and "\n" not in err
