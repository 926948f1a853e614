"""Statistics over seeds on hand-made numbers: t quantiles, intervals, paired comparisons."""
import math

import pytest

from tacleaner.errors import TacleanerError
from tacleaner.experiment import SeedPlan
from tacleaner.report import comparisons, markdown_table, paired_values, summaries, unit_values
from tacleaner.stats import compare, summarize, t_cdf, t_quantile


@pytest.mark.parametrize("df,expected", [(1, 12.7062047), (2, 4.3026527), (3, 3.1824463), (4, 2.7764451),
                                         (9, 2.2621572), (29, 2.0452296), (1000, 1.9623391)])
def test_t_quantile_matches_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)


def test_t_cdf_symmetry_and_known_values():
    assert t_cdf(0.0, 5) == pytest.approx(0.5)
    assert t_cdf(-2.0150484, 5) == pytest.approx(0.05, abs=1e-7)  # t(0.95, 5) = 2.015
    assert t_quantile(0.025, 7) == pytest.approx(-t_quantile(0.975, 7))


def test_summary_hand_computed():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    sd = math.sqrt(5 / 3)  # sum of squared deviations 5, over n - 1 = 3
    half = 3.1824463 * sd / 2
    assert (s.n, s.mean) == (4, 2.5) and s.sd == pytest.approx(sd)
    assert s.lo == pytest.approx(2.5 - half, abs=1e-6) and s.hi == pytest.approx(2.5 + half, abs=1e-6)
    one = summarize([0.3])
    assert one.n == 1 and one.sd is None and one.lo is None and one.half_width is None
    with pytest.raises(ValueError):
        summarize([])


def test_paired_verdicts():
    clear = compare("tacleaner", "cleanclip", "asr_at_1", [(0.10, 0.20), (0.12, 0.21), (0.09, 0.20)])
    # differences -10, -9, -11 points: mean -10, sd 1, half-width 4.303 * 1 / sqrt(3) = 2.484
    assert clear.diff.mean == pytest.approx(-10.0)
    assert clear.diff.lo == pytest.approx(-12.484, abs=1e-3) and clear.diff.hi == pytest.approx(-7.516, abs=1e-3)
    assert clear.verdict == "tacleaner lower than cleanclip by 10.0 points, 95% CI [-12.5, -7.5], n=3"
    overlap = compare("tacleaner", "cleanclip", "asr_at_1", [(0.10, 0.20), (0.30, 0.20), (0.15, 0.20)])
    assert "not distinguishable at n=3" in overlap.verdict and overlap.diff.lo < 0 < overlap.diff.hi
    single = compare("a", "b", "asr_at_1", [(0.1, 0.5)])
    assert "n=1" in single.verdict and "not distinguishable" in single.verdict


def _row(defense, i, c, asr, ca=0.9, w=0):
    return {"attack": "badnet", "defense": defense, "world_seed": w, "implant_seed": i, "clean_seed": c,
            "clean_acc": ca, "asr_at_1": asr, "asr_at_10": 1.0}


def test_units_are_backdoored_models_when_there_are_several():
    # Two backdoored models, two clean seeds each: the unit is the model, clean seeds averaged.
    rows = [_row("cc", 0, 0, 0.2), _row("cc", 0, 1, 0.4), _row("cc", 1, 0, 0.5), _row("cc", 1, 1, 0.7)]
    values, unit = unit_values(rows, "asr_at_1")
    assert values == pytest.approx([0.3, 0.6]) and unit == "backdoored models"
    # One backdoored model: the unit is the cleaning seed.
    values, unit = unit_values(rows[:2], "asr_at_1")
    assert values == pytest.approx([0.2, 0.4]) and unit == "cleaning seeds"


def test_comparisons_pair_the_same_backdoored_models():
    rows = []
    for i, (none, cc, ta) in enumerate([(0.98, 0.30, 0.20), (0.97, 0.40, 0.25), (0.99, 0.35, 0.30)]):
        rows += [_row("none", i, None, none), _row("cleanclip", i, i, cc), _row("tacleaner", i, i, ta)]
    pairs = paired_values([r for r in rows if r["defense"] == "cleanclip"], [r for r in rows if r["defense"] == "none"],
                          "asr_at_1")
    assert [x for p in pairs for x in p] == pytest.approx([0.30, 0.98, 0.40, 0.97, 0.35, 0.99])
    comps = {(c["a"], c["b"], c["metric"]): c for c in comparisons(rows)}
    ta_cc = comps[("tacleaner", "cleanclip", "asr_at_1")]
    # differences -10, -15, -5: mean -10, sd 5, half-width 4.3027 * 5 / sqrt(3) = 12.42 -> overlaps 0
    assert ta_cc["mean"] == pytest.approx(-10.0) and ta_cc["hi"] == pytest.approx(2.421, abs=1e-3)
    assert "not distinguishable" in ta_cc["verdict"]
    assert comps[("tacleaner", "cleanclip", "asr_at_10")]["mean"] == pytest.approx(0.0)  # the paper's top-10 claim
    assert {m for (_, _, m) in comps} == {"asr_at_1", "asr_at_10", "clean_acc"}
    cc_none = comps[("cleanclip", "none", "asr_at_1")]
    assert cc_none["mean"] == pytest.approx(-63.0) and cc_none["hi"] < 0 and "lower than none" in cc_none["verdict"]
    s = {x["defense"]: x for x in summaries(rows)}
    assert s["cleanclip"]["n"] == 3 and s["cleanclip"]["asr_at_1"]["mean"] == pytest.approx(0.35)
    md = markdown_table(rows)
    assert "| badnet | cleanclip | 3 | 90.0 ± 0.0 | 35.0 ± 12.4 |" in md
    assert "tacleaner − cleanclip" in md


