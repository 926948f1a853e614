"""SafeCLIP (Yang, Gao, Mirzasoleiman, ICML 2024; its public code, BigML-CS-UCLA/SafeCLIP,
``src/main.py``, ``src/train.py``, read for this file): a defense *while* training on pairs that
may be poisoned, not a cleaning afterwards. An implant (any ``tacleaner train``) runs under it.

Three phases, by epoch:

1. ``unimodal_epochs``: unimodal contrastive learning on every pair. Per modality, the
   augmented view's embedding is trained to pick the nearest neighbour of its original view's
   embedding among the nearest neighbours of the batch's originals (NNCLR), found in a FIFO
   memory bank of past original-view embeddings (``bank_size``; the public code's default 256).
2. ``clip_warmup_epochs``: the CLIP loss on every pair at ``warmup_lr_factor`` (0.01) times the
   learning rate.
3. Then, at the start of every epoch, the image-caption cosine similarity of every pair (the
   model as it stands, no augmentation) is fitted by a two-component Gaussian mixture. The
   first time, the pairs whose posterior of the higher-mean component is at least
   ``safe_threshold`` (0.9) are *safe*; afterwards the safe share grows by ``ratio_step`` (0.01)
   per epoch up to ``ratio_cap`` (0.85), taking the pairs of highest posterior. Safe pairs train
   with the CLIP loss (among the batch's safe pairs), the others (*risky*) with the unimodal loss.

Defaults are the public code's. Where this differs from it: the two views are the pair as
loaded and its augmentation (CleanCLIP's AutoAugment and EDA) where the code draws two SimCLR
views and two fixed EDA captions; a batch holds safe and risky pairs together and sums their
losses, where the code runs a risky pass and then a safe pass per epoch with separate optimiser
steps; the similarities are those of the pairs as loaded (the code's are of an augmented view);
ties in the posterior are broken by the similarity. With ``poisoned`` (a poisoning run's
``poisoned_indices.json``) the split's precision and recall of the risky set against the truly
poisoned rows are logged per epoch (``safeclip.json``, the run log).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..data.pairs import PairTable
from ..errors import TacleanerError
from ..fileio import write_json
from ..models import ClipBundle
from .cleanclip import CleanCLIP
from .registry import DEFENSES


def gaussian_mixture_posterior(x: np.ndarray, iterations: int = 200, tol: float = 1e-8) -> np.ndarray:
    """The posterior, per value of ``x`` (1-D), of the higher-mean component of a two-component
    Gaussian mixture fitted by EM (means started at the quartiles, equal weights and variances);
    deterministic. A constant ``x`` gives 0.5 everywhere."""
    x = np.asarray(x, dtype=np.float64)
    var0 = float(x.var())
    if len(x) < 2 or var0 == 0:
        return np.full(len(x), 0.5)
    mu = np.quantile(x, [0.25, 0.75])
    var, w, last = np.full(2, var0), np.full(2, 0.5), -np.inf
    for _ in range(iterations):
        logp = -0.5 * ((x[:, None] - mu) ** 2 / var + np.log(2 * np.pi * var)) + np.log(w)
        top = logp.max(axis=1, keepdims=True)
        ll = float((top[:, 0] + np.log(np.exp(logp - top).sum(axis=1))).sum())
        r = np.exp(logp - top)
        r /= r.sum(axis=1, keepdims=True)
        n = r.sum(axis=0) + 1e-12
        w, mu = n / len(x), (r * x[:, None]).sum(axis=0) / n
        var = np.maximum((r * (x[:, None] - mu) ** 2).sum(axis=0) / n, 1e-6 * var0)
        if ll - last < tol * abs(ll):
            break
        last = ll
    return r[:, int(np.argmax(mu))]


def split_safe(similarity: np.ndarray, posterior: np.ndarray, ratio: float | None, threshold: float) -> np.ndarray:
    """The safe rows: with ``ratio`` None, those whose posterior is at least ``threshold``;
    else the ``floor(n * ratio)`` rows of highest posterior (ties: higher similarity first)."""
    if ratio is None:
        return posterior >= threshold
    order = np.lexsort((-similarity, -posterior))  # last key first: posterior, then similarity
    safe = np.zeros(len(similarity), dtype=bool)
    safe[order[:int(len(similarity) * ratio)]] = True
    return safe


@DEFENSES.register("safeclip")
@dataclass
class SafeCLIP(CleanCLIP):
    """Knobs (defaults: the public code's): ``unimodal_epochs`` (5) and ``clip_warmup_epochs``
    (1) before the split; ``warmup_lr_factor`` (0.01) the CLIP warm-up's rate against the run's;
    ``safe_threshold`` (0.9) the first split's posterior; ``ratio_step`` (0.01) and
    ``ratio_cap`` (0.85) how the safe share grows; ``bank_size`` (256) the nearest-neighbour
    memory per modality; ``poisoned``, a ``poisoned_indices.json`` to measure the split against.
    A short fine-tuning run on a pretrained model may set both warm-ups to 0: its similarities
    are meaningful from the start."""

    unimodal_epochs: int = 5
    clip_warmup_epochs: int = 1
    warmup_lr_factor: float = 0.01
    safe_threshold: float = 0.9
    ratio_step: float = 0.01
    ratio_cap: float = 0.85
    bank_size: int = 256
    poisoned: str | None = None
    name = "safeclip"
    relative_cost = 2.6  # two views per pair, and every pair embedded once per epoch (not measured)
    description = ("training on pairs that may be poisoned: unimodal warm-up, then a per-epoch Gaussian-mixture split, "
                   "CLIP loss on safe pairs and unimodal losses on risky ones (SafeCLIP)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.unimodal_epochs < 0 or self.clip_warmup_epochs < 0 or not 0 < self.warmup_lr_factor <= 1
                or not 0 < self.safe_threshold < 1 or self.ratio_step < 0 or not 0 < self.ratio_cap <= 1
                or self.bank_size < 1):
            raise TacleanerError(
                "safeclip needs unimodal_epochs, clip_warmup_epochs >= 0, 0 < warmup_lr_factor <= 1, "
                "0 < safe_threshold < 1, ratio_step >= 0, 0 < ratio_cap <= 1 and bank_size >= 1")

    def setup(self, bundle: ClipBundle, table: PairTable, seed: int) -> None:
        super().setup(bundle, table, seed)
        self.table, self.phase, self.safe, self.ratio, self.epochs_log = table, "unimodal", None, None, []
        self.truth = None
        if self.poisoned:
            from ..detect.outputs import read_poisoned

            self.truth = read_poisoned(Path(self.poisoned), len(table))
        g = torch.Generator().manual_seed(seed)
        dim = bundle.model.text_projection.shape[1]
        self.banks = [F.normalize(torch.randn(self.bank_size, dim, generator=g), dim=-1) for _ in range(2)]
        self.bank_ptr = 0

    # -- phases ------------------------------------------------------------------------------
    def on_epoch_start(self, epoch: int) -> None:
        super().on_epoch_start(epoch)
        if epoch < self.unimodal_epochs:
            self.phase = "unimodal"
        elif epoch < self.unimodal_epochs + self.clip_warmup_epochs:
            self.phase = "clip-warmup"
        else:
            self.phase = "mixed"
            self._split(epoch - self.unimodal_epochs - self.clip_warmup_epochs)

    def lr_factor(self) -> float:
        return self.warmup_lr_factor if self.phase == "clip-warmup" else 1.0

    def _split(self, k: int) -> None:
        """The safe set of the ``k``-th mixed epoch (0-based): the first by the posterior's
        threshold, then the growing share."""
        sim = self.similarities()
        posterior = gaussian_mixture_posterior(sim)
        if k > 0 and not hasattr(self, "ratio0"):  # resumed after the first mixed epoch: its share was saved
            raise TacleanerError("safeclip: the first split's safe share is missing from the resumed state")
        ratio = None if k == 0 else min(self.ratio0 + k * self.ratio_step, self.ratio_cap)
        safe = split_safe(sim, posterior, ratio, self.safe_threshold)
        if k == 0:
            self.ratio0 = float(safe.mean())
        self.ratio = float(safe.mean())
        self.safe = torch.from_numpy(safe)
        record = {"epoch": self.unimodal_epochs + self.clip_warmup_epochs + k + 1, "safe": int(safe.sum()),
                  "risky": int((~safe).sum()), "safe_share": round(self.ratio, 4)}
        if self.truth is not None:
            risky, poison = ~safe, self.truth
            caught = int((risky & poison).sum())
            record |= {"poisoned": int(poison.sum()), "poisoned_risky": caught,
                       "precision": round(caught / max(int(risky.sum()), 1), 4),
                       "recall": round(caught / max(int(poison.sum()), 1), 4)}
        self.epochs_log = [e for e in self.epochs_log if e["epoch"] != record["epoch"]] + [record]

    @torch.no_grad()
    def similarities(self) -> np.ndarray:
        """cos(image, caption) of every pair with the model as it stands (unreadable images: -1)."""
        from ..detect.score import embed_rows

        model = self.bundle.model
        was = model.training
        device = next(model.parameters()).device
        skipped: dict[int, str] = {}
        rows, img = embed_rows(self.bundle, self.table, range(len(self.table)), device, 256, 0, skipped)
        model.eval()
        sim = np.full(len(self.table), -1.0)
        for a in range(0, len(rows), 1024):
            part = torch.tensor(rows[a:a + 1024])
            txt = model.encode_text(self.tokens[part].long().to(device), normalize=True)
            sim[part.numpy()] = (img[a:a + 1024] * txt).sum(-1).float().cpu().numpy()
        model.train(was)
        return sim

    def epoch_note(self) -> str:
        if self.phase != "mixed" or not self.epochs_log:
            return f"safeclip: {self.phase}"
        e = self.epochs_log[-1]
        found = (f"; risky precision {e['precision']:.3f}, recall {e['recall']:.3f} against the poisoned rows"
                 if "precision" in e else "")
        return f"safeclip: {e['safe']} safe, {e['risky']} risky pairs{found}"

    # -- losses ------------------------------------------------------------------------------
    def unimodal_loss(self, z1: torch.Tensor, z2: torch.Tensor, bank: int, scale: torch.Tensor) -> torch.Tensor:
        """NNCLR: row i of ``z2`` (augmented view) against the nearest neighbours, in memory
        bank ``bank``, of every row of ``z1`` (original view); target: its own row's."""
        memory = self.banks[bank].to(z1.device, z1.dtype)
        nn = memory[(z1.detach() @ memory.T).argmax(dim=1)]
        return F.cross_entropy(scale * z2 @ nn.T, torch.arange(len(z2), device=z2.device))

    def _remember(self, img: torch.Tensor, txt: torch.Tensor) -> None:
        """Enqueue the originals' embeddings (FIFO, after the bank was read)."""
        n = min(len(img), self.bank_size)
        idx = (self.bank_ptr + torch.arange(n)) % self.bank_size
        self.banks[0][idx] = img[-n:].detach().float().cpu()
        self.banks[1][idx] = txt[-n:].detach().float().cpu()
        self.bank_ptr = int((self.bank_ptr + n) % self.bank_size)

    def losses(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        img, aug_img, txt, aug_txt, _, scale = self.encode(model, batch)
        index = batch["index"]
        if self.dist.enabled:
            img, aug_img, txt, aug_txt, index = self.gather(img, aug_img, txt, aug_txt, index.to(img.device))
        zero = img.sum() * 0.0  # a batch with neither term still backpropagates
        safe = (self.safe[index.cpu()].to(img.device) if self.phase == "mixed"
                else torch.full((len(img),), self.phase == "clip-warmup", device=img.device))
        risky = ~safe
        out = {"clip_loss": zero, "unimodal_loss": zero, "safe_rows": safe.sum().float()}
        if int(safe.sum()) >= 2:
            out["clip_loss"] = self.w_clip * self.clip_loss(img[safe], txt[safe], scale)
        if int(risky.sum()) >= 2:
            out["unimodal_loss"] = (self.unimodal_loss(img[risky], aug_img[risky], 0, scale)
                                    + self.unimodal_loss(txt[risky], aug_txt[risky], 1, scale)) / 2
            self._remember(img[risky], txt[risky])
        return out

    # -- run folder and resume ---------------------------------------------------------------
    def write_report(self, out) -> None:
        write_json(Path(out) / "safeclip.json", {"phases": {"unimodal": self.unimodal_epochs,
                                                            "clip_warmup": self.clip_warmup_epochs},
                                                 "epochs": self.epochs_log})

    def state(self) -> dict[str, Any] | None:
        return {"banks": [b.clone() for b in self.banks], "bank_ptr": self.bank_ptr,
                "ratio0": getattr(self, "ratio0", None), "ratio": self.ratio, "epochs_log": list(self.epochs_log)}

    def load_state(self, state: dict[str, Any]) -> None:
        self.banks, self.bank_ptr = [b.clone() for b in state["banks"]], int(state["bank_ptr"])
        if state.get("ratio0") is not None:
            self.ratio0 = float(state["ratio0"])
        self.ratio, self.epochs_log = state.get("ratio"), list(state.get("epochs_log", []))

    def run_metadata(self) -> dict[str, Any]:
        return {"safeclip": self.epochs_log[-1]} if self.epochs_log else {}
