"""Patch triggers optimised against a frozen clean CLIP model (TrojVQA-style, BadCLIP).

The patch is placed as BadNet places its patch (same ``patch_frac`` / ``location`` knobs) and
its pixels are optimised with Adam through a sigmoid, on a seeded sample of the data's
images that do not show the target, resized to the model's input size. Subclasses name the
loss terms (:meth:`OptimisedPatch.objectives`); each term's value is logged every
``log_every`` steps to ``trigger_log.jsonl`` in the poisoning run folder. The result is
quantised to uint8 once and saved: poisoning and evaluation paste exactly those bytes (resized
with PIL to the patch side of images whose size differs from the model's).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..data.pairs import load_image
from ..errors import TacleanerError
from .badnet import BadNet
from .base import PoisonContext, mentions
from .frame import model_frame

# (patched, clean) normalised image embeddings [B, D] -> per-image loss [B]
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class OptimisedPatch(BadNet):
    steps: int = 300
    lr: float = 0.05
    batch_size: int = 64
    opt_images: int = 1024
    log_every: int = 25
    learned = True
    needs_model = True

    def __post_init__(self) -> None:
        super().__post_init__()
        for knob in ("steps", "batch_size", "opt_images", "log_every"):
            if getattr(self, knob) < 1:
                raise TacleanerError(f"{self.name} {knob} must be >= 1, got {getattr(self, knob)}")
        if self.lr <= 0:
            raise TacleanerError(f"{self.name} lr must be > 0, got {self.lr}")
        self._patch: np.ndarray | None = None

    # -- the trigger ------------------------------------------------------------------------
    def ready(self) -> bool:
        return self._patch is not None

    def patch(self, side: int) -> np.ndarray:
        self.require_prepared()
        if self._patch.shape[0] == side:
            return self._patch
        return np.asarray(Image.fromarray(self._patch).resize((side, side), Image.BILINEAR))

    def state(self) -> dict[str, np.ndarray]:
        self.require_prepared()
        return {"patch": self._patch}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        patch = arrays.get("patch")
        if patch is None or patch.dtype != np.uint8 or patch.ndim != 3 or patch.shape[2] != 3 \
                or patch.shape[0] != patch.shape[1]:
            raise TacleanerError(f"{self.name} trigger: expected a square uint8 'patch' array")
        self._patch = patch

    # -- optimisation -----------------------------------------------------------------------
    def objectives(self, ctx: PoisonContext, encode_images: Callable, encode_texts: Callable) -> dict[str, tuple[float, Loss]]:
        """Named ``(weight, loss)`` terms, built once from the clean model's embeddings."""
        raise NotImplementedError

    def prepare(self, ctx: PoisonContext) -> dict[str, Any]:
        bundle, device = ctx.clean_model, torch.device(ctx.device)
        model = bundle.model.to(device).eval()
        trainable = [p for p in model.parameters() if p.requires_grad]
        for p in trainable:
            p.requires_grad_(False)
        size = bundle.image_size
        mean = torch.tensor(bundle.mean, device=device).view(1, 3, 1, 1)
        std = torch.tensor(bundle.std, device=device).view(1, 3, 1, 1)

        def encode_images(x01: torch.Tensor) -> torch.Tensor:
            return model.encode_image((x01 - mean) / std, normalize=True)

        @torch.no_grad()
        def encode_texts(texts: list[str]) -> torch.Tensor:
            return model.encode_text(bundle.tokenizer(texts).to(device), normalize=True)

        rng = np.random.default_rng([ctx.seed, self.pattern_seed, 23])
        pool = [i for i, c in enumerate(ctx.captions) if not mentions(c, ctx.target)]
        if not pool:
            raise TacleanerError(f"{self.name}: every caption names {ctx.target!r}; no images to optimise the patch on")
        chosen = np.sort(rng.choice(pool, size=min(self.opt_images, len(pool)), replace=False))
        images = load_images([ctx.images[i] for i in chosen], size).to(device)
        terms = self.objectives(ctx, encode_images, encode_texts)
        with torch.no_grad():
            clean_emb = torch.cat([encode_images(images[i:i + 256]) for i in range(0, len(images), 256)])

        side = self.side(size, size)
        places = [self.position(size, size, side, int(i)) for i in chosen]
        init = torch.from_numpy(BadNet.patch(self, side).astype(np.float32) / 255).clamp(0.02, 0.98)
        theta = torch.logit(init).permute(2, 0, 1).to(device).requires_grad_(True)
        opt = torch.optim.Adam([theta], lr=self.lr)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        log: list[dict[str, float]] = []
        for step in range(self.steps + 1):
            batch = torch.randperm(len(images), generator=gen)[:self.batch_size]
            x = paste(images[batch], torch.sigmoid(theta), [places[int(b)] for b in batch])
            emb = encode_images(x)
            parts = {name: loss(emb, clean_emb[batch]).mean() for name, (_, loss) in terms.items()}
            total = sum(w * parts[name] for name, (w, _) in terms.items())
            if step % self.log_every == 0 or step == self.steps:
                row = {"step": step, "loss": total.item(), **{k: v.item() for k, v in parts.items()}}
                log.append(row)
                ctx.log(f"{self.name} trigger step {step}/{self.steps}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "step"))
            if step == self.steps:
                break
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
        self._patch = (torch.sigmoid(theta.detach()).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        for p in trainable:
            p.requires_grad_(True)
        if ctx.out is not None:
            from ..fileio import write_text

            write_text(ctx.out / "trigger_log.jsonl", "".join(json.dumps(r) + "\n" for r in log))
        return {"steps": self.steps, "images": len(images), "loss_first": round(log[0]["loss"], 4),
                "loss_last": round(log[-1]["loss"], 4)}


def load_images(paths: list, size: int) -> torch.Tensor:
    """``[N, 3, size, size]`` in [0, 1]: the images in the model's frame (as poisoning pastes
    the patch and the model sees it)."""
    out = [np.asarray(model_frame(load_image(p), size)) for p in paths]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div_(255)


def paste(images: torch.Tensor, patch: torch.Tensor, places: list[tuple[int, int]]) -> torch.Tensor:
    """Images with ``patch`` [3, s, s] pasted at each image's (top, left); differentiable in
    the patch."""
    s = patch.shape[-1]
    mask = torch.zeros_like(images[:, :1])
    canvas = torch.zeros_like(images)
    for j, (y, x) in enumerate(places):
        mask[j, :, y:y + s, x:x + s] = 1
        canvas[j, :, y:y + s, x:x + s] = patch
    return images * (1 - mask) + canvas


def target_text_embedding(encode_texts: Callable, phrase: str, templates: list[str]) -> torch.Tensor:
    """The zero-shot classifier's row for ``phrase``: mean of its normalised prompt
    embeddings, renormalised."""
    emb = encode_texts([t.format(phrase) for t in templates]).mean(dim=0)
    return F.normalize(emb, dim=0)
