"""What ``tacleaner detect`` writes: ``scores.csv`` (one row per input row, in input order),
``clean.csv`` (the pairs kept), ``summary.json`` and ``histogram.png``; with the poisoned rows
known (a poisoning run's ``poisoned_indices.json``), how well the scores find them."""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..data.pairs import PairTable
from ..data.shards import is_member
from ..errors import TacleanerError
from ..fileio import atomic_path, read_json


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for telling ``positive`` rows from the others:
    the probability that a random positive outscores a random negative, ties counting half
    (the Mann-Whitney statistic over average ranks)."""
    pos = int(positive.sum())
    neg = len(scores) - pos
    if pos == 0 or neg == 0:
        raise TacleanerError("AUROC needs both poisoned and clean rows among the scored ones")
    _, which, counts = np.unique(scores, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # 1-based rank of each distinct value's last row
    ranks = ((last - counts + 1 + last) / 2)[which]  # a run of ties shares its average rank
    return float((ranks[positive].sum() - pos * (pos + 1) / 2) / (pos * neg))


def image_name(table: PairTable, i: int) -> str:
    """Row ``i``'s image as the input wrote it (a CSV's relative path, a shard member's name)."""
    rows = getattr(table.images, "rows", None)
    return rows[i] if rows is not None else str(table.images[i])


def write_scores(out: Path, table: PairTable, scores: np.ndarray) -> None:
    with atomic_path(out / "scores.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(("row", "image", "caption", "score"))
        for i in range(len(table)):
            s = scores[i]
            w.writerow((i, image_name(table, i), table.captions[i], "" if np.isnan(s) else f"{s:.6g}"))


def write_clean(out: Path, final: Path, table: PairTable, removed: np.ndarray) -> None:
    """The kept pairs as an image-caption CSV whose image paths are relative to ``final`` (the
    folder ``out`` becomes), so ``--data DIR/clean.csv`` trains on them as they are."""
    base = str(final.resolve())
    with atomic_path(out / "clean.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(("image", "caption"))
        for i in np.flatnonzero(~removed):
            path = str(table.images[i])
            w.writerow((path if is_member(path) else Path(os.path.relpath(path, base)).as_posix(), table.captions[i]))


def read_poisoned(poisoned_file: Path, rows: int) -> np.ndarray:
    """The rows a ``poisoned_indices.json`` lists, as a mask over ``rows`` rows."""
    indices = read_json(poisoned_file)
    if not isinstance(indices, list) or not all(isinstance(i, int) and 0 <= i < rows for i in indices):
        raise TacleanerError(f"{poisoned_file}: not a list of row indices below {rows}")
    positive = np.zeros(rows, dtype=bool)
    positive[indices] = True
    return positive


def truth_metrics(scores: np.ndarray, removed: np.ndarray, positive: np.ndarray) -> dict[str, Any]:
    """AUROC over the scored rows, and recall at the poison count: the share of poisoned rows
    among the as many highest scores; and what the removal took."""
    scored = ~np.isnan(scores)
    s, p = scores[scored], positive[scored]
    top = np.argsort(-s, kind="mergesort")[:int(p.sum())]
    return {"poisoned": int(positive.sum()), "auroc": round(auroc(s, p), 4),
            "recall_at_poison_count": round(float(p[top].mean()) if len(top) else 0.0, 4),
            "removed_poisoned": int((removed & positive).sum()),
            "removed_clean": int((removed & ~positive).sum())}


def write_histogram(path: Path, scores: np.ndarray, cut: float, positive: np.ndarray | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = ~np.isnan(scores)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.histogram_bin_edges(scores[scored], bins=60)
    if positive is None:
        ax.hist(scores[scored], bins=bins, color="tab:blue")
    else:
        ax.hist(scores[scored & ~positive], bins=bins, color="tab:blue", alpha=0.7, label="clean")
        ax.hist(scores[scored & positive], bins=bins, color="tab:red", alpha=0.7, label="poisoned")
        ax.legend()
    if math.isfinite(cut):
        ax.axvline(cut, color="black", linestyle="--", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("suspicion score")
    ax.set_ylabel("pairs")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(buf.getvalue())


def summary_lines(summary: dict[str, Any]) -> str:
    lines = [f"scored {summary['scored']} of {summary['rows']} pairs with {summary['detector']} "
             f"(k {summary['k']}, reference {summary['reference']}); removed {summary['removed']} "
             f"(score >= {summary['cut']:.4g})" if math.isfinite(summary["cut"]) else
             f"scored {summary['scored']} of {summary['rows']} pairs; removed none"]
    if "truth" in summary:
        t = summary["truth"]
        lines.append(f"poisoned rows: {t['poisoned']}; AUROC {t['auroc']:.3f}; recall at the poison count "
                     f"{100 * t['recall_at_poison_count']:.1f}%; removed {t['removed_poisoned']} poisoned and "
                     f"{t['removed_clean']} clean")
    return "\n".join(lines)

