"""Clean zero-shot accuracy per image, and its interval by a bootstrap over images: the audit
reports the change a defense made on the same images, so the two models are resampled together
(a paired bootstrap)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data.zeroshot import Classes, LabelledImages
from ..evaluate import build_classifier, image_embeddings
from ..models import ClipBundle

DRAWS = 2000


def correct(bundle: ClipBundle, data: LabelledImages, classes: Classes, device: torch.device,
            progress: bool = False) -> np.ndarray:
    """Whether the model classifies each image as its label (zero-shot, the classes' prompts)."""
    classifier = build_classifier(bundle, classes, device).float().cpu()
    emb, _ = image_embeddings(bundle, data.images, None, device, progress=progress, source=data.source)
    return ((emb @ classifier).argmax(1) == torch.tensor(data.labels)).numpy()


def interval(values: np.ndarray, q: float = 0.95) -> list[float]:
    lo, hi = np.percentile(values, [100 * (1 - q) / 2, 100 * (1 + q) / 2])
    return [float(lo), float(hi)]


def before_after(before: np.ndarray, after: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """CA of each model and the change, each with a 95% percentile interval over ``DRAWS``
    resamplings of the images (the same resampled images for both models)."""
    rng = np.random.default_rng(seed)
    n = len(before)
    idx = rng.integers(0, n, size=(DRAWS, n))
    b, a = before[idx].mean(1), after[idx].mean(1)
    return {"images": int(n), "before": float(before.mean()), "before_ci": interval(b),
            "after": float(after.mean()), "after_ci": interval(a),
            "change": float(after.mean() - before.mean()), "change_ci": interval(a - b)}
