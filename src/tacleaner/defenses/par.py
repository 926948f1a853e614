"""PAR, Perturb and Recover (Singh, Croce, Hein, arXiv 2412.00727; public code
github.com/nmndeep/PerturbAndRecover, read for this file, ``losses.py`` and ``utils.py``).

The CLIP loss minus half the sum, over the image and the text tower, of the batch-mean squared
L2 distance between the normalised embeddings of the model being cleaned and of a frozen copy
of the starting model: the model is pushed away from where it started ("perturb") while the
CLIP loss on clean pairs keeps it useful ("recover"). Each distance term is switched off (set to
zero, so it has no gradient) once it exceeds ``tau``, 2.15 in the public code, as its
``threshold_tensor(..., tau, 0.0)`` does. Images are augmented as in its ``load_clip_model``:
with probability 0.5 Gaussian noise of std 0.2 added to the [0, 1] image, where, as in that
code, the noise is clipped to [0, 1] before it is added (so it only brightens; ``noise_clip``
false draws symmetric noise instead), then with probability 0.5 one small square erased to 0
after normalisation (area 0.5-1% of the image). Both models see the same augmented image. The
logit scale is a constant there (``logit_scale.exp().item()``): ``train_logit_scale`` false.

Training defaults from its ``train.py`` (applied under any the user sets): lr 3e-6, reached by
a straight line from 3e-5 over the first half of the steps (``--warmup-epochs 0.5`` times the
epochs, ``--lr-start``), then a cosine to 1e-9 (``--lr-end``); weight decay 1e-4; AdamW eps
1e-8. Its batch is 256 per GPU on 4 GPUs; ours is whatever the user sets (global). Under several
processes the distances are batch means over the gathered global batch, as in the source.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..data.pairs import PairTable
from ..errors import TacleanerError
from ..models import ClipBundle
from .base import ClipObjective, features
from .registry import DEFENSES


@DEFENSES.register("par")
@dataclass
class PAR(ClipObjective):
    """Knobs: ``tau`` (2.15) switches a distance term off above it; ``w_dist`` (0.5) weighs the
    distance terms (subtracted); ``noise_p`` / ``noise_std`` (0.5, 0.2) the Gaussian noise,
    ``noise_clip`` (true) its clipping to [0, 1] before it is added, as in the public code;
    ``erase_p`` (0.5) and ``erase_scale`` ([0.005, 0.01], of the image area) the erased square;
    ``train_logit_scale`` (false, as the public code)."""

    tau: float = 2.15
    w_dist: float = 0.5
    noise_p: float = 0.5
    noise_std: float = 0.2
    noise_clip: bool = True
    erase_p: float = 0.5
    erase_scale: list[float] = field(default_factory=lambda: [0.005, 0.01])
    train_logit_scale: bool = False
    name = "par"
    train_defaults = {"lr": 3e-6, "lr_start": 3e-5, "lr_end": 1e-9, "warmup_fraction": 0.5, "weight_decay": 1e-4,
                      "eps": 1e-8}
    relative_cost = 1.6  # scheduling hint (a frozen model's forward pass on top of fine-tuning), not measured
    description = "CLIP loss minus the (capped) distance to the frozen starting model, noise + erasing (PAR)"

    def __post_init__(self) -> None:
        super().__post_init__()
        ok = (self.tau > 0 and self.w_dist >= 0 and 0 <= self.noise_p <= 1 and self.noise_std >= 0
              and 0 <= self.erase_p <= 1 and len(self.erase_scale) == 2
              and 0 < self.erase_scale[0] <= self.erase_scale[1] < 1)
        if not ok:
            raise TacleanerError("par needs tau > 0, w_dist >= 0, noise_p and erase_p in [0, 1], noise_std >= 0 and "
                                 f"erase_scale [lo, hi] with 0 < lo <= hi < 1 (got {self.params()})")

    def setup(self, bundle: ClipBundle, table: PairTable, seed: int) -> None:
        super().setup(bundle, table, seed)
        self.frozen = copy.deepcopy(bundle.model).eval().requires_grad_(False)  # the starting model
        if not self.train_logit_scale:  # a constant: no gradient (DDP refuses a parameter left without one)
            bundle.model.logit_scale.requires_grad_(False)
        self.mean = torch.tensor(bundle.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(bundle.std).view(1, 3, 1, 1)

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Noise on the [0, 1] image, then erasing on the normalised one (the public order)."""
        x01 = x * self.std + self.mean
        n = len(x)
        noisy = torch.rand(n) < self.noise_p
        if noisy.any():
            noise = torch.randn_like(x01[noisy]) * self.noise_std
            if self.noise_clip:
                noise = noise.clip(0, 1)
            x01[noisy] = (x01[noisy] + noise).clip(0, 1)
        x = (x01 - self.mean) / self.std
        h, w = x.shape[-2:]
        for i in torch.nonzero(torch.rand(n) < self.erase_p).flatten().tolist():
            area = h * w * float(torch.empty(1).uniform_(*self.erase_scale))
            side = max(1, min(h, w, int(round(math.sqrt(area)))))  # ratio 1: a square
            top = int(torch.randint(0, h - side + 1, (1,)))
            left = int(torch.randint(0, w - side + 1, (1,)))
            x[i, :, top:top + side, left:left + side] = 0
        return x

    def collate(self, samples: list[dict]) -> dict[str, Any]:
        batch = super().collate(samples)
        if batch["size"]:
            batch["images"] = self.augment(batch["images"])
        return batch

    def losses(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        img, txt, scale = features(model, batch["images"], batch["texts"])
        with torch.no_grad():
            img0 = self.frozen.encode_image(batch["images"], normalize=True)
            txt0 = self.frozen.encode_text(batch["texts"], normalize=True)
        img, txt, img0, txt0 = self.gather(img, txt, img0, txt0)  # distances over the global batch, as the source
        clip = self.w_clip * self.clip_loss(img, txt, scale if self.train_logit_scale else scale.detach())
        d_img = (img - img0.to(img.dtype)).pow(2).sum(dim=1).mean()
        d_txt = (txt - txt0.to(txt.dtype)).pow(2).sum(dim=1).mean()
        capped = [d if d.item() <= self.tau else d.new_zeros(()) for d in (d_img, d_txt)]
        return {"clip_loss": clip, "par_loss": -self.w_dist * (capped[0] + capped[1])}

    def close(self) -> None:
        self.frozen = None
        if getattr(self, "bundle", None) is not None:
            self.bundle.model.logit_scale.requires_grad_(True)
