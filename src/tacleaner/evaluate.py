"""Zero-shot evaluation: clean accuracy (CA) and attack success rate (ASR@k).

ASR@k is measured against the target: among evaluation images whose true class is not the
target, the fraction whose top-k predictions contain the target once the trigger is applied.
Target-class images are excluded from both numerator and denominator.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from .attacks import Attack
from .data.pairs import load_image
from .data.zeroshot import Classes, LabelledImages
from .models import ClipBundle

MIN_CLASSES_FOR_TOP10 = 40


@torch.no_grad()
def build_classifier(bundle: ClipBundle, classes: Classes, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """``[embed_dim, num_classes]``: per class, the mean of the normalised embeddings of all
    its templates, renormalised."""
    model = bundle.model.eval()
    weights = []
    for name in classes.classnames:
        tokens = bundle.tokenizer([t.format(name) for t in classes.templates]).to(device)
        emb = torch.cat([model.encode_text(tokens[i:i + batch_size], normalize=True)
                         for i in range(0, len(tokens), batch_size)])
        mean = emb.mean(dim=0)
        weights.append(mean / mean.norm())
    return torch.stack(weights, dim=1)


class _Images(Dataset):
    def __init__(self, paths: list[Path], preprocess, attack: Attack | None, indices: list[int],
                 frame: int | None = None) -> None:
        self.paths, self.preprocess, self.attack, self.indices = paths, preprocess, attack, indices
        self.frame = frame

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int) -> torch.Tensor:
        i = self.indices[j]
        image = load_image(self.paths[i])  # fails naming the file: evaluation never skips
        if self.attack is not None:
            image = self.attack.apply(image, i, self.frame)  # the trigger in the model's frame
        return self.preprocess(image)


@torch.no_grad()
def image_logits(bundle: ClipBundle, classifier: torch.Tensor, paths: list[Path], indices: list[int],
                 attack: Attack | None, device: torch.device, batch_size: int = 256) -> torch.Tensor:
    """Logits of the images at ``indices``; with an attack, triggered in its run's frame (else
    in the model's input frame), then preprocessed as usual."""
    model = bundle.model.eval()
    frame = None if attack is None else (attack.frame or bundle.image_size)
    loader = DataLoader(_Images(paths, bundle.preprocess, attack, indices, frame), batch_size=batch_size)
    out = [model.encode_image(x.to(device), normalize=True) @ classifier for x in loader]
    return torch.cat(out).float().cpu() if out else torch.empty(0, classifier.shape[1])


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
) -> dict[str, Any]:
    """CA on clean images and, with an attack and a target, ASR@1 and ASR@10. Triggered images
    are classified with the attack's prompts (its text key, if it has one, in every template)."""
    device = torch.device(device)
    bundle.model.to(device)
    classifier = build_classifier(bundle, classes, device)
    labels = torch.tensor(data.labels)
    clean = image_logits(bundle, classifier, data.images, list(range(len(data))), None, device, batch_size)
    result: dict[str, Any] = {
        "clean_acc": top1_accuracy(clean, labels),
        "asr_at_1": None,
        "asr_at_10": None,
        "num_images": len(data),
        "num_classes": len(classes.classnames),
    }
    if attack is None:
        return result
    t = classes.index(target)
    if len(classes.classnames) < MIN_CLASSES_FOR_TOP10:
        warnings.warn(f"ASR@10 over {len(classes.classnames)} classes (< {MIN_CLASSES_FOR_TOP10}) says little")
    others = [i for i, y in enumerate(data.labels) if y != t]
    keyed = Classes(classes.classnames, [attack.prompt(tpl) for tpl in classes.templates])
    if keyed.templates != classes.templates:  # a text key joins the image trigger (TrojVQA-style)
        classifier = build_classifier(bundle, keyed, device)
    triggered = image_logits(bundle, classifier, data.images, others, attack, device, batch_size)
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
