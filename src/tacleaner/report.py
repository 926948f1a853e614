"""Experiment reports: per (attack, defense) means with 95% intervals over seeds, paired
comparisons of defenses on the same backdoored models, a Markdown table and a PNG chart.

The unit of an interval is an independent run. When an experiment has several backdoored
models (implant or world seeds), a unit is one backdoored model, its clean seeds averaged;
with a single backdoored model, a unit is one cleaning seed, and the interval covers the
cleaning randomness only (the report says which).
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from .fileio import atomic_path, write_json, write_text
from .metric_names import KEY_METRICS, LABELS, METRICS
from .stats import INTERVAL, compare, summarize

CLEAN_MODEL = "clean model"  # rows of the clean (pre-attack) model under each attack's trigger
NO_DEFENSE = "none"  # rows of the backdoored model
COMPARED = ("asr_at_1", "asr_at_10", "clean_acc")  # the metrics paired comparisons are made on (ASR@10: the paper's top-10 claim)
CA_TOLERANCE = 5.0  # points of CA a defense may cost against its backdoored model in the per-run checks
FLOOR_TOLERANCE = 5.0  # points of ASR@1 above the clean model's that still count as "removed"


def _model_key(r: dict) -> tuple:
    return r["world_seed"], r["implant_seed"]


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def unit_values(rows: list[dict], metric: str) -> tuple[list[float], str]:
    """The values an interval is computed over, and what one unit is (see module docstring)."""
    rows = [r for r in rows if r.get(metric) is not None]
    models: dict[tuple, list[float]] = {}
    for r in rows:
        models.setdefault(_model_key(r), []).append(r[metric])
    if len(models) > 1:
        return [_mean(v) for v in models.values()], "backdoored models"
    return [r[metric] for r in rows], ("cleaning seeds" if any(r["clean_seed"] is not None for r in rows) else "runs")


def groups(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    out: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        out.setdefault((r["attack"], r["defense"]), []).append(r)
    return out


def summaries(rows: list[dict]) -> list[dict[str, Any]]:
    """Per (attack, defense): n, the unit, and a summary of every metric (test and val)."""
    out = []
    for (attack, defense), rs in groups(rows).items():
        entry: dict[str, Any] = {"attack": attack, "defense": defense}
        for metric in [*METRICS, *(f"val_{m}" for m in METRICS), *KEY_METRICS]:
            values, unit = unit_values(rs, metric)
            if values:
                entry[metric] = summarize(values).to_dict()
                entry.setdefault("n", len(values))
                entry.setdefault("unit", unit)
        out.append(entry)
    return out


def paired_values(a_rows: list[dict], b_rows: list[dict], metric: str) -> list[tuple[float, float]]:
    """Matched (a, b) values: per backdoored model when there are several (clean seeds
    averaged on each side), else per cleaning seed; a side without clean seeds (the
    backdoored model itself) matches every clean seed of the other."""
    def by(rows: list[dict]) -> dict[tuple, float]:
        return {(*_model_key(r), r["clean_seed"]): r[metric] for r in rows if r.get(metric) is not None}

    a, b = by(a_rows), by(b_rows)
    pairs: dict[tuple, list[tuple[float, float]]] = {}
    for key, x in a.items():
        y = b.get(key, b.get((key[0], key[1], None)))
        if y is None and key[2] is None:  # a is the backdoored model: average b over its clean seeds
            ys = [v for k, v in b.items() if k[:2] == key[:2]]
            y = _mean(ys) if ys else None
        if y is not None:
            pairs.setdefault(key[:2], []).append((x, y))
    if len(pairs) > 1:
        return [(_mean([p[0] for p in ps]), _mean([p[1] for p in ps])) for ps in pairs.values()]
    return [p for ps in pairs.values() for p in ps]


def comparisons(rows: list[dict]) -> list[dict[str, Any]]:
    """For each attack, every defense against the backdoored model and every pair of defenses
    (a - b with b the one listed first in the config, the baseline), on ASR@1, ASR@10 and CA."""
    g = groups(rows)
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    out = []
    for attack in attacks:
        defenses = [d for (a, d) in g if a == attack and d not in (CLEAN_MODEL, NO_DEFENSE)]
        pairs = [(d, NO_DEFENSE) for d in defenses] + [(b, a) for a, b in itertools.combinations(defenses, 2)]
        for a, b in pairs:
            if (attack, b) not in g:
                continue
            for metric in COMPARED:
                matched = paired_values(g[(attack, a)], g[(attack, b)], metric)
                if matched:
                    out.append({"attack": attack, **compare(a, b, metric, matched).to_dict()})
    return out


def per_run_checks(rows: list[dict]) -> list[dict[str, Any]]:
    """For each attack and defense, counts over runs (not intervals: claims that hold on every
    seed run), each run against its own backdoored model and the clean model of its world:

    - ``reduced``: ASR@1 at most half the backdoored model's, CA within ``CA_TOLERANCE`` points of it;
    - ``removed``: ASR@1 within ``FLOOR_TOLERANCE`` points of the clean model's ASR@1 under the same
      trigger (the floor: what the trigger does to a model that never saw the attack), CA within
      ``CA_TOLERANCE`` points. A run without a clean-model row is not counted in ``floor_n`` and
      cannot count as removed.
    """
    backdoored = {(r["attack"], *_model_key(r)): r for r in rows if r["defense"] == NO_DEFENSE}
    floors = {(r["attack"], *_model_key(r)): r for r in rows if r["defense"] == CLEAN_MODEL}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        ref = backdoored.get((r["attack"], *_model_key(r)))
        if r["defense"] in (NO_DEFENSE, CLEAN_MODEL) or ref is None or r["asr_at_1"] is None:
            continue
        c = out.setdefault((r["attack"], r["defense"]), {
            "attack": r["attack"], "defense": r["defense"], "n": 0, "asr_halved": 0, "ca_kept": 0, "reduced": 0,
            "floor_n": 0, "at_floor": 0, "removed": 0, "worst_asr": 0.0, "worst_ca_change": float("inf"),
            "worst_over_floor": None})
        halved = r["asr_at_1"] <= ref["asr_at_1"] / 2
        kept = r["clean_acc"] >= ref["clean_acc"] - CA_TOLERANCE / 100
        c["n"] += 1
        c["asr_halved"] += halved
        c["ca_kept"] += kept
        c["reduced"] += halved and kept
        floor = floors.get((r["attack"], *_model_key(r)))
        if floor is not None and floor.get("asr_at_1") is not None:
            over = r["asr_at_1"] - floor["asr_at_1"]
            at_floor = over <= FLOOR_TOLERANCE / 100 + 1e-9
            c["floor_n"] += 1
            c["at_floor"] += at_floor
            c["removed"] += at_floor and kept
            c["worst_over_floor"] = over if c["worst_over_floor"] is None else max(c["worst_over_floor"], over)
        c["worst_asr"] = max(c["worst_asr"], r["asr_at_1"])
        c["worst_ca_change"] = min(c["worst_ca_change"], r["clean_acc"] - ref["clean_acc"])
    return list(out.values())


def _worst(check: dict[str, Any]) -> str:
    over = check.get("worst_over_floor")
    floor = "" if over is None else f" ({100 * over:+.1f} points from the clean model's)"
    return f"worst ASR@1 {_pct(check['worst_asr'])}%{floor}, worst CA change {100 * check['worst_ca_change']:+.1f} points"


def verdict(check: dict[str, Any]) -> str:
    """One plain sentence from a per-run check, true of exactly the runs made. "Removed" only
    when every run brought ASR@1 back within ``FLOOR_TOLERANCE`` points of the clean model's with
    CA within ``CA_TOLERANCE``; "reduced" when every run halved ASR@1 with CA kept; both counts
    are given whatever the word."""
    n, d, a = check["n"], check["defense"], check["attack"]
    counts = (f"removed {check['removed']}/{n}, reduced {check['reduced']}/{n}" if check["floor_n"] == n
              else f"reduced {check['reduced']}/{n}; removal judged on {check['floor_n']}/{n} (no clean-model row "
                   f"for the rest), removed {check['removed']}/{n}")
    if check["floor_n"] == n and check["removed"] == n:
        return (f"{d} removed the {a} backdoor on every run ({counts}): ASR@1 within {FLOOR_TOLERANCE:g} points of "
                f"the clean model's, CA within {CA_TOLERANCE:g} points of the backdoored model's ({_worst(check)})")
    if check["reduced"] == n:
        return (f"{d} reduced the {a} backdoor on every run but did not remove it on every run ({counts}): ASR@1 at "
                f"most half the backdoored model's with CA within {CA_TOLERANCE:g} points ({_worst(check)})")
    return (f"{d} did not reduce the {a} backdoor on every run ({counts}): ASR@1 halved on "
            f"{check['asr_halved']}/{n}, CA within {CA_TOLERANCE:g} points on {check['ca_kept']}/{n} ({_worst(check)})")


def _cell(s: dict | None) -> str:
    if s is None:
        return "—"
    if s["lo"] is None:
        return f"{100 * s['mean']:.1f}"
    return f"{100 * s['mean']:.1f} ± {100 * (s['hi'] - s['lo']) / 2:.1f}"


def _num(x: float) -> str:
    return f"{x:.1f}" if round(x, 1) != 0 or x == 0 else f"{x:.2f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def points_cell(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.1f}"


def removed_cell(check: dict[str, Any]) -> str:
    """The removed count, or a dash when no run had a clean-model row to judge it against."""
    return f"{check['removed']}/{check['n']}" if check["floor_n"] else "—"


def per_run_markdown(rows: list[dict[str, Any]]) -> list[str]:
    """The per-run table and the verdict lines of a report (no lines when no run has a
    backdoored model to be judged against)."""
    checks = per_run_checks(rows)
    if not checks:
        return []
    lines = ["", f"Per run: removed = ASR@1 within {FLOOR_TOLERANCE:g} points of the clean model's (the floor) "
                 f"with CA within {CA_TOLERANCE:g} points of the backdoored model's; reduced = ASR@1 at most "
                 f"half the backdoored model's with CA within {CA_TOLERANCE:g} points:", "",
             "| attack | defense | removed | reduced | ASR@1 halved | CA within 5 points | worst ASR@1 % | "
             "worst above floor | worst CA change |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for c in checks:
        lines.append(f"| {c['attack']} | {c['defense']} | {removed_cell(c)} | {c['reduced']}/{c['n']} | "
                     f"{c['asr_halved']}/{c['n']} | {c['ca_kept']}/{c['n']} | {_pct(c['worst_asr'])} | "
                     f"{points_cell(c.get('worst_over_floor'))} | {100 * c['worst_ca_change']:+.1f} |")
    lines += ["", "Verdicts (each true of every run above, whatever the machine):", ""]
    lines += [f"- {verdict(c)}." for c in checks]
    return lines


def markdown_table(rows: list[dict[str, Any]], cleans: list[dict[str, Any]] | None = None,
                   seeds: str | None = None, extra: str = "") -> str:
    """The report: summaries with intervals, paired comparisons, ``extra`` (Markdown), then every row."""
    lines = []
    if cleans:
        s = summarize([c["clean_acc"] for c in cleans]).to_dict()
        lines.append(f"Clean model (before any attack): CA {_cell(s)}% (n={s['n']} world seed(s))\n")
    if seeds:
        lines.append(f"{seeds}. `none` is the backdoored model; `clean model` is the model before the attack "
                     "under the same trigger (the floor a defense is judged against).\n")
    lines.append(f"Mean ± half-width of the {INTERVAL} (n independent units: backdoored models when there are "
                 "several, else cleaning seeds of one backdoored model). Percent.\n")
    lines += ["| attack | defense | n | CA % | ASR@1 % | ASR@10 % |", "|---|---|---:|---:|---:|---:|"]
    for s in summaries(rows):
        lines.append(f"| {s['attack']} | {s['defense']} | {s.get('n', 0)} | {_cell(s.get('clean_acc'))} | "
                     f"{_cell(s.get('asr_at_1'))} | {_cell(s.get('asr_at_10'))} |")
    keyed = [s for s in summaries(rows) if any(m in s for m in KEY_METRICS)]
    if keyed:
        lines += ["", "Dual-key attacks: ASR@1 with both keys (above) and with each key alone (a dual key "
                      "needs both; either alone should stay near the clean model's rate):", "",
                  "| attack | defense | n | " + " | ".join(f"{LABELS[m]} %" for m in KEY_METRICS) + " |",
                  "|---|---|---:|---:|---:|"]
        for s in keyed:
            lines.append(f"| {s['attack']} | {s['defense']} | {s.get('n', 0)} | "
                         + " | ".join(_cell(s.get(m)) for m in KEY_METRICS) + " |")
    comps = comparisons(rows)
    if comps:
        lines += ["", "Paired comparisons on the same backdoored models and seeds (a − b, percentage points; "
                      "never a ranking when the interval contains 0):", "",
                  "| attack | a − b | metric | n | difference | 95% CI | verdict |", "|---|---|---|---:|---:|---|---|"]
        for c in comps:
            ci = "—" if c["lo"] is None else f"[{_num(c['lo'])}, {_num(c['hi'])}]"
            label = LABELS[c["metric"]]
            lines.append(f"| {c['attack']} | {c['a']} − {c['b']} | {label} | {c['n']} | {c['mean']:+.1f} | {ci} | "
                         f"{c['verdict']} |")
    lines += per_run_markdown(rows)
    if extra:
        lines += ["", extra.rstrip("\n")]
    lines += ["", "Every run:", "", "| attack | defense | world | implant | clean | CA % | ASR@1 % | ASR@10 % |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        c = "—" if r["clean_seed"] is None else r["clean_seed"]
        lines.append(f"| {r['attack']} | {r['defense']} | {r['world_seed']} | {r['implant_seed']} | {c} | "
                     f"{_pct(r['clean_acc'])} | {_pct(r['asr_at_1'])} | {_pct(r['asr_at_10'])} |")
    return "\n".join(lines) + "\n"


def write_chart(rows: list[dict[str, Any]], path: str | Path, cleans: list[dict[str, Any]] | None = None) -> None:
    """Bars of the mean CA, ASR@1 and ASR@10 per attack and defense, 95% error bars, every
    unit as a dot; the clean model's CA as a dashed line and its ASR@1 under each trigger as a
    short dotted line over that attack's group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sums = [s for s in summaries(rows) if s["defense"] != CLEAN_MODEL]
    g = groups(rows)
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(sums) + 2), 4.2))
    width = 0.27
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, metric in enumerate(METRICS):
        xs = np.arange(len(sums)) + (j - 1) * width
        means = [100 * s[metric]["mean"] if metric in s else np.nan for s in sums]
        err = np.array([[100 * (s[metric]["mean"] - s[metric]["lo"]), 100 * (s[metric]["hi"] - s[metric]["mean"])]
                        if metric in s and s[metric]["lo"] is not None else [0.0, 0.0] for s in sums]).T
        ax.bar(xs, means, width=width, label=LABELS[metric], color=colours[j], alpha=0.8)
        ax.errorbar(xs, means, yerr=err, fmt="none", ecolor="black", capsize=3, lw=1)
        for x, s in zip(xs, sums):
            values, _ = unit_values(g[(s["attack"], s["defense"])], metric)
            if len(values) > 1:
                jitter = np.linspace(-width / 4, width / 4, len(values))
                ax.scatter(x + jitter, [100 * v for v in values], s=9, color="black", zorder=3)
    if cleans:
        ax.axhline(100 * np.mean([c["clean_acc"] for c in cleans]), color="gray", ls="--", lw=1,
                   label="clean model CA")
    labelled = False
    for attack in dict.fromkeys(s["attack"] for s in sums):
        idx = [k for k, s in enumerate(sums) if s["attack"] == attack]
        ref = g.get((attack, CLEAN_MODEL))
        if ref:
            y = 100 * np.mean([r["asr_at_1"] for r in ref])
            ax.hlines(y, idx[0] - 0.45, idx[-1] + 0.45, colors="red", linestyles=":", lw=1.2,
                      label=None if labelled else "clean model ASR@1 (trigger)")
            labelled = True
    def wrap(name: str) -> str:  # long ids ("ta-negatives-only") one part per line
        return name.replace("-", "-\n") if len(name) > 10 else name

    ax.set_xticks(np.arange(len(sums)), [f"{wrap(s['attack'])}\n{wrap(s['defense'])}\nn={s.get('n', 0)}" for s in sums],
                  fontsize=8)
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title("Zero-shot CA and ASR: mean, 95% interval, each seed a dot", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)


