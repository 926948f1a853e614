"""Patch-trigger inversion over many (target, size, place) settings at a fraction of the cost of
inverting each in full (:func:`tacleaner.scan.invert_patches`): successive halving.

Every setting's pattern is optimised at once, each on its own few images per step (one
stacked forward pass), for a first share of the step budget; the settings are then scored on a
fixed sample of the probe images and the best third goes on, and again, until the last round,
whose survivors have had the full budget of steps. What comes back is what
:func:`~tacleaner.scan.invert_patches` returns (``place``, ``flip``, ``loss``, ``mask``,
``pattern``) for the survivors, each with its ``target``, ``side`` and ``aspect``, the flip and
loss measured on all probe images not already of the target. :func:`refine_patches` goes on from
found patterns (an epoch's re-inversion toward the same target), instead of starting over.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

from .scan import patch_masks

ROUNDS = (0.2, 0.3, 0.5)  # share of the step budget in each round; the survivors get all of it
KEEP = 1 / 3  # share of the settings that goes on after each round but the last
PER_SETTING = 16  # probe images per setting per step
SCORE_IMAGES = 64  # probe images each setting is scored on between rounds


def _optimise(logits: Callable, images: dict[int, torch.Tensor], settings: list[dict[str, Any]],
              patterns: torch.Tensor, steps: int, lr: float, gen: torch.Generator) -> torch.Tensor:
    """``steps`` Adam steps on every setting's pattern logits at once; returns them."""
    p = patterns.clone().requires_grad_(True)
    opt = torch.optim.Adam([p], lr=lr)
    masks = torch.stack([s["mask"] for s in settings])
    for _ in range(steps):
        xs, ys, counts = [], [], []
        for s in settings:
            pool = images[s["target"]]
            j = torch.randint(0, len(pool), (min(PER_SETTING, len(pool)),), generator=gen).to(pool.device)
            xs.append(pool[j])
            ys.append(torch.full((len(j),), s["target"], dtype=torch.long, device=pool.device))
            counts.append(len(j))
        reps = torch.tensor(counts, device=p.device)
        m = masks.repeat_interleave(reps, dim=0)
        stamped = (1 - m) * torch.cat(xs) + m * torch.sigmoid(p).repeat_interleave(reps, dim=0)
        loss = F.cross_entropy(logits(stamped), torch.cat(ys))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return p.detach()


@torch.no_grad()
def _score(logits: Callable, images: dict[int, torch.Tensor], settings: list[dict[str, Any]],
           patterns: torch.Tensor, limit: int | None, batch_size: int) -> list[tuple[float, float]]:
    """(flip rate, mean cross-entropy to the target) of each setting on its target's images (the
    first ``limit`` of them, or all)."""
    out = []
    for s, logit in zip(settings, patterns):
        pool = images[s["target"]][:limit] if limit else images[s["target"]]
        m, pat = s["mask"], torch.sigmoid(logit)
        flips, total = 0, 0.0
        for i in range(0, len(pool), batch_size):
            z = logits((1 - m) * pool[i:i + batch_size] + m * pat)
            tgt = torch.full((len(z),), s["target"], dtype=torch.long, device=z.device)
            flips += int((z.argmax(1) == tgt).sum())
            total += float(F.cross_entropy(z, tgt, reduction="sum"))
        out.append((flips / len(pool), total / len(pool)))
    return out


def _result(settings, patterns, scores) -> list[dict[str, Any]]:
    found = [{"target": s["target"], "side": s["side"], "aspect": s["aspect"], "place": s["place"], "flip": f,
              "loss": loss, "mask": s["mask"].detach().cpu(), "pattern": torch.sigmoid(p).detach().cpu()}
             for s, p, (f, loss) in zip(settings, patterns, scores)]
    return sorted(found, key=lambda r: (-r["flip"], r["loss"]))


def invert_patches_halving(logits: Callable, x: torch.Tensor, y: torch.Tensor, targets: list[int],
                           shapes: list[tuple[float, float]], grid: int, steps: int, lr: float, batch_size: int,
                           gen: torch.Generator) -> list[dict[str, Any]]:
    """The patch triggers toward each of ``targets`` over every (side, aspect) of ``shapes`` at
    every place of the ``grid``, by successive halving (module docstring): the survivors, best
    first. ``y``: the model's own class of each probe image ``x`` (images already of a target are
    not used for it)."""
    h, w = x.shape[-2:]
    images = {t: x[y != t] for t in targets if int((y != t).sum())}
    settings = [{"target": t, "side": side, "aspect": aspect, "place": place, "mask": mask.to(x.device)}
                for t in images for side, aspect in shapes for place, mask in patch_masks(h, w, side, grid, aspect)]
    if not settings:
        return []
    patterns = (torch.randn(len(settings), 3, h, w, generator=gen) * 0.1).to(x.device)
    alive = list(range(len(settings)))
    for r, share in enumerate(ROUNDS):
        live = [settings[i] for i in alive]
        patterns[alive] = _optimise(logits, images, live, patterns[alive], max(1, round(share * steps)), lr, gen)
        if r == len(ROUNDS) - 1:
            break
        scores = _score(logits, images, live, patterns[alive], SCORE_IMAGES, batch_size)
        order = sorted(range(len(alive)), key=lambda k: (-scores[k][0], scores[k][1], k))
        alive = sorted(alive[k] for k in order[:max(1, math.ceil(len(alive) * KEEP))])
    live = [settings[i] for i in alive]
    return _result(live, patterns[alive], _score(logits, images, live, patterns[alive], None, batch_size))


def refine_patches(logits: Callable, x: torch.Tensor, y: torch.Tensor, found: list[dict[str, Any]], steps: int,
                   lr: float, batch_size: int, gen: torch.Generator) -> list[dict[str, Any]]:
    """Go on optimising found triggers (each a dict of :func:`invert_patches_halving`: masks
    kept) for ``steps`` steps on the model as it is now, from their patterns; re-scored on all
    probe images, best first."""
    targets = sorted({f["target"] for f in found})
    images = {t: x[y != t] for t in targets if int((y != t).sum())}
    settings = [{"target": f["target"], "side": f["side"], "aspect": f["aspect"], "place": f["place"],
                 "mask": f["mask"].to(x.device)} for f in found if f["target"] in images]
    if not settings:
        return []
    patterns = torch.logit(torch.stack([f["pattern"] for f in found if f["target"] in images]).clamp(1e-4, 1 - 1e-4))
    patterns = patterns.to(x.device)
    patterns = _optimise(logits, images, settings, patterns, max(1, steps), lr, gen)
    return _result(settings, patterns, _score(logits, images, settings, patterns, None, batch_size))
