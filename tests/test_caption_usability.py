"""Captions TA-Cleaner's subtext term cannot use are counted per epoch by cause, and a share past
``usable.WARN_SHARE`` is one warning line: on real captions with a real spaCy parse."""
from __future__ import annotations

import warnings

import pytest
import torch

from tacleaner.text.usable import CAUSES, WARN_SHARE, language_supported, unusable_cause


def test_the_causes_one_caption_at_a_time():
    assert language_supported("a red star on a dark background")
    assert not language_supported("一只红色的星星") and not language_supported("🌟🌟 !!") and not language_supported("")
    assert not language_supported("красная звезда")
    assert language_supported("une étoile rouge")  # Latin letters: not told apart from English
    assert unusable_cause("a red star", True, True) is None
    assert unusable_cause("красная звезда", False, False) == "language not supported"
    assert unusable_cause("hello there", False, False) == "no parse"
    assert unusable_cause("a star", True, False) == "no swappable word"
    assert unusable_cause("a star", True, False, need_negatives=False) is None


FOREIGN = {4: "一只红色的星星", 5: "красная звезда на тёмном фоне", 6: "🌟🌟🌟", 7: "..."}  # rows 4-7 of eight


def test_an_epoch_counts_unusable_captions_and_warns_once(recaptioned):
    from tacleaner.data.pairs import read_pairs
    from tacleaner.defenses import create_defense
    from tacleaner.models import create_model

    path = recaptioned("mixed.csv", 8, FOREIGN)
    torch.manual_seed(0)
    objective = create_defense("tacleaner", k=1.0, m=2, aug_images=False, prefetch_from=0)
    objective.setup(create_model("tacleaner-tiny-rn"), read_pairs(path), seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        objective.on_epoch_start(0)
        objective.on_epoch_start(1)
    last = objective.subtexts.masking[-1]
    assert last["drawn"] == 8 and last["unusable"]["language not supported"] == 4
    assert list(last["unusable"]) == list(CAUSES)
    assert last["selected"] == 8 - sum(last["unusable"].values())
    assert sum(last["unusable"].values()) > WARN_SHARE * 8
    lines = [str(w.message) for w in caught if "TA-Cleaner" in str(w.message)]
    assert len(lines) == 1, lines  # once per run, not per epoch
    assert "4 language not supported" in lines[0] and "supported: English" in lines[0] and "\n" not in lines[0]


@pytest.mark.parametrize("share", [0.0])
def test_english_captions_give_no_warning(world, share):
    from tacleaner.data.pairs import read_pairs
    from tacleaner.defenses import create_defense
    from tacleaner.models import create_model

    objective = create_defense("tacleaner", k=0.05, m=2, aug_images=False, prefetch_from=0)
    objective.setup(create_model("tacleaner-tiny-rn"), read_pairs(world / "clean.csv"), seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        objective.on_epoch_start(0)
    assert not [w for w in caught if "TA-Cleaner" in str(w.message)]
    assert objective.subtexts.masking[-1]["unusable"]["language not supported"] == share


def test_the_subtexts_command_reports_the_same_counts(tmp_path, capsys):
    import json

    from tacleaner_cli import main

    path = tmp_path / "captions.txt"
    path.write_text("a red star on a dark background\n一只红色的星星\n🌟🌟\n", encoding="utf-8")
    assert main(["subtexts", "--captions", str(path)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == ("unusable for TA-Cleaner's subtext term: 2 of 3 (67%: 2 language not supported) "
                    "(supported: English)")
    assert main(["subtexts", "--captions", str(path), "--json"]) == 0
    out = capsys.readouterr()
    assert [r["unusable"] for r in json.loads(out.out)] == [None, "language not supported", "language not supported"]
    assert "2 of 3" in out.err


def test_clean_logs_and_records_the_counts(recaptioned, tmp_path, capsys):
    import json

    from tacleaner.models import create_model, save_model
    from tacleaner_cli import main

    start = tmp_path / "start.safetensors"
    save_model(create_model("tacleaner-tiny-rn"), start)
    out = tmp_path / "run"
    code = main(["clean", "--defense", "tacleaner", "--param", "k=1.0", "--param", "prefetch_from=0",
                 "--checkpoint", str(start), "--data", str(recaptioned("mixed.csv", 8, FOREIGN)), "--out", str(out),
                 "--epochs", "1", "--batch-size", "8", "--threads", "1"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "subtexts unusable: 4 of 8 (50%: 4 language not supported)" in (out / "log.txt").read_text()
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["subtexts"]["unusable"]["language not supported"] == 4 and meta["subtexts"]["drawn"] == 8
    assert len([line for line in err.splitlines() if line.startswith("warning: TA-Cleaner")]) == 1, err