def test_a_defense_with_several_clean_seeds_against_one_backdoored_model():
    rows = [_row("none", 0, None, 0.95), _row("cc", 0, 0, 0.30), _row("cc", 0, 1, 0.50), _row("cc", 0, 2, 0.40)]
    (c,) = [c for c in comparisons(rows) if c["metric"] == "asr_at_1"]
    assert c["n"] == 3 and c["mean"] == pytest.approx(-55.0)


def test_seed_plans():
    assert SeedPlan.parse([0, 1, 2]) == SeedPlan(world=(0,), implant=(0, 1, 2), clean=None)
    assert SeedPlan.parse([0, 1]).clean_seeds(1) == (1,)
    plan = SeedPlan.parse({"world": [0, 1], "implant": 3, "clean": [0, 1, 2]})
    assert plan.world == (0, 1) and plan.implant == (3,) and plan.clean_seeds(3) == (0, 1, 2)
    assert "clean 0, 1, 2" in plan.describe() and "world 0, 1" in plan.describe()
    for bad in ({"implant": []}, {"clean": ["a"]}, {"bogus": [1]}, "0,1", [0, 0], {"world": [True]}):
        with pytest.raises(TacleanerError):
            SeedPlan.parse(bad)


def test_per_run_checks_count_seeds_against_their_own_backdoored_model():
    from tacleaner.report import per_run_checks

    rows = [_row("none", 0, None, 0.90, ca=0.90), _row("cc", 0, 0, 0.45, ca=0.86),  # halved, CA -4
            _row("none", 1, None, 0.60, ca=0.80), _row("cc", 1, 1, 0.31, ca=0.74)]  # not halved, CA -6
    (c,) = per_run_checks(rows)
    assert (c["n"], c["asr_halved"], c["ca_kept"], c["reduced"]) == (2, 1, 1, 1)
    assert (c["floor_n"], c["removed"], c["worst_over_floor"]) == (0, 0, None)  # no clean-model row: not judged
    assert c["worst_asr"] == pytest.approx(0.45) and c["worst_ca_change"] == pytest.approx(-0.06)


def test_removed_means_back_to_the_clean_models_floor_and_reduced_means_halved():
    from tacleaner.report import per_run_checks

    # model 0: floor 5%, cleaned to 9.9% (within 5 points): removed and reduced.
    # model 1: floor 5%, cleaned to 40.2% from 99%: halved, so reduced, but 35 points above the floor.
    rows = [_row("clean model", 0, None, 0.05, ca=0.85), _row("none", 0, None, 0.99, ca=0.90),
            _row("cc", 0, 0, 0.099, ca=0.88),
            _row("clean model", 1, None, 0.05, ca=0.85), _row("none", 1, None, 0.99, ca=0.90),
            _row("cc", 1, 0, 0.402, ca=0.88)]
    (c,) = per_run_checks(rows)
    assert (c["n"], c["reduced"], c["floor_n"], c["at_floor"], c["removed"]) == (2, 2, 2, 1, 1)
    assert c["worst_over_floor"] == pytest.approx(0.352)
    rows[2] = _row("cc", 0, 0, 0.101, ca=0.88)  # 5.1 points above the floor: not removed
    assert per_run_checks(rows)[0]["removed"] == 0
    rows[2] = _row("cc", 0, 0, 0.06, ca=0.84)  # at the floor but CA -6: neither removed nor reduced
    (c,) = per_run_checks(rows)
    assert (c["at_floor"], c["removed"], c["reduced"]) == (1, 0, 1)


def test_verdicts_say_removed_only_at_the_floor_and_count_both():
    from tacleaner.report import markdown_table, per_run_checks, verdict

    rows = [_row("none", 0, None, 0.90, ca=0.90), _row("cc", 0, 0, 0.45, ca=0.86),
            _row("none", 1, None, 0.60, ca=0.80), _row("cc", 1, 1, 0.31, ca=0.74)]
    (c,) = per_run_checks(rows)
    assert verdict(c).startswith("cc did not reduce the badnet backdoor on every run (reduced 1/2; removal judged "
                                 "on 0/2 (no clean-model row for the rest), removed 0/2): ASR@1 halved on 1/2, "
                                 "CA within 5 points on 1/2")
    rows[-1] = _row("cc", 1, 1, 0.29, ca=0.78)  # now halved with CA -2
    rows += [_row("clean model", 0, None, 0.03, ca=0.85), _row("clean model", 1, None, 0.04, ca=0.75)]
    (c,) = per_run_checks(rows)
    assert verdict(c) == ("cc reduced the badnet backdoor on every run but did not remove it on every run (removed "
                          "0/2, reduced 2/2): ASR@1 at most half the backdoored model's with CA within 5 points "
                          "(worst ASR@1 45.0% (+42.0 points from the clean model's), worst CA change -4.0 points)")
    assert "- " + verdict(c) + "." in markdown_table(rows)
    assert "| badnet | cc | 0/2 | 2/2 | 2/2 | 2/2 | 45.0 | +42.0 | -4.0 |" in markdown_table(rows)
    rows[1], rows[3] = _row("cc", 0, 0, 0.05, ca=0.86), _row("cc", 1, 1, 0.08, ca=0.78)
    (c,) = per_run_checks(rows)
    assert verdict(c) == ("cc removed the badnet backdoor on every run (removed 2/2, reduced 2/2): ASR@1 within 5 "
                          "points of the clean model's, CA within 5 points of the backdoored model's (worst ASR@1 "
                          "8.0% (+4.0 points from the clean model's), worst CA change -4.0 points)")
