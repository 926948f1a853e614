"""Find the poison before training: score every pair of a dataset by how much its image
embedding is a local outlier (:mod:`.detectors`), write the scores and the set without the most
suspicious pairs (:mod:`.outputs`). ``tacleaner detect`` and an experiment's ``filter`` stage
call :func:`detect`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed
from ..data.pairs import PairTable, describe_skipped
from ..errors import TacleanerError
from ..fileio import read_json, staged_dir, write_json
from ..models import ClipBundle
from .detectors import DETECTORS
from .outputs import removal_mask, summary_lines, truth_metrics, write_clean, write_histogram, write_scores
from .score import DetectConfig, score_pairs

__all__ = ["DETECTORS", "DetectConfig", "detect", "summary_lines"]


def detect(bundle: ClipBundle, table: PairTable, cfg: DetectConfig, out: str | Path, device: torch.device, *,
           remove: float | None = 0.01, threshold: float | None = None, poisoned: str | Path | None = None,
           overwrite: bool = False, progress: bool = False, num_workers: int | None = None,
           meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score ``table``, then (rank 0) write ``out`` as one staged folder: nothing is left half
    written. ``remove`` (a fraction of the scored rows) or ``threshold`` (a score) decides what
    ``clean.csv`` leaves out; ``poisoned`` (a ``poisoned_indices.json``) adds how well the
    scores find those rows. Returns the summary."""
    if (remove is None) == (threshold is None):
        raise TacleanerError("detect: give exactly one of remove (a fraction) and threshold (a score)")
    if remove is not None and not 0 <= remove < 1:
        raise TacleanerError(f"detect: remove must be a fraction in [0, 1), got {remove}")
    if poisoned is not None:
        read_json(poisoned)  # a missing or broken file fails before the scoring
    t = time.perf_counter()
    scores, skipped = score_pairs(bundle, table, cfg, device, progress=progress, num_workers=num_workers)
    seconds = time.perf_counter() - t
    if not distributed.current().is_main:
        return {}
    removed, cut = removal_mask(scores, remove, threshold)
    causes: dict[str, int] = {}
    for cause in skipped.values():
        causes[cause] = causes.get(cause, 0) + 1
    scored = scores[~np.isnan(scores)]
    summary: dict[str, Any] = {
        **(meta or {}), "rows": len(table), "scored": int(len(scored)), "unscored": causes,
        "detector": cfg.detector, "k": cfg.k, "reference": min(cfg.reference, len(table)), "seed": cfg.seed,
        "remove": remove, "threshold": threshold, "cut": cut, "removed": int(removed.sum()),
        "kept": int((~removed).sum()),
        "score_quantiles": {q: float(np.quantile(scored, float(q))) for q in ("0", "0.5", "0.9", "0.99", "1")}
        if len(scored) else {},
        "seconds": round(seconds, 2), "pairs_per_s": round(len(table) / max(seconds, 1e-9), 1),
    }
    positive = None
    if poisoned is not None:
        summary["truth"] = truth_metrics(scores, removed, Path(poisoned))
        positive = np.zeros(len(scores), dtype=bool)
        positive[read_json(poisoned)] = True
    final = Path(out)
    with staged_dir(final, overwrite=overwrite) as tmp:
        write_scores(tmp, table, scores)
        write_clean(tmp, final, table, removed)
        if len(scored):
            write_histogram(tmp / "histogram.png", scores, cut, positive)
        write_json(tmp / "summary.json", summary)
    if causes:
        import warnings

        warnings.warn(f"{table.source}: {sum(causes.values())} pair(s) not scored ({describe_skipped(causes)}); "
                      "left out of clean.csv")
    return summary
