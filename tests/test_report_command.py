"""``tacleaner report``: the experiment's own report from its rows, every defense paired against
a baseline (its "equal CA" bar), extra pairs, merged inputs, and one-line errors, on hand-made
result rows."""
from __future__ import annotations

import json

from tacleaner import comparison
from tacleaner_cli.app import main


def _row(attack, defense, world, asr, ca, asr10=1.0):
    return {"attack": attack, "defense": defense, "world_seed": world, "implant_seed": 0,
            "clean_seed": None if defense == "none" else 0, "clean_acc": ca, "asr_at_1": asr, "asr_at_10": asr10}


def _rows(ta_asr, ta_ca):
    rows = []
    for w, (cc, ta, ca) in enumerate(zip([0.30, 0.40, 0.35], ta_asr, ta_ca)):
        rows += [_row("badclip", "none", w, 0.95, 0.90), _row("badclip", "cleanclip", w, cc, 0.88),
                 _row("badclip", "tacleaner", w, ta, ca, asr10=0.5)]
    return rows


def test_a_lower_asr_at_equal_ca_is_named_and_nothing_else():
    # tacleaner - cleanclip: -10, -12, -11 points of ASR@1; CA -0.5 points: beats it
    md = comparison.tables(_rows([0.20, 0.28, 0.24], [0.875] * 3), "cleanclip", [], 1.0)
    assert "| tacleaner | 3 | 87.5 ± 0.0 | 24.0 ± 9.9 | 50.0 ± 0.0 | -11.0 [-13.5, -8.5] * | -50.0" in md
    assert "- badclip: tacleaner lower ASR@1 than cleanclip at equal CA" in md
    assert "- badclip: tacleaner lower ASR@10 than cleanclip at equal CA (ASR@10 -50.0 [-50.0, -50.0] *" in md
    assert "2 intervals were tested for this list, each at 95% on its own" in md  # ASR@1 and ASR@10, one defense
    # the same ASR at 2 points less CA is not "equal CA"
    md = comparison.tables(_rows([0.20, 0.28, 0.24], [0.86] * 3), "cleanclip", [], 1.0)
    assert "- none:" in md and "- badclip:" not in md
    # ... but the same ASR at more CA is
    md = comparison.tables(_rows([0.20, 0.28, 0.24], [0.90] * 3), "cleanclip", [], 1.0)
    assert "- badclip: tacleaner lower ASR@1 than cleanclip at equal CA" in md
    # an interval that contains 0 is not a win at any CA
    md = comparison.tables(_rows([0.20, 0.50, 0.30], [0.88] * 3), "cleanclip", [], 1.0)
    assert "lower ASR@1 " not in md and "lower ASR@10 " in md


def test_pairs_and_removed_counts():
    md = comparison.tables(_rows([0.20, 0.28, 0.24], [0.875] * 3), "cleanclip", [("tacleaner", "cleanclip")], 1.0)
    assert "| badclip | tacleaner − cleanclip | 3 | -11.0 [-13.5, -8.5] * | -50.0" in md
    # both defenses halved ASR@1 with CA within 5 points on every model (reduced); no clean-model row: removed "—"
    assert md.count("| — | 3/3 |") == 2


def test_unknown_defense_or_bad_pair_is_one_line_naming_it(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(_rows([0.2, 0.2, 0.2], [0.88] * 3)))
    assert main(["report", str(path), "--baseline", "clean-clip"]) == 2
    assert "no defense 'clean-clip'" in capsys.readouterr().err
    assert main(["report", str(path), "--baseline", "cleanclip", "--pair", "tacleaner"]) == 2
    assert "--pair 'tacleaner'" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing.json"), "--baseline", "cleanclip"]) == 2
    assert "missing.json" in capsys.readouterr().err
    assert main(["report", str(path), "--baseline", "cleanclip"]) == 0
    assert "### badclip" in capsys.readouterr().out


def test_a_single_model_has_no_interval():
    rows = [_row("badnet", "none", 0, 0.9, 0.9), _row("badnet", "cleanclip", 0, 0.1, 0.9),
            _row("badnet", "tacleaner", 0, 0.05, 0.9)]
    md = comparison.tables(rows, "cleanclip", [], 1.0)
    assert "| tacleaner | 1 | 90.0 | 5.0 | 100.0 | -5.0 | +0.0 | +0.0 | — | 1/1 |" in md and "- none:" in md
    assert "intervals were tested" not in md  # one model: no interval, nothing tested


def test_inputs_merge_and_a_row_in_two_of_them_is_an_error(tmp_path, capsys):
    rows = _rows([0.20, 0.28, 0.24], [0.875] * 3)
    first, second = tmp_path / "w0-1.json", tmp_path / "w2.json"
    first.write_text(json.dumps([r for r in rows if r["world_seed"] < 2]))
    second.write_text(json.dumps([r for r in rows if r["world_seed"] == 2]))
    saved = tmp_path / "merged.json"
    assert main(["report", str(first), str(second), "--baseline", "cleanclip", "--save-rows", str(saved)]) == 0
    assert "| tacleaner | 3 | 87.5 ± 0.0 | 24.0 ± 9.9 |" in capsys.readouterr().out
    assert sorted(json.loads(saved.read_text()), key=str) == sorted(rows, key=str)
    assert main(["report", str(first), str(first), "--baseline", "cleanclip"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "w0-1.json" in err and "world 0" in err and "is in" in err
    (tmp_path / "broken.json").write_text("[{")
    assert main(["report", str(tmp_path / "broken.json"), "--baseline", "cleanclip"]) == 2
    assert "broken.json" in capsys.readouterr().err
    (tmp_path / "rows.json").write_text(json.dumps([{"attack": "badnet"}]))
    assert main(["report", str(tmp_path / "rows.json"), "--baseline", "cleanclip"]) == 2
    assert "rows.json: not a list of result rows" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--baseline", "cleanclip"]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_without_a_baseline_it_is_the_experiments_report_with_removed_and_reduced(tmp_path, capsys):
    rows = _rows([0.20, 0.28, 0.24], [0.875] * 3)
    rows += [_row("badclip", "clean model", w, 0.24, 0.86) for w in range(3)]  # the floor: 24% ASR@1
    path = tmp_path / "results.json"
    path.write_text(json.dumps(rows))
    assert main(["report", str(path)]) == 0
    out = capsys.readouterr().out
    # tacleaner: 20, 28, 24 against a 24% floor: within 5 points on all three; cleanclip 30-40: reduced only
    assert "| badclip | tacleaner | 3/3 | 3/3 |" in out and "| badclip | cleanclip | 0/3 | 3/3 |" in out
    assert "- tacleaner removed the badclip backdoor on every run (removed 3/3, reduced 3/3)" in out
    assert "- cleanclip reduced the badclip backdoor on every run but did not remove it" in out
    assert main(["report", str(path), "--pair", "tacleaner:cleanclip"]) == 2
    assert "--pair needs --baseline" in capsys.readouterr().err
