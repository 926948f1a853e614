"""An experiment's results: one row per attack, defense and seed triple from the stages'
``eval.json`` files, and the report files written from them."""
from __future__ import annotations

from typing import Any

from ..environment import environment, precision_of
from ..fileio import read_json, write_json
from ..metric_names import KEY_METRICS, METRICS
from ..report import CLEAN_MODEL, per_run_checks, points_cell, removed_cell, write_reports
from ..selection import TEST, TUNE
from .config import ExperimentConfig
from .grid import Unit, chosen, units
from .layout import Layout


def collect(cfg: ExperimentConfig, layout: Layout, complete_only: bool = False) -> tuple[list[dict], list[dict]]:
    """Rows from every stage's ``eval.json``: the clean model under each trigger, the
    backdoored model (``none``) and each defense; and the clean models' own evaluations.
    ``complete_only``: leave out the units (and worlds) whose stages have not all finished
    instead of failing on them (a grid still running)."""
    cleans = [{"world_seed": w, **metrics(read_json(layout.clean_eval(w)))} for w in cfg.plan.world
              if not complete_only or layout.clean_eval(w).is_file()]
    groups = [g for g in cfg.groups() if not complete_only or layout.selection(g).is_file()]
    picked = {g: cfg.defenses[chosen(cfg, layout, g)].id for g in groups}
    rows = []
    for unit in units(cfg):
        if not complete_only or _unit_complete(cfg, layout, unit, picked):
            rows += _unit_rows(cfg, layout, unit, picked)
    return rows, cleans


def _runs(cfg: ExperimentConfig, split: str | None, picked: dict[str, str]) -> list[tuple[str, str | None]]:
    """(row label = folder, chosen candidate) of a unit's cleanings: on test units a group's
    rows carry the group's name (and the chosen candidate) instead of its candidates'."""
    runs: list[tuple[str, str | None]] = [(d.id, None) for d in cfg.defenses if not (d.group and split == TEST)]
    return runs + ([(g, cid) for g, cid in picked.items()] if split == TEST else [])


def _unit_rows(cfg: ExperimentConfig, layout: Layout, unit: Unit, picked: dict[str, str]) -> list[dict]:
    spec, w = cfg.attacks[unit.attack], unit.world
    extra = {} if cfg.held_out is None else {"split": unit.split}
    rows = []
    for i in cfg.plan.implant:
        folder = layout.unit(w, spec.id, i)
        rows.append({**row(spec.id, CLEAN_MODEL, (w, i, None), read_json(folder.clean_model_eval)), **extra})
        rows.append({**row(spec.id, "none", (w, i, None), read_json(folder.backdoored_eval)), **extra})
        for label, cid in _runs(cfg, unit.split, picked):
            for c in cfg.plan.clean_seeds(i):
                r = row(spec.id, label, (w, i, c), read_json(folder.cleaned_eval(label, c)))
                rows.append({**r, **extra, **({"selected": cid} if cid else {})})
    return rows


def _unit_complete(cfg: ExperimentConfig, layout: Layout, unit: Unit, picked: dict[str, str]) -> bool:
    if unit.split == TEST and len(picked) < len(cfg.groups()):
        return False
    folders = [label for label, _ in _runs(cfg, unit.split, picked)]
    for i in cfg.plan.implant:
        folder = layout.unit(unit.world, cfg.attacks[unit.attack].id, i)
        files = [folder.clean_model_eval, folder.backdoored_eval]
        files += [folder.cleaned_eval(f, c) for f in folders for c in cfg.plan.clean_seeds(i)]
        if not all(p.is_file() for p in files):
            return False
    return True


def row(attack: str, defense: str, seeds: tuple[int, int, int | None], res: dict) -> dict:
    w, i, c = seeds
    return {"attack": attack, "defense": defense, "world_seed": w, "implant_seed": i, "clean_seed": c,
            **metrics(res), "target": res.get("target"), "checkpoint": res["checkpoint"]}


