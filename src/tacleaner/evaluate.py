"""Zero-shot evaluation: clean accuracy (CA) and attack success rate (ASR@k).

ASR@k is measured against the target: among evaluation images whose true class is not the
target, the fraction whose top-k predictions contain the target once the trigger is applied.
Target-class images are excluded from both numerator and denominator.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from . import distributed
from .attacks import Attack
from .data.pairs import load_image
from .data.zeroshot import Classes, LabelledImages
from .environment import autocast_for, default_workers, resolve_precision
from .errors import TacleanerError
from .models import ClipBundle

MIN_CLASSES_FOR_TOP10 = 40


@torch.no_grad()
def build_classifier(bundle: ClipBundle, classes: Classes, device: torch.device, batch_size: int = 1024) -> torch.Tensor:
    """``[embed_dim, num_classes]``: per class, the mean of the normalised embeddings of all
    its templates, renormalised. The prompts of many classes go through the text tower
    together (``batch_size`` prompts a pass, whole classes; ImageNet's 1,000 x 80 in 79
    passes instead of 1,000)."""
    model = bundle.model.eval()
    per = len(classes.templates)
    group = max(1, batch_size // per)  # classes per pass
    weights = []
    for c in range(0, len(classes.classnames), group):
        names = classes.classnames[c:c + group]
        tokens = bundle.tokenizer([t.format(name) for name in names for t in classes.templates]).to(device)
        emb = model.encode_text(tokens, normalize=True).float().view(len(names), per, -1)
        mean = emb.mean(dim=1)
        weights.append(mean / mean.norm(dim=1, keepdim=True))
    return torch.cat(weights).T


class _Images(Dataset):
    """Each image decoded once: its preprocessed clean version and, with an attack, its
    triggered version (the trigger applied in ``frame``, then the same preprocessing)."""

    def __init__(self, paths: list[Path], preprocess, attack: Attack | None, indices: list[int],
                 frame: int | None = None, source: str | None = None) -> None:
        self.paths, self.preprocess, self.attack, self.indices = paths, preprocess, attack, indices
        self.frame, self.source = frame, source

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        i = self.indices[j]
        try:
            image = load_image(self.paths[i])  # fails naming the file (and the CSV row): evaluation never skips
        except TacleanerError as e:
            if self.source is None:
                raise
            raise TacleanerError(f"{self.source}: row {i + 2}: {e}") from None
        if self.attack is None:
            return self.preprocess(image)
        return self.preprocess(image), self.preprocess(self.attack.apply(image, i, self.frame))  # trigger in the model's frame


@torch.no_grad()
def image_embeddings(bundle: ClipBundle, paths: list[Path], attack: Attack | None, device: torch.device,
                     batch_size: int = 256, num_workers: int | None = None,
                     progress: bool = False, source: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Normalised image embeddings of every image, clean and (with an attack) triggered in its
    run's frame, else the model's input frame; each file is decoded once. Images go through the
    model in the same batches of ``batch_size`` clean and, separately, triggered images. Under
    ``torchrun`` each rank embeds its consecutive share of the images and every rank gets all
    the embeddings back, in order."""
    model = bundle.model.eval()
    dist = distributed.current()
    frame = None if attack is None else (attack.frame or bundle.image_size)
    workers = default_workers(device) if num_workers is None else num_workers
    if dist.enabled and len(paths) < dist.world_size:
        raise TacleanerError(f"{len(paths)} images for {dist.world_size} processes: run evaluation with fewer")
    share = distributed.shard(len(paths), dist)
    loader = DataLoader(_Images(paths, bundle.preprocess, attack, list(share), frame, source),
                        batch_size=batch_size, num_workers=workers, pin_memory=device.type == "cuda",
                        persistent_workers=False)
    autocast = autocast_for(resolve_precision("auto", device), device)  # bf16 on CUDA, fp32 elsewhere
    clean, triggered = [], []
    with tqdm(total=len(share), desc="evaluating", unit="img", leave=False, disable=not (progress and dist.is_main)) as bar:
        for batch in loader:  # the bar is cleared on an error too, leaving the error line alone
            parts = [batch] if attack is None else batch  # clean, and triggered
            with autocast:
                embs = [model.encode_image(x.to(device, non_blocking=True), normalize=True).float().cpu()
                        for x in parts]
            clean.append(embs[0])
            if attack is not None:
                triggered.append(embs[1])
            bar.update(len(embs[0]))
    empty = torch.empty(0, 0)
    clean_emb = torch.cat(clean) if clean else empty
    trig_emb = (torch.cat(triggered) if triggered else empty) if attack is not None else None
    if dist.enabled:  # every rank's share (none is empty), in rank order = image order
        parts = dist.gather(*[t.to(device) for t in (clean_emb, trig_emb) if t is not None])
        clean_emb, trig_emb = parts[0].cpu(), (parts[1].cpu() if attack is not None else None)
    return clean_emb, trig_emb


