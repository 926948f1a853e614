"""The audit's steps (see the package's docstring), resumable: each step's output is its
completion mark."""
from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .. import findings
from ..data.pairs import read_pairs
from ..data.zeroshot import Classes, LabelledImages, read_classes, read_zeroshot
from ..errors import TacleanerError
from ..fileio import read_json, write_json
from ..models import ClipBundle, load_model
from ..params import build
from ..scan import ScanConfig, frame_images, read_reference, save_triggers
from ..scan import scan as run_scan
from ..selection import CaBudget, select
from ..selection import Candidate as Evidence
from ..train import is_complete
from ..train import train as run_training
from ..train_config import TrainConfig
from .accuracy import before_after, correct
from .cleaning import DEFENSE, RATES, SCHEDULE, Candidate, across, candidates
from .split import halves, write_labelled

SUSPICIOUS = 20  # pairs the report shows


@dataclass
class AuditInputs:
    checkpoint: str
    zeroshot: str
    classes: str
    out: str
    model: str | None = None  # architecture of a foreign checkpoint
    data: str | None = None  # training pairs to score
    clean_data: str | None = None  # clean pairs to clean with
    base: str | None = None  # the model the checkpoint was fine-tuned from
    image_col: str = "image"
    caption_col: str = "caption"
    defenses: list[str] = field(default_factory=lambda: [DEFENSE])
    rates: list[float] = field(default_factory=lambda: list(RATES))
    ca_budget: float = 2.0
    epochs: int = SCHEDULE["epochs"]
    batch_size: int = SCHEDULE["batch_size"]
    scan_images: int = 256
    threads: int = 0
    device: str = "auto"

    def settings(self) -> dict[str, Any]:
        """What a resumed audit must share with the one it continues."""
        return {k: v for k, v in asdict(self).items() if k not in ("out", "threads", "device")}