def write_reports(rows: list[dict[str, Any]], out: Path, cleans: list[dict[str, Any]] | None = None,
                  seeds: str | None = None, extra: str = "") -> str:
    """``results.md``, ``aggregate.json`` and ``results.png`` in ``out``; returns the Markdown."""
    table = markdown_table(rows, cleans, seeds, extra)
    write_text(out / "results.md", table)
    write_json(out / "aggregate.json", {
        "interval": INTERVAL, "seeds": seeds,
        "clean_model": summarize([c["clean_acc"] for c in cleans]).to_dict() if cleans else None,
        "summaries": summaries(rows), "comparisons": comparisons(rows), "per_run_checks": per_run_checks(rows),
    })
    write_chart(rows, out / "results.png", cleans)
    return table


def held_out_summary(record: dict[str, Any]) -> str:
    """What a shipped held-out record (``research/heldout_record.py``) says, as plain lines: per
    defense, the per-run checks on the worlds its setting was chosen on and on those it was
    not. ``tacleaner demo`` prints it after its own runs, so its verdict is never read as a
    promise about worlds it did not see."""
    tune, test = (", ".join(map(str, record["worlds"][s])) for s in ("tune", "test"))
    planned = record.get("test_worlds_planned", record["worlds"]["test"])
    so_far = (f" ({len(record['worlds']['test'])} of the {len(planned)} planned held-out worlds finished so far)"
              if len(planned) > len(record["worlds"]["test"]) else "")
    lines = [f"Held-out check (not rerun by this command): `{record['command']}`, measured {record['measured']} on "
             f"{record['cpu_model']} (torch {record['torch']}). Settings chosen by validation CA on worlds {tune} "
             f"(the demo's world 0 among them); reported on worlds {test}, which took no part in any choice"
             f"{so_far}:", ""]
    for d in record["defenses"]:
        t, u = d["test"], d.get("tune")
        where = f" ({d['chosen']})" if d.get("chosen") else ""
        if d.get("command") and d["command"] != record["command"]:  # chosen by a second grid on the same worlds
            when = f", measured {d['measured']} on {d.get('cpu_model', '?')}" if d.get("measured") else ""
            where += f" [`{d['command']}`{when}]"
        tuned = f"; on the tune worlds removed {removed_cell(u)}, reduced {u['reduced']}/{u['n']}" if u else ""
        lines.append(f"- {d['defense']}{where} on the held-out worlds: removed {removed_cell(t)} (ASR@1 within "
                     f"{FLOOR_TOLERANCE:g} points of the clean model's), reduced {t['reduced']}/{t['n']} (ASR@1 "
                     f"halved), CA within {CA_TOLERANCE:g} points on {t['ca_kept']}/{t['n']} ({_worst(t)}){tuned}.")
    return "\n".join(lines) + "\n"