def top1_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).float().mean())


def attack_success_rate(logits: torch.Tensor, target: int, k: int) -> float:
    """Fraction of rows whose top-``k`` classes contain ``target``. The caller passes only
    triggered images whose true class is not the target."""
    if len(logits) == 0:
        return float("nan")
    k = min(k, logits.shape[1])
    return float((logits.topk(k, dim=1).indices == target).any(dim=1).float().mean())


def evaluate(
    bundle: ClipBundle,
    data: LabelledImages,
    classes: Classes,
    *,
    attack: Attack | None = None,
    target: str | int | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    num_workers: int | None = None,
    progress: bool = False,
    classifier: torch.Tensor | None = None,
) -> dict[str, Any]:
    """CA on clean images and, with an attack and a target, ASR@1 and ASR@10. Triggered images
    are classified with the attack's prompts (its text key, if it has one, in every template).
    ``num_workers``: DataLoader processes decoding images (default: :func:`default_workers`).
    ``classifier``: this model's :func:`build_classifier` for ``classes``, when the caller has
    it already (several splits, one model)."""
    device = torch.device(device)
    bundle.model.to(device)
    t = None if attack is None else classes.index(target)
    if attack is not None and len(classes.classnames) < MIN_CLASSES_FOR_TOP10:
        warnings.warn(f"ASR@10 over {len(classes.classnames)} classes (< {MIN_CLASSES_FOR_TOP10}) says little")
    if classifier is None:
        classifier = build_classifier(bundle, classes, device)
    classifier = classifier.float().cpu()
    labels = torch.tensor(data.labels)
    start = time.perf_counter()
    clean_emb, trig_emb = image_embeddings(bundle, data.images, attack, device, batch_size, num_workers, progress,
                                           data.source)
    seconds = time.perf_counter() - start
    clean = clean_emb @ classifier if len(clean_emb) else torch.empty(0, classifier.shape[1])
    result: dict[str, Any] = {
        "clean_acc": top1_accuracy(clean, labels),
        "asr_at_1": None,
        "asr_at_10": None,
        "num_images": len(data),
        "skipped": dict(data.skipped),  # files of the data not evaluated, by cause (never an image it listed)
        "num_classes": len(classes.classnames),
        "images_per_s": round(len(data) * (1 if attack is None else 2) / seconds, 1) if seconds > 0 else None,
    }
    if attack is None:
        return result
    others = torch.tensor([i for i, y in enumerate(data.labels) if y != t], dtype=torch.long)
    keyed = Classes(classes.classnames, [attack.prompt(tpl) for tpl in classes.templates])
    if keyed.templates != classes.templates:  # a text key joins the image trigger (TrojVQA-style)
        classifier = build_classifier(bundle, keyed, device).float().cpu()
    triggered = trig_emb[others] @ classifier if len(others) else torch.empty(0, classifier.shape[1])
    if keyed.templates != classes.templates and len(others):
        # The dual-key property, measured rather than assumed: each key alone (the image trigger
        # with the plain prompts; the text key on clean images).
        plain = build_classifier(bundle, classes, device).float().cpu()
        result["asr_image_only_at_1"] = attack_success_rate(trig_emb[others] @ plain, t, 1)
        result["asr_text_only_at_1"] = attack_success_rate(clean_emb[others] @ classifier, t, 1)
    result.update({
        "asr_at_1": attack_success_rate(triggered, t, 1),
        "asr_at_10": attack_success_rate(triggered, t, 10),
        "num_asr_images": len(others),
        "target": classes.classnames[t],
        "target_index": t,
        "attack": attack.name,
        "attack_params": attack.params(),
    })
    return result
