"""RVPT, repulsive visual prompt tuning (Zhang et al., NeurIPS 2025, arXiv 2412.20392; the
paper's text, read for this file: its announced code, github zhangzf01/RVPT, holds no code).

The backdoored model stays frozen; only deep visual prompts are trained
(:mod:`tacleaner.models.prompts`: ``prompt_tokens`` per block from the block ``unprompted`` of the
way down on, Section 3.3), on ``shots`` labelled images per class (the few-shot set, drawn from
``fewshot``: a labelled split the report does not use; an experiment passes its world's
``zeroshot_val``). The loss is

    L = L_CE + alpha * L_FR

- L_CE: cross-entropy of CLIP's zero-shot logits (the model's logit scale times the cosine of
  the prompted image embedding and the frozen text embedding of ``template`` for each class);
- L_FR, the feature-repelling loss: the cosine similarity between the class token after each
  prompted block and the same block's class token of the frozen encoder without prompts, on
  the same image, averaged over the prompted blocks and the batch, minimised (its best value
  is -1: "full repulsion", the paper's margin ablation).

Defaults are the paper's (Section 4.1): K = 16 shots, alpha 2, 50 prompt tokens, a quarter of the
blocks unprompted (3 of ViT-B/32's 12), "a photo of a {}.", SGD at lr 0.002 with a cosine decay,
batch 32, 50 epochs. Momentum 0.9, weight decay 5e-4, a warm-up of one epoch and the prompts'
N(0, 0.02^2) start are not stated there; they are CoOp's (whose ViT-B/32 50-epoch settings match
every number the paper does state). The paper tunes in half precision; here the loop's precision
applies. A ResNet image encoder has no tokens to prompt: a one-line error.
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
from ..models import ClipBundle
from ..models.prompts import class_tokens, install_prompts, prompting, vision_transformer
from .base import ClipObjective, features
from .registry import DEFENSES


@DEFENSES.register("rvpt")
@dataclass
class RVPT(ClipObjective):
    """Knobs (defaults: the paper's): ``fewshot`` the labelled images (CSV image,label or an
    ImageFolder tree) and ``classes`` their classes file; ``shots`` per class; ``alpha`` the
    weight of the feature-repelling loss; ``prompt_tokens`` per block; ``unprompted`` the
    share of the encoder's blocks (from the input) that see no prompts; ``template`` the class
    prompt; ``init_std`` the prompts' start."""

    fewshot: str | None = None
    classes: str | None = None
    shots: int = 16
    alpha: float = 2.0
    prompt_tokens: int = 50
    unprompted: float = 0.25
    template: str = "a photo of a {}."
    init_std: float = 0.02
    w_clip: float = 0.0  # no CLIP loss: RVPT trains on labelled images only
    name = "rvpt"
    combinable = False
    world_files = {"fewshot": "zeroshot_val", "classes": "classes"}
    train_defaults = {"optimizer": "sgd", "lr": 2e-3, "momentum": 0.9, "weight_decay": 5e-4, "epochs": 50,
                      "batch_size": 32, "warmup_fraction": 0.02}
    relative_cost = 0.3  # scheduling hint: a few hundred images, each encoded twice; not measured
    description = "deep visual prompts on K labelled images per class, cross-entropy + feature repelling (RVPT)"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.shots < 1 or self.prompt_tokens < 1 or not 0 <= self.unprompted < 1 or self.init_std <= 0:
            raise TacleanerError(f"rvpt needs shots >= 1, prompt_tokens >= 1, 0 <= unprompted < 1 and init_std > 0 (got "
                                 f"shots={self.shots}, prompt_tokens={self.prompt_tokens}, unprompted={self.unprompted}, "
                                 f"init_std={self.init_std})")
        if "{}" not in self.template:
            raise TacleanerError(f"rvpt template {self.template!r} has no '{{}}' for the class name")

    def check_ready(self) -> None:
        for key in ("fewshot", "classes"):
            if not getattr(self, key):
                raise TacleanerError(f"rvpt needs {key}=PATH (--param {key}=...): the labelled images it tunes on "
                                     "and their classes")

    def training_table(self, table: PairTable, seed: int) -> PairTable:
        """The few-shot set: ``shots`` images per class of ``fewshot``, drawn with ``seed``, as a
        table whose captions are the class names (the loop iterates it; ``table``, the
        cleaning pairs, is not used)."""
        from ..data.zeroshot import read_classes, read_zeroshot

        self.check_ready()
        classes = read_classes(self.classes)
        data = read_zeroshot(self.fewshot, classes)
        rng = np.random.default_rng([seed, 17])
        by_class: dict[int, list[int]] = {}
        for i, y in enumerate(data.labels):
            by_class.setdefault(y, []).append(i)
        short = [classes.classnames[y] for y in range(len(classes.classnames)) if len(by_class.get(y, [])) < self.shots]
        if short:
            raise TacleanerError(f"{self.fewshot}: rvpt needs {self.shots} images of every class; "
                                 f"{len(short)} classes have fewer (e.g. {short[0]!r}); lower shots")
        picked = sorted(int(i) for y in sorted(by_class) for i in rng.choice(by_class[y], self.shots, replace=False))
        self.classnames = list(classes.classnames)
        return PairTable(Path(self.fewshot), [data.images[i] for i in picked],
                         [classes.classnames[data.labels[i]] for i in picked])

    def setup(self, bundle: ClipBundle, table: PairTable, seed: int) -> None:
        super().setup(bundle, table, seed)
        model = bundle.model
        blocks = len(vision_transformer(model).transformer.resblocks)
        if not hasattr(self, "classnames"):
            self.classnames = sorted(set(table.captions))
        label = {c: i for i, c in enumerate(self.classnames)}
        self.labels = torch.tensor([label[c] for c in table.captions])
        for p in model.parameters():
            p.requires_grad_(False)
        first = int(round(self.unprompted * blocks))
        install_prompts(model, self.prompt_tokens, min(first, blocks - 1), self.init_std,
                        torch.Generator().manual_seed(seed))
        device = next(model.parameters()).device
        with torch.no_grad():
            text = bundle.tokenizer([self.template.format(c) for c in self.classnames]).to(device)
            self.class_text = F.normalize(model.encode_text(text), dim=-1)
            self.scale = model.logit_scale.exp()

    def collate(self, samples: list[dict]) -> dict[str, Any]:
        batch = super().collate(samples)
        if batch["size"]:
            batch["labels"] = self.labels[batch["index"]]
        return batch

    def losses(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        images, labels = batch["images"], batch["labels"].to(batch["images"].device)
        inner = model.module if hasattr(model, "module") else model
        with torch.no_grad(), prompting(inner, False), class_tokens(inner) as original:
            inner.encode_image(images)
        with class_tokens(inner) as prompted:
            image = features(model, images, None)[0]  # normalised, through the forward (DDP)
        ce = F.cross_entropy(self.scale * image @ self.class_text.T, labels)
        fr = torch.stack([F.cosine_similarity(p, o, dim=-1).mean() for p, o in zip(prompted, original)]).mean()
        return {"ce_loss": ce, "fr_loss": self.alpha * fr, "fr_cosine": fr.detach()}

    def run_metadata(self) -> dict[str, Any]:
        return {"rvpt": {"shots": self.shots, "classes": len(self.classnames), "images": len(self.labels)}}