def metrics(res: dict) -> dict:
    """Test metrics, and validation metrics prefixed ``val_`` (None where not measured); a
    dual-key attack's ASR under each key alone where measured."""
    val = res.get("val") or {}
    extra = {m: res[m] for m in KEY_METRICS if res.get(m) is not None}
    return {**{m: res.get(m) for m in METRICS}, **{f"val_{m}": val.get(m) for m in METRICS}, **extra}


def write_results(cfg: ExperimentConfig, layout: Layout, device: Any) -> tuple[list[dict], str]:
    """``results.json``, ``environment.json`` and the reports; the rows and the table shown."""
    rows, cleans = collect(cfg, layout)
    write_json(layout.results, rows)
    write_json(layout.environment, environment(device, precision_of(device)))
    held = cfg.held_out
    if held is None:
        return rows, write_reports(rows, layout.out, cleans, cfg.plan.describe())
    # the report shows the test set; the tune set and the selection sit beside it
    seeds = f"{cfg.plan.describe()}; {held.describe()}"
    by_split = {s: ([r for r in rows if r["split"] == s],
                    [c for c in cleans if c["world_seed"] in getattr(held, s).world]) for s in (TUNE, TEST)}
    (tune, tune_cleans), (test, test_cleans) = by_split[TUNE], by_split[TEST]
    write_reports(tune, layout.tune, tune_cleans, seeds + " (this page: the tune set)")
    records = [read_json(layout.selection(g)) for g in cfg.groups()]
    table = write_reports(test, layout.out, test_cleans, seeds + " (this page: the test set)",
                          extra=selection_markdown(records, tune, test))
    return rows, table


def selection_markdown(records: list[dict], tune_rows: list[dict], test_rows: list[dict]) -> str:
    """What each selection read and chose, then every defense's per-run checks on the tune set
    (for a group: its chosen candidate) beside those on the test set."""
    lines = ["Selection on the tune set (reads validation CA of the cleaned and backdoored models only; "
             "never ASR or the trigger); val CA change in points, worst / mean over the tune runs:", "",
             "| group | candidate | val CA change, worst | mean | chosen |", "|---|---|---:|---:|---|"]
    chosen_by = {r["chosen"]: r["group"] for r in records}
    for r in records:
        for c in r["candidates"]:
            mark = f"**chosen** ({r['rule']}: {r['reason']})" if c["id"] == r["chosen"] else ""
            lines.append(f"| {r['group']} | {c['id']} | {100 * c['worst']:+.1f} | {100 * c['mean']:+.1f} | {mark} |")
    tune = {(c["attack"], chosen_by.get(c["defense"], c["defense"])): c for c in per_run_checks(tune_rows)}
    test = {(c["attack"], c["defense"]): c for c in per_run_checks(test_rows)}
    lines += ["", "Per-run checks on the tune set and on the held-out test set (removed: ASR@1 within 5 points of "
                  "the clean model's; reduced: ASR@1 halved; both with CA within 5 points; test split of each world):",
              "", "| attack | defense | tune: removed | tune: reduced | tune: worst CA change | test: removed | "
                  "test: reduced | test: CA within 5 | test: worst ASR@1 % | test: worst above floor | "
                  "test: worst CA change |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, t in test.items():
        u = tune.get(key)
        tune_cells = (f"{removed_cell(u)} | {u['reduced']}/{u['n']} | {100 * u['worst_ca_change']:+.1f}" if u
                      else "— | — | —")
        lines.append(f"| {key[0]} | {key[1]} | {tune_cells} | {removed_cell(t)} | {t['reduced']}/{t['n']} | "
                     f"{t['ca_kept']}/{t['n']} | {100 * t['worst_asr']:.1f} | {points_cell(t.get('worst_over_floor'))} | "
                     f"{100 * t['worst_ca_change']:+.1f} |")
    return "\n".join(lines) + "\n"
