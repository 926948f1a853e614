"""Comparison tables of an experiment's result rows: per attack, every defense paired against one
baseline (``tacleaner report --baseline``), extra pairs, and the defenses that lower ASR at
equal CA, with the removed / reduced counts of :func:`tacleaner.report.per_run_checks`.

Rows come from an experiment's ``results.json``, a rows file :func:`merge` saved, or a run
folder (its finished units only, so a grid still running or cut off can be read). Several
inputs merge; the same (attack, defense, seeds) in two of them is an error. A defense "beats"
the baseline on an attack only when the interval of its ASR@1 (or ASR@10) difference lies below
0 and its mean CA is no more than ``ca_equal`` points below the baseline's (a lower ASR not
bought with CA). The pairing is the report's own, so the tables agree with results.md.
"""
from __future__ import annotations

from pathlib import Path

from .errors import TacleanerError
from .fileio import read_json
from .report import CLEAN_MODEL, NO_DEFENSE, groups, paired_values, per_run_checks, removed_cell, unit_values
from .stats import compare, format_summary, summarize

METRICS = ("clean_acc", "asr_at_1", "asr_at_10")
LABEL = {"clean_acc": "CA", "asr_at_1": "ASR@1", "asr_at_10": "ASR@10"}


def _cell(rows: list[dict], metric: str) -> str:
    values, _ = unit_values(rows, metric)
    return format_summary(summarize(values)) if values else "—"


def _diff(a_rows: list[dict], b_rows: list[dict], metric: str, a: str, b: str):
    matched = paired_values(a_rows, b_rows, metric)
    return compare(a, b, metric, matched).diff if matched else None


def _dcell(s) -> str:
    if s is None:
        return "—"
    if s.lo is None:
        return f"{s.mean:+.1f}"
    mark = "" if s.lo <= 0 <= s.hi else " *"
    return f"{s.mean:+.1f} [{s.lo:.1f}, {s.hi:.1f}]{mark}"


def tables(rows: list[dict], baseline: str, pairs: list[tuple[str, str]], ca_equal: float) -> str:
    g = groups(rows)
    checks = {(c["attack"], c["defense"]): c for c in per_run_checks(rows)}
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    out = ["Mean ± half-width of the 95% interval over backdoored models (percent); differences are "
           f"paired, a − {baseline}, in points with their 95% CI; * marks an interval that excludes 0.", ""]
    verdicts, tested = [], 0
    for attack in attacks:
        defenses = [d for (a, d) in g if a == attack]
        out += [f"### {attack}", "",
                f"| defense | n | CA % | ASR@1 % | ASR@10 % | ASR@1 − {baseline} | ASR@10 − {baseline} | "
                f"CA − {baseline} | removed | reduced |",
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        base = g.get((attack, baseline))
        for d in defenses:
            rs = g[(attack, d)]
            n = unit_values(rs, "asr_at_1")[0]
            compared = base is not None and d not in (baseline, NO_DEFENSE, CLEAN_MODEL)
            diff = {m: _diff(rs, base, m, d, baseline) for m in ("asr_at_1", "asr_at_10", "clean_acc")} if compared else {}
            c = checks.get((attack, d))
            removed = f"{removed_cell(c)} | {c['reduced']}/{c['n']}" if c else " | "
            name = f"*{d}*" if d in (NO_DEFENSE, CLEAN_MODEL) else d
            out.append(f"| {name} | {len(n)} | " + " | ".join(_cell(rs, m) for m in METRICS) + " | "
                       + " | ".join(_dcell(diff[m]) if compared else "" for m in ("asr_at_1", "asr_at_10", "clean_acc"))
                       + f" | {removed} |")
            if compared:
                ca = diff["clean_acc"]
                for m in ("asr_at_1", "asr_at_10"):
                    asr = diff[m]
                    if asr is None or asr.hi is None:  # one model: no interval to test
                        continue
                    tested += 1
                    if asr.hi < 0 and ca.mean >= -ca_equal:
                        verdicts.append(f"- {attack}: {d} lower {LABEL[m]} than {baseline} at equal CA "
                                        f"({LABEL[m]} {_dcell(asr)}, CA {_dcell(ca)})")
        out.append("")
    if pairs:
        out += ["### Paired differences a − b", "",
                "| attack | a − b | n | ASR@1 | ASR@10 | CA |", "|---|---|---:|---:|---:|---:|"]
        for attack in attacks:
            for a, b in pairs:
                if (attack, a) not in g or (attack, b) not in g:
                    continue
                ds = [_diff(g[(attack, a)], g[(attack, b)], m, a, b) for m in ("asr_at_1", "asr_at_10", "clean_acc")]
                n = ds[0].n if ds[0] is not None else 0
                out.append(f"| {attack} | {a} − {b} | {n} | " + " | ".join(_dcell(s) for s in ds) + " |")
        out.append("")
    out += [f"### Lower ASR than {baseline} at equal CA (mean CA at most {ca_equal:g} point below)", ""]
    out += verdicts or [f"- none: on no attack does any defense's ASR@1 or ASR@10 interval against {baseline} lie below 0 "
                        f"with mean CA at most {ca_equal:g} point below it."]
    if tested:  # each interval is 95% on its own: among many, some exclude 0 by chance
        out += ["", f"{tested} intervals were tested for this list, each at 95% on its own (no correction for "
                f"multiplicity): where no defense differs, about {0.025 * tested:.1f} of them would lie below 0 by "
                "chance. A single entry among many is weak evidence."]
    return "\n".join(out) + "\n"


KEY = ("attack", "defense", "world_seed", "implant_seed", "clean_seed")


def load_rows(path: Path) -> list[dict]:
    """The result rows of a ``results.json`` (or saved rows), or of a run folder's finished units."""
    if path.is_dir():
        from .experiment import Experiment, load_config  # the training stack, only for a run folder

        config = path / "config.yaml"
        if not config.is_file():
            raise TacleanerError(f"{path}: not a run folder (no config.yaml)")
        cfg, _ = load_config(config)
        return Experiment.reader(cfg, path).collect(complete_only=True)[0]
    rows = read_json(path)
    if not isinstance(rows, list) or not all(isinstance(r, dict) and all(k in r for k in KEY) for r in rows):
        raise TacleanerError(f"{path}: not a list of result rows (each with {', '.join(KEY)})")
    return rows


def merge(inputs: list[Path]) -> list[dict]:
    """The rows of every input; one (attack, defense, seeds) found twice is an error naming both."""
    seen: dict[tuple, Path] = {}
    rows = []
    for path in inputs:
        for r in load_rows(path):
            key = tuple(r[k] for k in KEY)
            if key in seen:
                raise TacleanerError(f"{path}: {r['attack']} / {r['defense']} at world {r['world_seed']}, implant "
                                     f"{r['implant_seed']}, clean {r['clean_seed']} is in {seen[key]} too")
            seen[key] = path
            rows.append(r)
    return rows
