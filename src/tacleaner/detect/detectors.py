"""Suspicion scores of a point among a reference sample of the data's image embeddings: local
outlier scores, higher where the surroundings are sparser, which is how backdoor samples of a
poisoned CLIP stand out (Huang et al., "Detecting Backdoor Samples in Contrastive Language Image
Pretraining", ICLR 2025; their code, github.com/HanxunH/Detect-CLIP-Backdoor-Samples, was read
for this file), and the embedding's own length.

Each detector sees, for a chunk of query points, the sorted distances to their ``k`` nearest
reference points and those neighbours' indices, per reference point its own k-distance and
local intrinsic dimensionality (LID) within the reference, and each query's feature length.
Written from the definitions:

- ``k-distance``: the distance to the k-th nearest neighbour (other than the point itself).
- ``slof`` (simplified local outlier factor, Schubert et al. 2014, as Huang et al. compute it):
  ``mean_o d_k(q) / d_k(o)`` over the k neighbours ``o``: the mean of the density ratios.
- ``disagreement``: minus the cosine similarity of the pair's image and caption features. A
  poisoned pair's caption names the target, not what the image shows: before a model learns
  the trigger, and often after, the two disagree more than a clean pair's. No rate either.
- ``norm``: the length of the unnormalised image feature. Huang et al. score unnormalised
  features, and a triggered image's is long: the signal behind much of their detectors' AUROC,
  here on its own. It needs no neighbours, so it does not depend on the poison rate.
- ``dao`` (dimensionality-aware outlier score, Anderberg et al. 2024):
  ``mean_o (d_k(q) / d_k(o)) ** LID(o)`` over the k neighbours ``o``; reported as its logarithm,
  computed by log-sum-exp so that a high LID cannot overflow (a monotone change: the ranking,
  AUROC and any quantile threshold are those of DAO itself).
- ``density``: minus the logarithm of the k-distance: suspicious where the surroundings are
  abnormally *dense*. Ours, for the regime the paper does not cover: a backdoored model maps
  triggered images to nearly one point whatever they show, so once the poisoned rows are more
  than about ``k`` of the reference (a poison rate above ``k / reference``; the embedded worlds
  poison 5%), they are each other's nearest neighbours and the sparsity detectors rank them
  *last*. At web-scale rates (0.01-0.1%) the paper's sparsity holds instead.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..registry import Registry

EPS = 1e-12  # distances of exact duplicates are 0: keep ratios and logarithms finite


@dataclass(frozen=True)
class Neighbours:
    """A chunk of queries against the reference: ``dist`` (queries x k, ascending) and ``index``
    (the neighbours' reference rows); per reference row its ``kdist`` and ``lid``; per query the
    ``norm`` (length) of its unnormalised feature and, for the signals that read captions, the
    ``agreement`` (cosine similarity) of its image and caption features. The neighbour fields
    are None when no signal of the detector uses them."""

    dist: torch.Tensor
    index: torch.Tensor
    kdist: torch.Tensor
    lid: torch.Tensor
    norm: torch.Tensor
    agreement: torch.Tensor | None = None


def lid_mle(sorted_dist: torch.Tensor) -> torch.Tensor:
    """Maximum-likelihood LID from each row's k nearest distances (ascending; Levina and Bickel,
    in Amsaleg et al.'s form): ``-1 / mean_i log(d_i / d_k)``."""
    d = sorted_dist.clamp_min(EPS)
    logs = torch.log(d / d[:, -1:]).mean(dim=1)
    return -1.0 / logs.clamp_max(-EPS)


DETECTORS: Registry[torch.Tensor] = Registry("detector")


@DETECTORS.register("k-distance")
def k_distance(nb: Neighbours) -> torch.Tensor:
    return nb.dist[:, -1]


@DETECTORS.register("slof")
def slof(nb: Neighbours) -> torch.Tensor:
    return (nb.dist[:, -1:].clamp_min(EPS) / nb.kdist[nb.index].clamp_min(EPS)).mean(dim=1)


@DETECTORS.register("dao")
def dao(nb: Neighbours) -> torch.Tensor:
    ratio = torch.log(nb.dist[:, -1:].clamp_min(EPS) / nb.kdist[nb.index].clamp_min(EPS))
    return torch.logsumexp(nb.lid[nb.index] * ratio, dim=1) - math.log(nb.index.shape[1])


@DETECTORS.register("norm")
def norm(nb: Neighbours) -> torch.Tensor:
    return nb.norm


@DETECTORS.register("disagreement")
def disagreement(nb: Neighbours) -> torch.Tensor:
    return -nb.agreement


NEIGHBOUR_FREE = frozenset({"norm", "disagreement"})  # signals that need no reference sample
TEXT_SIGNALS = frozenset({"disagreement"})  # signals that read the captions


@DETECTORS.register("density")
def density(nb: Neighbours) -> torch.Tensor:
    return -torch.log(nb.dist[:, -1].clamp_min(EPS))
