"""Measure `tacleaner scan` over the models of finished experiment grids: every backdoored model
(its target known from its poisoning run) and every clean one (each world's pretrained model,
and clean controls: the pretrained model fine-tuned on the implant set without poison, found
under --controls or as a grid's implant that poisoned no pair).

    python research/scan_grid.py OUT_JSON RUN [RUN ...] [--controls DIR] [--page PAGE.md] \
        [--choose-world 0] [--threads 1]

Each model is scanned once with every probe kind (``linf,patch``, ``top`` 0: no trigger
inversion) on 256 images of its world's validation split; the JSON keeps every class's
attraction per kind, so each signal (a kind alone, or their mean) is scored from the same
probes. Controls are found as ``DIR/<run folder name>/world<N>/<any>/model.safetensors``.
Resumable: OUT_JSON is rewritten after each model.

Scored per signal: the AUROC of the top class's anomaly index and of its attraction share for
telling backdoored models from clean ones (a 95% interval by a stratified bootstrap), and how
often the true target ranks first (a Wilson 95% interval). ``--choose-world`` names the world
whose models may be looked at to choose a signal; the page reports it apart and the summary over
the other worlds.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tacleaner.data.zeroshot import read_classes, read_zeroshot
from tacleaner.detect.outputs import auroc
from tacleaner.models import load_model
from tacleaner.models.checkpoint import weights_sha256
from tacleaner.scan import ScanConfig, anomaly_index, scan
from tacleaner.train import is_complete

SIGNALS = {"linf": ["linf"], "patch": ["patch"], "linf+patch": ["linf", "patch"]}


def models(runs: list[Path], controls: Path | None):
    """(key, world folder, kind, attack, target, checkpoint) of every model to scan."""
    for run in runs:
        for world in sorted(run.glob("world*")):
            if not is_complete(world / "pretrain"):
                continue
            yield f"{run.name}/{world.name}/pretrain", world, "clean", None, None, world / "pretrain" / "model.safetensors"
            for unit in sorted(world.glob("*/implant*")):
                ck, manifest = unit / "backdoored" / "model.safetensors", unit / "poison" / "manifest.json"
                if is_complete(ck.parent) and manifest.is_file():
                    key = f"{run.name}/{world.name}/{unit.parent.name}/{unit.name}"
                    if not json.loads((unit / "poison" / "poisoned_indices.json").read_text()):
                        yield key, world, "clean", None, None, ck  # an implant of no poison: a clean control
                        continue
                    target = json.loads(manifest.read_text())["target"]
                    yield key, world, "backdoored", unit.parent.name, target, ck
            if controls is not None:
                for ck in sorted((controls / run.name / world.name).glob("*/model.safetensors")):
                    yield f"{run.name}/{world.name}/control/{ck.parent.name}", world, "clean", None, None, ck


def measure(world: Path, checkpoint: Path, cfg: ScanConfig) -> dict:
    data_dir = world / "data"
    classes = read_classes(data_dir / "classes.json")
    split = data_dir / "zeroshot_val.csv"
    data = read_zeroshot(split if split.is_file() else data_dir / "zeroshot.csv", classes)
    t = time.perf_counter()
    report, _ = scan(load_model(checkpoint), data, classes, cfg)
    return {"probe_clean_acc": report.probe_clean_acc, "seconds": round(time.perf_counter() - t, 1),
            "attraction": {r.name: r.by_probe for r in report.classes}}


def signal_rows(rec: dict, kinds: list[str]) -> tuple[list[str], list[float], list[float]]:
    """Class names sorted by the signal's attraction (most first), their attractions, anomalies."""
    names = list(rec["attraction"])
    scores = [sum(rec["attraction"][n][k] for k in kinds) / len(kinds) for n in names]
    z = anomaly_index(scores)
    order = sorted(range(len(names)), key=lambda i: -scores[i])
    return [names[i] for i in order], [scores[i] for i in order], [z[i] for i in order]


