"""Score every pair of an image-caption set by how much its image embedding is a local outlier.

Streaming: the rows go through the model in chunks; each chunk is compared with a fixed,
seeded reference sample of the set (``reference`` rows), whose own k-distances and LIDs are
computed once. Memory is the reference, one chunk and one float per row, whatever the set's
size. Under ``torchrun`` each process embeds and scores its consecutive share of the rows and
rank 0 gathers the scores.

Huang et al. score each batch against the batch itself (gathered across GPUs); a reference
sample of the whole set plays that role here so that a row's score does not depend on which
rows share its batch. A row in the reference is never its own neighbour.

Distances are taken between the model's image features as the model outputs them (``features:
raw``, what Huang et al.'s code scores) or after scaling each to unit length (``normalised``);
``norm`` scores the raw feature's length either way.
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
from .cut import robust_z
from .detectors import DETECTORS, NEIGHBOUR_FREE, TEXT_SIGNALS, Neighbours, lid_mle

FEATURES = ("raw", "normalised")
# the default: the candidate with the highest lowest AUROC over six attacks at 5% and 1% poison on
# the tune world of experiments/trigger-free.yaml (docs/research/results-trigger-free.md); needs no rate
DEFAULT_DETECTOR = "norm+disagreement"


@dataclass
class DetectConfig:
    """``detector`` (see :data:`DETECTORS`; ``a+b`` adds the robust z-scores of signals ``a`` and
    ``b``), ``k`` neighbours, ``features`` (``raw`` or
    ``normalised`` image features), ``reference`` rows sampled (with ``seed``) to compare every
    row with, ``chunk`` rows scored at a time, ``batch_size`` images per forward pass."""

    detector: str = DEFAULT_DETECTOR
    k: int = 16
    features: str = "raw"
    reference: int = 4096
    seed: int = 0
    chunk: int = 4096
    batch_size: int = 256

    def __post_init__(self) -> None:
        for part in self.parts():
            DETECTORS.get(part)  # an unknown name fails here, naming the choices
        if self.features not in FEATURES:
            raise TacleanerError(f"detect features {self.features!r}: choose one of {', '.join(FEATURES)}")
        for name in ("k", "reference", "chunk", "batch_size"):
            if getattr(self, name) < 1:
                raise TacleanerError(f"detect {name} must be >= 1, got {getattr(self, name)}")
        if self.reference <= self.k:
            raise TacleanerError(f"detect reference ({self.reference}) must be larger than k ({self.k})")

    def parts(self) -> list[str]:
        """The signals a detector name joins with ``+`` (their robust z-scores are added)."""
        return [p.strip() for p in self.detector.split("+")]


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
               workers: int, skipped: dict[int, str], bar: tqdm | None = None, normalize: bool = True
               ) -> tuple[list[int], torch.Tensor]:
    """Image embeddings (unit length unless ``normalize`` is false) of the readable ``rows`` (in
    order) and those rows; the others go into ``skipped`` with their cause."""
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
                parts.append(model.encode_image(images.to(device, non_blocking=True), normalize=normalize).float())
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


def in_space(emb: torch.Tensor, features: str) -> torch.Tensor:
    """The features distances are taken between: as given (``raw``) or scaled to unit length."""
    return torch.nn.functional.normalize(emb, dim=-1) if features == "normalised" else emb


@dataclass
class Reference:
    rows: list[int]
    emb: torch.Tensor
    kdist: torch.Tensor
    lid: torch.Tensor
    position: dict[int, int]
    features: str = "raw"

    @classmethod
    def build(cls, rows: list[int], emb: torch.Tensor, k: int, features: str = "raw") -> Reference:
        """The reference from its rows' raw image features ``emb``."""
        if len(rows) <= k:
            raise TacleanerError(f"only {len(rows)} readable reference images for k = {k}: "
                                 "lower k or give more data")
        emb = in_space(emb, features)
        dist, _ = nearest(emb, emb, k, torch.arange(len(rows), device=emb.device))
        return cls(rows, emb, dist[:, -1], lid_mle(dist), {r: p for p, r in enumerate(rows)}, features)

    def neighbours(self, rows: list[int], emb: torch.Tensor, k: int,
                   agreement: torch.Tensor | None = None) -> Neighbours:
        """What the detectors see of the rows whose raw image features are ``emb``."""
        same = torch.tensor([self.position.get(r, -1) for r in rows], device=emb.device, dtype=torch.long)
        dist, index = nearest(in_space(emb, self.features), self.emb, k, same)
        return Neighbours(dist, index, self.kdist, self.lid, emb.norm(dim=1), agreement)

    def score(self, detector: str, rows: list[int], emb: torch.Tensor, k: int) -> torch.Tensor:
        """One signal's score of the rows whose raw image features are ``emb``."""
        return DETECTORS.get(detector)(self.neighbours(rows, emb, k))


