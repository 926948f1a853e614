"""InfoNCE pieces shared by the defenses' extra terms."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def info_nce(anchors: torch.Tensor, candidates: torch.Tensor, scale: torch.Tensor,
             targets: torch.Tensor | None = None) -> torch.Tensor:
    """One-directional InfoNCE: row i of ``anchors`` should pick ``candidates[targets[i]]``
    (default: the i-th) among all candidates, with logits ``scale * cosine``. Embeddings are
    expected L2-normalised."""
    logits = scale * anchors @ candidates.T
    if targets is None:
        targets = torch.arange(len(anchors), device=anchors.device)
    return F.cross_entropy(logits, targets)