def bootstrap_auroc(scores: np.ndarray, positive: np.ndarray, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of the AUROC by resampling the positives and the negatives apart."""
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(positive), np.flatnonzero(~positive)
    vals = []
    for _ in range(draws):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        vals.append(auroc(scores[idx], positive[idx]))
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def score(records: list[dict]) -> dict:
    """Per signal: AUROC of the top anomaly and of the top share, and targets found first."""
    out = {}
    positive = np.array([r["kind"] == "backdoored" for r in records])
    for signal, kinds in SIGNALS.items():
        tops, shares, first = [], [], {}
        for r in records:
            names, scores, z = signal_rows(r, kinds)
            tops.append(z[0])
            shares.append(scores[0])
            if r["kind"] == "backdoored":
                first.setdefault(r["attack"], []).append(names.index(r["target"]) + 1)
        row: dict = {"models": len(records), "backdoored": int(positive.sum()), "clean": int((~positive).sum()),
                     "ranks": first}
        if positive.any() and (~positive).any():
            for name, vals in (("anomaly", tops), ("share", shares)):
                arr = np.array(vals)
                row[f"auroc_{name}"] = auroc(arr, positive)
                row[f"auroc_{name}_ci"] = bootstrap_auroc(arr, positive)
        ranks = [x for v in first.values() for x in v]
        row["first"] = sum(x == 1 for x in ranks)
        row["first_ci"] = wilson(row["first"], len(ranks))
        row["clean_top_anomaly"] = sorted(round(t, 1) for t, p in zip(tops, positive) if not p)
        out[signal] = row
    return out


LEARNED = 0.5  # a backdoored model "learned its backdoor" when its ASR@1 on the true trigger is at least this


def learned_asr(runs: list[Path], key: str) -> float | None:
    """ASR@1 of the backdoored model behind ``key`` (its grid's eval.json), None if not found."""
    for run in runs:
        if key.startswith(run.name + "/"):
            ev = run / key[len(run.name) + 1:] / "backdoored" / "eval.json"
            if ev.is_file():
                return json.loads(ev.read_text())["asr_at_1"]
    return None


def choose_cut(records: list[dict], kinds: list[str]) -> float:
    """The decision cut on the top anomaly index from the models a cut may be chosen on: midway
    between the highest clean model's and the lowest learned backdoor's, where they separate;
    else the value that calls the most of them right (the lowest such)."""
    clean = [signal_rows(r, kinds)[2][0] for r in records if r["kind"] == "clean"]
    bad = [signal_rows(r, kinds)[2][0] for r in records if r["kind"] == "backdoored" and r.get("asr_at_1", 0) >= LEARNED]
    if max(clean) < min(bad):
        return (max(clean) + min(bad)) / 2
    cands = sorted(set(clean + bad))
    return max(cands, key=lambda c: (sum(v < c for v in clean) + sum(v >= c for v in bad), -c))


def decision_table(records: list[dict], kinds: list[str], cut: float) -> list[str]:
    """How the decision at ``cut`` did: clean models called clean, learned backdoors suspected,
    and suspected toward their true target; Wilson 95% intervals."""
    clean = [r for r in records if r["kind"] == "clean"]
    bad = [r for r in records if r["kind"] == "backdoored" and r.get("asr_at_1", 0) >= LEARNED]
    weak = [r for r in records if r["kind"] == "backdoored" and r.get("asr_at_1", 0) < LEARNED]

    def frac(k: int, n: int) -> str:
        lo, hi = wilson(k, n)
        return f"{k}/{n} [{100 * lo:.0f}%, {100 * hi:.0f}%]" if n else "—"

    called_clean = sum(signal_rows(r, kinds)[2][0] < cut for r in clean)
    suspected = [r for r in bad if signal_rows(r, kinds)[2][0] >= cut]
    right = sum(signal_rows(r, kinds)[0][0] == r["target"] for r in suspected)
    first = sum(signal_rows(r, kinds)[0][0] == r["target"] for r in bad)
    return [f"| {len(clean)} clean, {len(bad)} learned backdoors ({len(weak)} that did not learn theirs apart) | "
            f"{frac(called_clean, len(clean))} | {frac(len(suspected), len(bad))} | {frac(right, len(bad))} | "
            f"{frac(first, len(bad))} | "
            + ", ".join(f"{r['attack']} {signal_rows(r, kinds)[2][0]:.1f}" for r in weak) + " |"]


def page(records: list[dict], choose_world: str | None, command: str, after: list[str] | None = None) -> str:
    from tacleaner.environment import cpu_model

    cpu = cpu_model()
    held = [r for r in records if r["world"] != choose_world]
    chosen = [r for r in records if r["world"] == choose_world]
    lines = [f"Produced by `{command}` ({cpu}, CPU only, torch {torch.__version__}, one thread).", ""]
    sets = [("reported", held), (f"looked at to choose ({choose_world})", chosen)]
    if after:  # models first scanned after the choice was made (keys under these run folders)
        sets.insert(1, (f"scanned after the choice ({', '.join(after)})",
                        [r for r in held if r["key"].split("/")[0] in after]))
    for label, recs in sets:
        if not recs:
            continue
        sc = score(recs)
        worlds = sorted({r["world"] for r in recs})
        lines += [f"### Models {label}: {len(recs)} ({sc['linf']['backdoored']} backdoored, "
                  f"{sc['linf']['clean']} clean; {', '.join(worlds)})", "",
                  "| signal | AUROC, top anomaly index [95% CI] | AUROC, top attraction share [95% CI] | "
                  "true target first [95% CI] | clean models' top anomaly |", "|---|---|---|---|---|"]
        for signal, row in sc.items():
            def cell(name, row=row):
                if f"auroc_{name}" not in row:
                    return "—"
                lo, hi = row[f"auroc_{name}_ci"]
                return f"{row[f'auroc_{name}']:.2f} [{lo:.2f}, {hi:.2f}]"
            lo, hi = row["first_ci"]
            lines.append(f"| {signal} | {cell('anomaly')} | {cell('share')} | {row['first']}/{row['backdoored']} "
                         f"[{100 * lo:.0f}%, {100 * hi:.0f}%] | {', '.join(map(str, row['clean_top_anomaly']))} |")
        lines += ["", "Rank of the true target, per attack (each model):", "",
                  "| attack | " + " | ".join(SIGNALS) + " |", "|---|" + "---|" * len(SIGNALS)]
        for attack in sorted(sc["linf"]["ranks"]):
            lines.append(f"| {attack} | " + " | ".join(", ".join(map(str, sc[s]["ranks"][attack])) for s in SIGNALS)
                         + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--controls", type=Path)
    p.add_argument("--page", type=Path)
    p.add_argument("--choose-world", default="world0", help="the world folder whose models may be looked at")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--report-only", action="store_true", help="scan nothing new: report what OUT_JSON holds")
    p.add_argument("--decision", type=float, help="the shipped decision cut: print the cut the tune world chooses "
                   "and the decision's error rates at this one")
    p.add_argument("--after", nargs="+", help="run folders whose models were first scanned after the choice: "
                   "also reported apart")
    args = p.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    cfg = ScanConfig(images=args.images, probe="linf,patch", top=0)
    done = {r["key"]: r for r in json.loads(args.out.read_text())} if args.out.exists() else {}
    seen = {r["weights"] for r in done.values() if "weights" in r}
    for key, world, kind, attack, target, ck in ([] if args.report_only else models(args.runs, args.controls)):
        if key in done:
            seen.add(done[key].setdefault("weights", weights_sha256(ck)))
            continue
        digest = weights_sha256(ck)
        if digest in seen:
            print(key, "the same weights as a model already scanned: counted once", flush=True)
            continue
        seen.add(digest)
        rec = {"key": key, "world": world.name, "kind": kind, "attack": attack, "target": target,
               "weights": digest, **measure(world, ck, cfg)}
        if kind == "backdoored":
            rec["asr_at_1"] = learned_asr(args.runs, key)
        done[key] = rec
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(list(done.values()), indent=1) + "\n")
        tmp.replace(args.out)
        ranks = {s: (signal_rows(rec, k)[0].index(target) + 1 if target else None) for s, k in SIGNALS.items()}
        print(key, kind, f"{rec['seconds']} s", "target ranks", ranks, flush=True)
    for rec in done.values():  # records of an older run of this script lack the ASR
        if rec["kind"] == "backdoored" and rec.get("asr_at_1") is None:
            rec["asr_at_1"] = learned_asr(args.runs, rec["key"])
    if args.decision:
        kinds = SIGNALS["linf+patch"]  # the shipped probes
        tune = [r for r in done.values() if r["world"] == args.choose_world]
        held = [r for r in done.values() if r["world"] != args.choose_world]
        table = ["| models | clean called clean | learned backdoors suspected | suspected toward the true target | "
                 "true target first | top anomaly of the backdoors that did not learn |", "|---|---|---|---|---|---|"]
        lines = [f"the shipped cut: {args.decision}", "", "At the shipped cut, the models reported:", "", *table,
                 *decision_table(held, kinds, args.decision)]
        for world in sorted({r["world"] for r in held}):
            lines += ["", f"{world} alone: the cut its own models would choose {choose_cut([r for r in held if r['world'] == world], kinds):.2f}", "", *table,
                      *decision_table([r for r in held if r["world"] == world], kinds, args.decision)]
        if tune:
            lines += ["", f"On {args.choose_world} (looked at to choose):", "", *table,
                      *decision_table(tune, kinds, args.decision)]
        print("\n".join(lines))
        if args.page:
            args.page.with_suffix(".decision.md").write_text("\n".join(lines) + "\n")
    if args.page:
        command = (f"python research/scan_grid.py SCANS.json {' '.join(str(r) for r in args.runs)}"
                   + (f" --controls {args.controls}" if args.controls else "") + f" --choose-world {args.choose_world}"
                   + (f" --after {' '.join(args.after)}" if args.after else ""))
        args.page.write_text(page(list(done.values()), args.choose_world, command, args.after) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