@torch.no_grad()
def caption_agreement(bundle: ClipBundle, table: PairTable, rows: list[int], emb: torch.Tensor,
                      batch_size: int) -> torch.Tensor:
    """The cosine similarity of each row's image feature (``emb``) and its caption's."""
    model = bundle.model.eval()
    autocast = autocast_for(resolve_precision("auto", emb.device), emb.device)
    parts = []
    for lo in range(0, len(rows), batch_size):
        tokens = bundle.tokenizer([table.captions[i] for i in rows[lo:lo + batch_size]]).to(emb.device)
        with autocast:
            parts.append(model.encode_text(tokens, normalize=True).float())
    return (torch.nn.functional.normalize(emb, dim=-1) * torch.cat(parts)).sum(dim=1)


def combine(parts: dict[str, np.ndarray]) -> np.ndarray:
    """One signal's scores as they are; several signals' as the sum of their robust z-scores,
    each on its own scale over the scored rows (no rate, no weights)."""
    if len(parts) == 1:
        return next(iter(parts.values()))
    return np.sum([robust_z(v) for v in parts.values()], axis=0)


def _reference(bundle: ClipBundle, table: PairTable, cfg: DetectConfig, device: torch.device, workers: int,
               dist: distributed.Dist) -> Reference | None:
    """The reference sample, embedded in shares across processes; none when no signal uses
    neighbours."""
    if all(p in NEIGHBOUR_FREE for p in cfg.parts()):
        return None
    ref_rows = reference_rows(len(table), cfg.reference, cfg.seed)
    mine = distributed.shard(len(ref_rows), dist)
    kept, emb = embed_rows(bundle, table, [ref_rows[i] for i in mine], device, cfg.batch_size, workers, {},
                           normalize=False)
    kept_all = [r for part in dist.all_gather_object(kept) for r in part]
    emb = dist.gather(emb)[0]  # every rank's share, in rank order (itself alone outside torchrun)
    return Reference.build(kept_all, emb, cfg.k, cfg.features)


def score_pairs(bundle: ClipBundle, table: PairTable, cfg: DetectConfig, device: torch.device,
                progress: bool = False, num_workers: int | None = None) -> tuple[np.ndarray, dict[int, str]]:
    """Every row's score (NaN for a row whose image could not be read) and the unreadable rows
    with their cause. Under ``torchrun`` every rank returns the whole result."""
    dist = distributed.current()
    workers = default_workers(device) if num_workers is None else num_workers
    skipped: dict[int, str] = {}
    ref = _reference(bundle, table, cfg, device, workers, dist)
    share = distributed.shard(len(table), dist)
    parts = {p: torch.full((len(share),), float("nan"), dtype=torch.float64) for p in cfg.parts()}
    with tqdm(total=len(share), desc="scoring", unit="pair", leave=False,
              disable=not (progress and dist.is_main)) as bar:
        for lo in range(share.start, share.stop, cfg.chunk):
            chunk = range(lo, min(lo + cfg.chunk, share.stop))
            rows, chunk_emb = embed_rows(bundle, table, chunk, device, cfg.batch_size, workers, skipped,
                                         bar if dist.is_main else None, normalize=False)
            if not rows:
                continue
            agree = caption_agreement(bundle, table, rows, chunk_emb, cfg.batch_size) if (
                TEXT_SIGNALS & set(parts)) else None
            nb = (ref.neighbours(rows, chunk_emb, cfg.k, agree) if ref is not None else
                  Neighbours(None, None, None, None, chunk_emb.norm(dim=1), agree))
            at = torch.tensor(rows) - share.start
            for name, scores in parts.items():
                scores[at] = DETECTORS.get(name)(nb).double().cpu()
    if dist.enabled:
        parts = {p: dist.gather(v.to(device))[0].cpu() for p, v in parts.items()}
        skipped = {i: c for part in dist.all_gather_object(skipped) for i, c in part.items()}
    return combine({p: v.numpy() for p, v in parts.items()}), skipped