class Audit:
    def __init__(self, inputs: AuditInputs, device: torch.device, say: Callable[[str], None], progress: bool) -> None:
        self.inputs, self.device, self.say, self.progress = inputs, device, say, progress
        self.out = Path(inputs.out)
        self.classes: Classes = read_classes(inputs.classes)
        self.labelled: LabelledImages = read_zeroshot(inputs.zeroshot, self.classes)
        self.val, self.test = halves(self.labelled, self.classes, inputs.zeroshot)
        self.pairs = read_pairs(inputs.data, inputs.image_col, inputs.caption_col) if inputs.data else None
        self.clean_pairs = (read_pairs(inputs.clean_data, inputs.image_col, inputs.caption_col)
                            if inputs.clean_data else None)
        candidates(inputs.defenses, inputs.rates)  # names and rates fail before any work
        self.model = load_model(inputs.checkpoint, inputs.model)
        self.base = load_model(inputs.base, inputs.model) if inputs.base else None  # a bad file fails here
        self.scan_cfg = ScanConfig(images=inputs.scan_images, top=1)

    # -- steps ------------------------------------------------------------------------------
    def split(self) -> dict[str, str]:
        paths = {"validation": self.out / "split" / "validation.csv", "test": self.out / "split" / "test.csv"}
        for name, data in (("validation", self.val), ("test", self.test)):
            if not paths[name].is_file():
                write_labelled(paths[name], data, self.classes)
        return {k: str(v) for k, v in paths.items()}

    def scan(self, bundle: ClipBundle, folder: Path, reference: dict[str, float] | None = None,
             before: dict[str, Any] | None = None, what: str = "the model") -> dict[str, Any]:
        if (folder / "scan.json").is_file():
            return read_json(folder / "scan.json")
        self.say(f"scanning {what} ({self.scan_cfg.images} validation images)")
        ref_name = str(self.out / "scan_base" / "scan.json") if reference is not None else None
        report, triggers = run_scan(bundle, self.val, self.classes, self.scan_cfg, self.device, reference,
                                         ref_name)
        result = {**report.to_json(), "decision": findings.decide(report).to_json()}
        if before is not None:
            result["before_after"] = findings.before_after(before, report, "the audit's first scan")
        folder.mkdir(parents=True, exist_ok=True)
        example, _ = frame_images(bundle, self.val, 1)
        save_triggers(triggers, example[0], folder / "inverted_triggers.png")
        write_json(folder / "scan.json", result)
        return result

    def reference(self) -> dict[str, float] | None:
        if self.base is None:
            return None
        base = self.scan(self.base, self.out / "scan_base", what="the base model")
        return read_reference(base, self.scan_cfg, self.classes.classnames, self.inputs.base)

    def detect(self, scan: dict[str, Any]) -> dict[str, Any] | None:
        """Score the training pairs; the most suspicious, and, when the scan suspects a class,
        the most suspicious of the flagged pairs whose caption names it (a poisoned caption
        usually does: that is how the pair teaches the target)."""
        if self.pairs is None:
            return None
        from ..detect import DetectConfig, detect

        folder = self.out / "detect"
        if not (folder / "summary.json").is_file():
            self.say(f"scoring {len(self.pairs):,} training pairs")
            detect(self.model, self.pairs, DetectConfig(), folder, self.device, progress=self.progress,
                   meta={"checkpoint": self.inputs.checkpoint, "data": self.inputs.data})
        summary = read_json(folder / "summary.json")
        with open(folder / "scores.csv", newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["score"]]
        rows.sort(key=lambda r: -float(r["score"]))

        def shown(chosen: list[dict[str, str]]) -> list[dict[str, Any]]:
            return [{"row": int(r["row"]), "image": str(self.pairs.images[int(r["row"])]), "caption": r["caption"],
                     "score": float(r["score"])} for r in chosen[:SUSPICIOUS]]

        result = {**summary, "suspicious": shown(rows), "folder": str(folder)}
        if scan["decision"]["suspected"]:
            target = scan["decision"]["target"]
            naming = [r for r in rows if names(r["caption"], target)]
            flagged = [r for r in naming if float(r["score"]) >= summary["cut"]]
            result["target"] = {"name": target, "naming": len(naming), "flagged_naming": len(flagged),
                                "suspicious": shown(flagged)}
        return result

    def clean_one(self, cand: Candidate) -> float:
        """Clean with one candidate (resuming its run folder); its validation accuracy."""
        from ..defenses import create_defense

        folder = self.out / "clean" / cand.id
        val_file = self.out / "clean" / f"{cand.id}.validation.json"
        if not is_complete(folder):
            self.say(f"cleaning with {cand.defense} at lr {cand.lr:g} ({self.inputs.epochs} epochs)")
            cfg = build(TrainConfig, {**SCHEDULE, "epochs": self.inputs.epochs,
                                      "batch_size": self.inputs.batch_size, "lr": cand.lr,
                                      "threads": self.inputs.threads, "device": self.inputs.device}, "audit cleaning")
            objective = create_defense(cand.defense, **cand.params)
            torch.manual_seed(cfg.seed)
            run_training(load_model(self.inputs.checkpoint, self.inputs.model), self.clean_pairs, objective, cfg,
                         folder, resume=folder.exists(), progress=self.progress,
                         extra_config={"init": self.inputs.checkpoint})
        if not val_file.is_file():
            ok = correct(self.cleaned(cand), self.val, self.classes, self.device)
            write_json(val_file, {"val_ca": float(ok.mean())})
        return float(read_json(val_file)["val_ca"])

    def cleaned(self, cand: Candidate) -> ClipBundle:
        return load_model(self.out / "clean" / cand.id / "model.safetensors")

    def choose(self, before: dict[str, Any], reference: dict[str, float] | None) -> dict[str, Any] | None:
        if self.clean_pairs is None:
            return None
        val_before = self.val_ca_before()
        rule = CaBudget(self.inputs.ca_budget)
        chosen = []
        for defense, cands in candidates(self.inputs.defenses, self.inputs.rates).items():
            tried = {}
            for cand in reversed(cands):  # strongest first: the first within budget is the rule's choice
                val_ca = self.clean_one(cand)
                tried[cand] = val_ca - val_before
                if rule.keeps(tried[cand]):
                    break
            order = [c for c in cands if c in tried]
            record = select(rule, defense, [Evidence(c.id, (tried[c],)) for c in order])
            pick = next(c for c in order if c.id == record["chosen"])
            after = self.scan(self.cleaned(pick), self.out / "scan_after" / pick.id, reference, before,
                              what=f"the model cleaned by {pick.id}")
            chosen.append({"candidate": pick, "selection": record, "val_ca_change": tried[pick],
                           "attraction_after": after["before_after"]["attraction_after"], "scan_after": after})
        best, why = across(chosen)
        pick = best["candidate"]
        test = self.ca_before_after(pick)
        return {"chosen": pick.id, "defense": pick.defense, "lr": pick.lr, "params": pick.params,
                "why_defense": why, "selections": [c["selection"] for c in chosen], "val_ca_before": val_before,
                "val_ca_change": best["val_ca_change"], "scan_after": best["scan_after"], "test_ca": test,
                "folder": str(self.out / "clean" / pick.id)}

    def val_ca_before(self) -> float:
        path = self.out / "clean" / "suspect.validation.json"
        if not path.is_file():
            self.say("measuring the model's accuracy on the validation half")
            write_json(path, {"val_ca": float(correct(self.model, self.val, self.classes, self.device).mean())})
        return float(read_json(path)["val_ca"])

    def ca_before_after(self, pick: Candidate) -> dict[str, Any]:
        path = self.out / "clean" / f"{pick.id}.test.json"
        if not path.is_file():
            self.say("measuring clean accuracy before and after on the test half")
            before = correct(self.model, self.test, self.classes, self.device)
            after = correct(self.cleaned(pick), self.test, self.classes, self.device)
            write_json(path, before_after(before, after))
        return read_json(path)


    def run(self) -> dict[str, Any]:
        """Every step in order (each skipped when its output exists), then the report; returns
        the report's content (``report.json``). The run folder must be prepared (and locked)."""
        from .report import build_report, write_reports

        settings_file = self.out / "audit.json"
        now = _jsonable(self.inputs.settings())
        if settings_file.is_file():
            saved = read_json(settings_file).get("settings") or {}
            changed = sorted(k for k in now if saved.get(k) != now[k])
            if changed:
                raise TacleanerError(f"{self.out}: an audit with other settings ({', '.join(changed)}); "
                                     "give another --out, or --overwrite to start again")
        else:
            write_json(settings_file, {"settings": now})
        split = self.split()
        reference = self.reference()
        first = self.scan(self.model, self.out / "scan", reference)
        detected = self.detect(first)
        cleaned = self.choose(first, reference)
        report = build_report(self.inputs, split, first, detected, cleaned, self.out, str(self.device))
        write_reports(report, self.out)
        return report


def names(caption: str, target: str) -> bool:
    """Whether ``caption`` names the class ``target`` (its words in order, any case)."""
    return re.search(r"\b" + r"\s+".join(map(re.escape, target.lower().split())) + r"\b", caption.lower()) is not None


def run_audit(inputs: AuditInputs, device: torch.device, say: Callable[[str], None] = print, progress: bool = True,
              resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Read and check every input, then prepare ``inputs.out`` as a run folder and run the audit."""
    from ..fileio import prepare_run_dir, release_run_dir

    audit = Audit(inputs, device, say, progress)  # bad input fails before the folder exists
    out = prepare_run_dir(inputs.out, resume=resume, overwrite=overwrite)
    try:
        return audit.run()
    finally:
        release_run_dir(out)


def _jsonable(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj))

