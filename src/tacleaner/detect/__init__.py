"""Find the poison before training: score every pair of a dataset by how suspicious its image
embedding is (:mod:`.detectors`), cut the scores where they leave the clean rows' spread
(:mod:`.cut`), write the scores and the set without the most suspicious pairs (:mod:`.outputs`).
``tacleaner detect`` and an experiment's ``filter`` stage call :func:`detect`."""
from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import distributed
from ..data.pairs import PairTable, describe_skipped
from ..errors import TacleanerError
from ..fileio import staged_dir, write_json
from ..models import ClipBundle
from .cut import DEFAULT_Z, removal_mask
from .detectors import DETECTORS
from .outputs import (
    read_poisoned,
    summary_lines,
    truth_metrics,
    write_clean,
    write_histogram,
    write_scores,
)
from .score import DetectConfig, score_pairs

__all__ = ["DEFAULT_Z", "DETECTORS", "DetectConfig", "detect", "summary_lines"]


def detect(bundle: ClipBundle, table: PairTable, cfg: DetectConfig, out: str | Path, device: torch.device, *,
           z: float | None = None, remove: float | None = None, threshold: float | None = None,
           poisoned: str | Path | None = None, overwrite: bool = False, progress: bool = False,
           num_workers: int | None = None, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score ``table``, then (rank 0) write ``out`` as one staged folder: nothing is left half
    written. What ``clean.csv`` leaves out is decided by at most one of ``z`` (a robust z-score
    over the scores; the default, :data:`DEFAULT_Z`), ``remove`` (a fraction of the scored rows)
    and ``threshold`` (a score); ``poisoned`` (a ``poisoned_indices.json``) adds how well the
    scores find those rows. Returns the summary."""
    if sum(v is not None for v in (z, remove, threshold)) > 1:
        raise TacleanerError("detect: give at most one of z (a robust z-score), remove (a fraction) and threshold "
                             "(a score)")
    if z is None and remove is None and threshold is None:
        z = DEFAULT_Z
    if remove is not None and not 0 <= remove < 1:
        raise TacleanerError(f"detect: remove must be a fraction in [0, 1), got {remove}")
    positive = None if poisoned is None else read_poisoned(Path(poisoned), len(table))  # fails before the scoring
    t = time.perf_counter()
    scores, skipped = score_pairs(bundle, table, cfg, device, progress=progress, num_workers=num_workers)
    seconds = time.perf_counter() - t
    if not distributed.current().is_main:
        return {}
    removed, cut = removal_mask(scores, z=z, remove=remove, threshold=threshold)
    causes = dict(Counter(skipped.values()))
    scored = scores[~np.isnan(scores)]
    summary: dict[str, Any] = {
        **(meta or {}), "rows": len(table), "scored": int(len(scored)), "unscored": causes,
        "detector": cfg.detector, "features": cfg.features, "k": cfg.k, "reference": min(cfg.reference, len(table)),
        "seed": cfg.seed, "z": z, "remove": remove, "threshold": threshold, "cut": cut, "removed": int(removed.sum()),
        "kept": int((~removed).sum()),
        "score_quantiles": {q: float(np.quantile(scored, float(q))) for q in ("0", "0.5", "0.9", "0.99", "1")}
        if len(scored) else {},
        "seconds": round(seconds, 2), "pairs_per_s": round(len(table) / max(seconds, 1e-9), 1),
    }
    if positive is not None:
        summary["truth"] = truth_metrics(scores, removed, positive)
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
