"""Score every pair of an image-caption set by how much its image embedding is a local outlier.

Streaming: the rows go through the model in chunks; each chunk is compared with a fixed,
seeded reference sample of the set (``reference`` rows), whose own k-distances and LIDs are
computed once. Memory is the reference, one chunk and one float per row, whatever the set's
size. Under ``torchrun`` each process embeds and scores its consecutive share of the rows and
rank 0 gathers the scores.

Huang et al. score each batch against the batch itself (gathered across GPUs); a reference
sample of the whole set plays that role here so that a row's score does not depend on which
rows share its batch. A row in the reference is never its own neighbour.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .. import distributed
from ..data.pairs import MissingImage, PairTable, UnreadableImage, load_image
from ..environment import autocast_for, default_workers, resolve_precision
from ..errors import TacleanerError
from ..models import ClipBundle
from .detectors import DETECTORS, Neighbours, lid_mle


@dataclass
class DetectConfig:
    """``detector`` (see :data:`DETECTORS`), ``k`` neighbours, ``reference`` rows sampled (with
    ``seed``) to compare every row with, ``chunk`` rows scored at a time, ``batch_size`` images
    per forward pass."""

    detector: str = "dao"
    k: int = 16
    reference: int = 4096
    seed: int = 0
    chunk: int = 4096
    batch_size: int = 256

    def __post_init__(self) -> None:
        DETECTORS.get(self.detector)  # an unknown name fails here, naming the choices
        for name in ("k", "reference", "chunk", "batch_size"):
            if getattr(self, name) < 1:
                raise TacleanerError(f"detect {name} must be >= 1, got {getattr(self, name)}")
        if self.reference <= self.k:
            raise TacleanerError(f"detect reference ({self.reference}) must be larger than k ({self.k})")


class _Rows(Dataset):
    """The preprocessed image of each listed row; a row whose file is missing or does not
    decode yields None and its cause (it is counted, left unscored and kept out of clean.csv)."""

    def __init__(self, table: PairTable, rows: Sequence[int], preprocess) -> None:
        self.table, self.rows, self.preprocess = table, rows, preprocess

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, j: int) -> tuple[int, Any]:
        i = int(self.rows[j])
        try:
            return i, self.preprocess(load_image(self.table.images[i]))
        except MissingImage:
            return i, "missing_image"
        except UnreadableImage:
            return i, "unreadable_image"


def _collate(items: list[tuple[int, Any]]) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    good = [(i, x) for i, x in items if isinstance(x, torch.Tensor)]
    bad = [(i, x) for i, x in items if not isinstance(x, torch.Tensor)]
    images = torch.stack([x for _, x in good]) if good else None
    return [i for i, _ in good], images, bad


@torch.no_grad()
def embed_rows(bundle: ClipBundle, table: PairTable, rows: Sequence[int], device: torch.device, batch_size: int,
               workers: int, skipped: dict[int, str], bar: tqdm | None = None) -> tuple[list[int], torch.Tensor]:
    """Normalised image embeddings of the readable ``rows`` (in order) and those rows; the
    others go into ``skipped`` with their cause."""
    model = bundle.model.eval()
    autocast = autocast_for(resolve_precision("auto", device), device)
    loader = DataLoader(_Rows(table, rows, bundle.preprocess), batch_size=batch_size, num_workers=workers,
                        collate_fn=_collate, pin_memory=device.type == "cuda")
    kept: list[int] = []
    parts: list[torch.Tensor] = []
    for idx, images, bad in loader:
        skipped.update(bad)
        if images is not None:
            with autocast:
                parts.append(model.encode_image(images.to(device, non_blocking=True), normalize=True).float())
            kept.extend(idx)
        if bar is not None:
            bar.update(len(idx) + len(bad))
    dim = bundle.model.text_projection.shape[1] if not parts else parts[0].shape[1]
    return kept, (torch.cat(parts) if parts else torch.empty(0, dim, device=device))


def reference_rows(n: int, size: int, seed: int) -> list[int]:
    """The reference sample: ``size`` rows drawn without replacement by ``seed`` (all rows of a
    smaller set), ascending."""
    if n <= size:
        return list(range(n))
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:size].tolist())


def nearest(query: torch.Tensor, reference: torch.Tensor, k: int, same: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest distances from each query to the reference (ascending) and their
    reference rows; ``same[j]`` is the reference position of query ``j`` itself (-1: none),
    which is excluded."""
    d = torch.cdist(query, reference)
    if same is not None:
        hit = same >= 0
        d[hit.nonzero().squeeze(1), same[hit]] = float("inf")
    dist, index = torch.topk(d, k, dim=1, largest=False, sorted=True)
    return dist, index


@dataclass
class Reference:
    rows: list[int]
    emb: torch.Tensor
    kdist: torch.Tensor
    lid: torch.Tensor
    position: dict[int, int]

    @classmethod
    def build(cls, rows: list[int], emb: torch.Tensor, k: int) -> Reference:
        if len(rows) <= k:
            raise TacleanerError(f"only {len(rows)} readable reference images for k = {k}: "
                                 "lower k or give more data")
        dist, _ = nearest(emb, emb, k, torch.arange(len(rows), device=emb.device))
        return cls(rows, emb, dist[:, -1], lid_mle(dist), {r: p for p, r in enumerate(rows)})

    def score(self, detector: str, rows: list[int], emb: torch.Tensor, k: int) -> torch.Tensor:
        same = torch.tensor([self.position.get(r, -1) for r in rows], device=emb.device, dtype=torch.long)
        dist, index = nearest(emb, self.emb, k, same)
        return DETECTORS.get(detector)(Neighbours(dist, index, self.kdist, self.lid))


def score_pairs(bundle: ClipBundle, table: PairTable, cfg: DetectConfig, device: torch.device,
                progress: bool = False, num_workers: int | None = None) -> tuple[np.ndarray, dict[int, str]]:
    """Every row's score (NaN for a row whose image could not be read) and the unreadable rows
    with their cause. Under ``torchrun`` every rank returns the whole result."""
    dist = distributed.current()
    workers = default_workers(device) if num_workers is None else num_workers
    skipped: dict[int, str] = {}
    ref_rows = reference_rows(len(table), cfg.reference, cfg.seed)
    mine = distributed.shard(len(ref_rows), dist)  # the reference is embedded in shares too
    kept, emb = embed_rows(bundle, table, [ref_rows[i] for i in mine], device, cfg.batch_size, workers, {})
    kept_all = [r for part in dist.all_gather_object(kept) for r in part]
    emb = dist.gather(emb)[0]  # every rank's share, in rank order (itself alone outside torchrun)
    ref = Reference.build(kept_all, emb, cfg.k)
    share = distributed.shard(len(table), dist)
    scores = torch.full((len(share),), float("nan"), dtype=torch.float64)
    with tqdm(total=len(share), desc="scoring", unit="pair", leave=False,
              disable=not (progress and dist.is_main)) as bar:
        for lo in range(share.start, share.stop, cfg.chunk):
            chunk = range(lo, min(lo + cfg.chunk, share.stop))
            rows, chunk_emb = embed_rows(bundle, table, chunk, device, cfg.batch_size, workers, skipped,
                                         bar if dist.is_main else None)
            if rows:
                at = torch.tensor(rows) - share.start
                scores[at] = ref.score(cfg.detector, rows, chunk_emb, cfg.k).double().cpu()
    if dist.enabled:
        scores = dist.gather(scores.to(device))[0].cpu()
        skipped = {i: c for part in dist.all_gather_object(skipped) for i, c in part.items()}
    return scores.numpy(), skipped
