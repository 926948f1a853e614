"""Where to cut a set of suspicion scores without knowing the poison rate: at a robust z-score.

A row's robust z-score is ``(s - median) / (1.4826 x MAD)`` over the scored rows (the median
absolute deviation scaled to a normal distribution's standard deviation; Iglewicz and Hoaglin's
modified z-score, the anomaly index Neural Cleanse puts on classes). The median and MAD barely
move while the poison is a minority, so the cut follows the clean rows' spread, whatever share
is poisoned: no fraction to guess.
"""
from __future__ import annotations

import numpy as np

MAD_TO_SD = 1.4826  # MAD x this = the standard deviation, for normally distributed values


def robust_z(scores: np.ndarray, floor: float = 1e-12) -> np.ndarray:
    """Each score's robust z-score over the finite ones (NaN stays NaN); a MAD below ``floor``
    counts as ``floor``, so a set of equal scores does not divide by zero."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = scores[np.isfinite(scores)]
    if not len(finite):
        return np.full_like(scores, np.nan)
    med = np.median(finite)
    mad = np.median(np.abs(finite - med)) * MAD_TO_SD
    return (scores - med) / max(mad, floor)


# the default cut: the highest mean Youden's J (poisoned share removed minus clean share removed)
# over six attacks at 5% and 1% poison on the tune world of experiments/trigger-free.yaml, for
# the default detector (docs/research/results-trigger-free.md)
DEFAULT_Z = 2.0


def removal_mask(scores: np.ndarray, *, z: float | None = None, remove: float | None = None,
                 threshold: float | None = None) -> tuple[np.ndarray, float]:
    """Rows to remove (the unscored ones always) and the score cut, by exactly one rule: ``z``
    (every row whose robust z-score is at least ``z``: no poison rate needed), ``remove`` (the
    fraction of scored rows with the highest scores) or ``threshold`` (every row scoring at least
    that)."""
    scored = ~np.isnan(scores)
    if remove is not None:
        count = int(np.floor(remove * scored.sum() + 1e-9))
        if count == 0:
            return ~scored, float("inf")
        top = np.argsort(-np.where(scored, scores, -np.inf), kind="mergesort")[:count]
        mask = ~scored
        mask[top] = True
        return mask, float(scores[top].min())
    if z is not None:
        zs = robust_z(scores)
        hit = scored & (np.nan_to_num(zs, nan=-np.inf) >= z)
        return ~scored | hit, float(scores[hit].min()) if hit.any() else float("inf")
    if threshold is None:
        raise ValueError("removal_mask: give one of z, remove and threshold")
    return ~scored | (np.where(scored, scores, -np.inf) >= threshold), float(threshold)
