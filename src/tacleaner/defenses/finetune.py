"""Plain fine-tuning: the CLIP contrastive loss alone. It is also the objective of pretraining
and of implanting a backdoor, and the baseline every defense is compared with."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .base import ClipObjective, features
from .registry import DEFENSES


@DEFENSES.register("finetune")
@dataclass
class Finetune(ClipObjective):
    """Knobs: ``w_clip`` weighs the image<->text InfoNCE over the batch."""

    name = "finetune"
    relative_cost = 1.0
    description = "CLIP contrastive loss alone (plain fine-tuning)"

    def losses(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        img, txt, scale = features(model, batch["images"], batch["texts"])
        img, txt = self.gather(img, txt)
        return {"clip_loss": self.w_clip * self.clip_loss(img, txt, scale)}
