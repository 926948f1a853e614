"""Audit a model of unknown history for a backdoor target: ``tacleaner scan``.

Two signals, neither knowing the trigger or the target:

1. **Attraction** (the target-identification idea of InverTune, Sun et al., NDSS 2026: a
   backdoor is a shortcut toward its target, so adversarial perturbations of clean images fall
   into the target class far more often than into others). Untargeted probes against the
   model's own zero-shot classifier, of the kinds named by ``probe``: ``linf``, PGD within an
   L-inf ball of ``eps`` around each clean image; ``patch``, a square patch of each side in
   ``patch_sizes`` at a random place in each image, its content free in [0, 1] (the shape of the
   patch triggers, which a small L-inf ball need not reach). Each class's score is the share of
   probes that end in it (never their own class), averaged over the kinds. A class is flagged
   by its anomaly index over all classes: (score - median) / (1.4826 x MAD), the robust z-score
   Neural Cleanse uses (Wang et al., S&P 2019), at or above ``cut``. Neural Cleanse's cut of 2
   flags every clean model of the embedded worlds (their top index reaches 14); the default cut
   (15) lies above every clean model's top index measured before it was set, and the decision it
   gives (:mod:`tacleaner.findings`) is printed with its error rates on models it never saw.
2. **Inverted trigger** for the ``top`` classes by attraction (Neural Cleanse's mask and
   pattern, optimised by gradient descent on clean images of other classes): the smallest
   blend ``(1 - m) x + m p`` that sends them to the class, as the mask's share of the image
   and the share of images it flips. A real target needs a small mask; others need a large one.

The inverted patterns are written as images beside the report, so an auditor sees what the
model answers to. Everything runs on the model's input frame (the resized, cropped image), as
the triggers in this toolkit do.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .data.pairs import load_image
from .data.zeroshot import Classes, LabelledImages
from .detect.cut import robust_z
from .errors import TacleanerError
from .evaluate import build_classifier
from .models import ClipBundle

# the anomaly index at which the most attracting class is a suspected target: the lowest whole
# number above every clean model's top index in the measurement made before this cut existed
# (12 clean models of worlds 0-3, highest 14.2: docs/scan.md); docs/research/results-trigger-free.md
# measures it on 63 models none of which was seen when choosing it
DECISION_CUT = 15.0
# the cut when classes are ranked by their attraction beyond a reference model's (``--reference``):
# the lowest whole number above every clean fine-tune's top index on the world it was chosen on
# (world 10 of experiments/trigger-free.yaml, top 11.3); measured on worlds 11 and 12 in
# docs/research/results-trigger-free.md
REFERENCE_CUT = 12.0
# the settings a reference scan must share with this one for its attractions to be comparable
PROBE_SETTINGS = ("images", "probe", "eps", "steps", "step_size", "batch_size", "seed", "patch_sizes",
                  "patch_steps", "patch_step")


@dataclass
class ScanConfig:
    """Knobs: ``images`` clean images used (evenly spaced over the set); ``probe`` the probe
    kinds, comma-separated (``linf``, ``patch``); ``eps``, ``steps`` and ``step_size`` the L-inf
    PGD probe (in [0, 1] pixel units); ``patch_sizes`` (comma-separated sides, as shares of the
    frame's side), ``patch_steps`` and ``patch_step`` the patch probe (signed-gradient steps on
    the patch's content); ``top`` classes whose trigger is inverted; ``invert_steps``,
    ``invert_lr`` and ``mask_weight`` the inversion (Adam on the mask and pattern logits, loss =
    cross-entropy to the class + ``mask_weight`` x mask area)."""

    images: int = 256
    probe: str = "linf,patch"
    eps: float = 8 / 255
    steps: int = 10
    step_size: float = 2 / 255
    top: int = 3
    invert_steps: int = 200
    invert_lr: float = 0.1
    mask_weight: float = 0.05
    batch_size: int = 128
    seed: int = 0
    patch_sizes: str = "0.125,0.25,0.333"
    patch_steps: int = 10
    patch_step: float = 0.1
    cut: float = DECISION_CUT
    reference_cut: float = REFERENCE_CUT

    def __post_init__(self) -> None:
        if not (self.images >= 2 and self.eps > 0 and self.steps >= 1 and self.step_size > 0 and self.top >= 0
                and self.invert_steps >= 1 and self.invert_lr > 0 and self.mask_weight >= 0 and self.batch_size >= 1
                and self.patch_steps >= 1 and self.patch_step > 0 and self.cut > 0 and self.reference_cut > 0):
            raise TacleanerError(f"scan settings out of range: {asdict(self)}")
        probe_kinds(self.probe, "scan probe ")
        try:
            sides = self.sides()
        except ValueError:
            sides = []
        if not sides or not all(0 < f < 1 for f in sides):
            raise TacleanerError(f"scan patch_sizes {self.patch_sizes!r}: expected comma-separated sides in (0, 1)")

    def probes(self) -> list[str]:
        return probe_kinds(self.probe, "scan probe ")

    def sides(self) -> list[float]:
        return comma_floats(self.patch_sizes)


def comma_floats(text: str) -> list[float]:
    """``"0.125, 0.25"`` -> [0.125, 0.25] (empty items skipped; ValueError on a non-number)."""
    return [float(v) for v in str(text).split(",") if v.strip()]


def probe_kinds(text: str, where: str) -> list[str]:
    """The probe kinds named in ``text`` (comma-separated), each checked against ``PROBES``;
    ``where`` starts the error ("scan probe ", "invert probe=")."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    if not kinds or any(k not in PROBES for k in kinds):
        raise TacleanerError(f"{where}{text!r}: expected a comma-separated list of {', '.join(sorted(PROBES))}")
    return kinds


@dataclass
class ClassReport:
    name: str
    index: int
    attraction: float  # share of adversarial probes that end in this class
    anomaly: float  # robust z-score of the attraction (beyond the reference's, when one is given) over all classes
    by_probe: dict[str, float] = field(default_factory=dict)  # the attraction of each probe kind
    trigger_area: float | None = None  # inverted mask's share of the image
    trigger_flip: float | None = None  # share of other classes' images the inverted trigger sends here
    reference_attraction: float | None = None  # the reference model's attraction to this class (``--reference``)


@dataclass
class ScanReport:
    classes: list[ClassReport]
    images: int
    probe_clean_acc: float
    settings: dict[str, Any]
    suspects: list[str] = field(default_factory=list)  # classes at or above the cut, most attracting first
    reference: str | None = None  # the reference scan the attraction was measured against

    @property
    def top(self) -> ClassReport:
        return self.classes[0]

    @property
    def cut(self) -> float:
        return float(self.settings["reference_cut" if self.reference else "cut"])

    def to_json(self) -> dict[str, Any]:
        return {"suspects": self.suspects, "top_class": self.top.name, "top_anomaly": self.top.anomaly,
                "images": self.images, "probe_clean_acc": self.probe_clean_acc, "settings": self.settings,
                "reference": self.reference, "classes": [asdict(c) for c in self.classes]}


def anomaly_index(scores: list[float]) -> list[float]:
    """Robust z-scores: (s - median) / (1.4826 x median absolute deviation); a flat set of
    scores (MAD 0) gives 0 for the median and a large finite value above it."""
    # a MAD of 0 (most classes never attract) must not divide by zero: floor 1e-3
    return robust_z(np.array(scores, dtype=np.float64), floor=1e-3).tolist()


def spaced(n: int, count: int) -> list[int]:
    """``count`` indices evenly spaced over ``range(n)`` (all of them when ``count >= n``)."""
    return sorted({int(round(i * (n - 1) / max(1, count - 1))) for i in range(min(count, n))})


def frame_tensor(bundle: ClipBundle, images) -> torch.Tensor:
    """Images (paths, or images already opened) in [0, 1] pixel units of the model's frame
    (resized, cropped)."""
    x = torch.stack([bundle.preprocess(load_image(p) if isinstance(p, (str, Path)) else p) for p in images])
    mean = torch.tensor(bundle.mean).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std).view(1, 3, 1, 1)
    return (x * std + mean).clamp(0, 1)


def frame_images(bundle: ClipBundle, data: LabelledImages, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` images evenly spaced over ``data``, in [0, 1] pixel units of the model's frame."""
    n = len(data)
    if n < 2:
        raise TacleanerError(f"scan needs at least 2 images, got {n}")
    idx = spaced(n, count)
    return frame_tensor(bundle, [data.images[i] for i in idx]), torch.tensor([data.labels[i] for i in idx])


class ZeroShotLogits(torch.nn.Module):
    """Zero-shot logits of [0, 1] images: normalise, embed, compare with the class embeddings."""

    def __init__(self, bundle: ClipBundle, classifier: torch.Tensor) -> None:
        super().__init__()
        self.model, self.classifier = bundle.model, classifier
        self.register_buffer("mean", torch.tensor(bundle.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(bundle.std).view(1, 3, 1, 1))

    def forward(self, x01: torch.Tensor) -> torch.Tensor:
        emb = self.model.encode_image((x01 - self.mean) / self.std, normalize=True)
        return 100.0 * emb @ self.classifier


def linf_probe(logits: ZeroShotLogits, xb: torch.Tensor, yb: torch.Tensor, cfg: ScanConfig,
               gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Untargeted PGD in the L-inf ball of ``eps``, away from ``yb``: (predicted class, class it
    started from), one per image."""
    adv = xb.clone()
    for _ in range(cfg.steps):
        adv.requires_grad_(True)
        loss = F.cross_entropy(logits(adv), yb)
        (grad,) = torch.autograd.grad(loss, adv)
        adv = (adv.detach() + cfg.step_size * grad.sign()).clamp(xb - cfg.eps, xb + cfg.eps).clamp(0, 1)
    with torch.no_grad():
        return logits(adv).argmax(1), yb


def random_patch_masks(n: int, h: int, w: int, frac: float, gen: torch.Generator) -> torch.Tensor:
    """[n, 1, h, w] masks of a square of side ``frac`` x the shorter side, each at a place drawn
    uniformly (on the CPU generator, so the same places on any device)."""
    side = max(1, round(frac * min(h, w)))
    top = torch.randint(0, h - side + 1, (n, 1, 1), generator=gen)
    left = torch.randint(0, w - side + 1, (n, 1, 1), generator=gen)
    rows, cols = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    inside = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
    return inside.unsqueeze(1).float()


def patch_probe(logits: ZeroShotLogits, xb: torch.Tensor, yb: torch.Tensor, cfg: ScanConfig,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Untargeted patch probes: per side in ``patch_sizes``, a square at a random place in each
    image whose content (any colour, started at random) climbs the cross-entropy of ``yb`` by
    ``patch_steps`` signed-gradient steps. (predicted class, class it started from), one per
    image and side."""
    preds, starts = [], []
    for frac in cfg.sides():
        m = random_patch_masks(len(xb), *xb.shape[-2:], frac, gen).to(xb.device)
        p = torch.rand(xb.shape, generator=gen).to(xb.device)
        for _ in range(cfg.patch_steps):
            p.requires_grad_(True)
            loss = F.cross_entropy(logits((1 - m) * xb + m * p), yb)
            (grad,) = torch.autograd.grad(loss, p)
            p = (p.detach() + cfg.patch_step * grad.sign()).clamp(0, 1)
        with torch.no_grad():
            preds.append(logits((1 - m) * xb + m * p).argmax(1))
        starts.append(yb)
    return torch.cat(preds), torch.cat(starts)


PROBES = {"linf": linf_probe, "patch": patch_probe}


def attraction(logits: ZeroShotLogits, x: torch.Tensor, y: torch.Tensor, cfg: ScanConfig,
               classes: int) -> tuple[dict[str, list[float]], float]:
    """Per probe kind, each class's share of the probes that end in it (never their own class);
    and the clean zero-shot accuracy on ``x`` against ``y``."""
    counts = {kind: torch.zeros(classes) for kind in cfg.probes()}
    probes = dict.fromkeys(counts, 0)
    gen = torch.Generator().manual_seed(cfg.seed)
    correct = 0
    for i in range(0, len(x), cfg.batch_size):
        xb, yb = x[i:i + cfg.batch_size], y[i:i + cfg.batch_size]
        with torch.no_grad():
            correct += int((logits(xb).argmax(1) == yb).sum())
        for kind in counts:
            pred, start = PROBES[kind](logits, xb, yb, cfg, gen)
            moved = pred != start
            counts[kind] += torch.bincount(pred[moved].cpu(), minlength=classes).float()
            probes[kind] += len(pred)
    return {kind: (c / probes[kind]).tolist() for kind, c in counts.items()}, correct / len(x)


def rank(shares: dict[str, list[float]], classnames: list[str],
         reference: dict[str, float] | None = None) -> list[ClassReport]:
    """Every class with its attraction (the mean of its per-probe ``shares``) and anomaly index,
    most anomalous first. With ``reference`` (class name -> a reference model's attraction, as
    read by :func:`read_reference`), the index is taken over the attraction *beyond* the
    reference's: a class every model of the data draws probes to (a natural attractor) scores
    as it does on the reference, and only what fine-tuning added stands out."""
    scores = [sum(col) / len(col) for col in zip(*shares.values())]
    ref = [reference[name] for name in classnames] if reference is not None else [0.0] * len(scores)
    z = anomaly_index([s - r for s, r in zip(scores, ref)])
    rows = (ClassReport(name, i, scores[i], z[i], {k: v[i] for k, v in shares.items()},
                        reference_attraction=ref[i] if reference is not None else None)
            for i, name in enumerate(classnames))
    return sorted(rows, key=lambda r: (-r.anomaly, -r.attraction))


def read_reference(reference: Any, cfg: ScanConfig, classnames: list[str], source: str) -> dict[str, float]:
    """A reference model's attraction per class from its ``scan.json`` (as read from ``source``),
    checked to be comparable: the same classes and the same probe settings."""
    try:
        settings, rows = reference["settings"], reference["classes"]
        got = {r["name"]: float(sum(r["by_probe"].values()) / len(r["by_probe"])) for r in rows}
    except (KeyError, TypeError, ZeroDivisionError, AttributeError):
        raise TacleanerError(f"{source}: not a scan.json written by tacleaner scan") from None
    if reference.get("reference"):
        raise TacleanerError(f"{source}: a scan made against a reference; give the reference model's own scan")
    ours = asdict(cfg)
    for key in PROBE_SETTINGS:
        if settings.get(key) != ours[key]:
            raise TacleanerError(f"{source}: scanned with {key} {settings.get(key)!r}, this scan uses "
                                 f"{ours[key]!r}; scan both models with the same settings")
    if sorted(got) != sorted(classnames):
        raise TacleanerError(f"{source}: its classes are not this scan's classes; scan both with the same --classes")
    return got


def rank_classes(logits: ZeroShotLogits, x: torch.Tensor, y: torch.Tensor, cfg: ScanConfig,
                 classnames: list[str], reference: dict[str, float] | None = None) -> tuple[list[ClassReport], float]:
    """Every class with its attraction and anomaly index, most anomalous first (see
    :func:`rank`); and the zero-shot accuracy on the probe images against ``y``."""
    shares, acc = attraction(logits, x, y, cfg, len(classnames))
    return rank(shares, classnames, reference), acc


def invert_trigger(logits: ZeroShotLogits, x: torch.Tensor, y: torch.Tensor, target: int, cfg: ScanConfig,
            gen: torch.Generator) -> tuple[float, float, torch.Tensor, torch.Tensor]:
    """Neural Cleanse for one class: returns (mask area, flip rate, mask [1,H,W], pattern [3,H,W]).
    ``y``: the images' classes (true labels, or the model's own predictions where there are no
    labels); the trigger is inverted on the images not of the target class."""
    others = x[y != target]
    if len(others) == 0:
        return 1.0, 0.0, torch.ones(1, *x.shape[-2:]), torch.zeros(3, *x.shape[-2:])
    h, w = x.shape[-2:]
    # Drawn on the CPU generator (the same start on any device), then moved to the images' device.
    mask_logit = (torch.randn(1, 1, h, w, generator=gen) * 0.1 - 2.0).to(x.device).requires_grad_(True)  # starts small
    pattern_logit = (torch.randn(1, 3, h, w, generator=gen) * 0.1).to(x.device).requires_grad_(True)
    opt = torch.optim.Adam([mask_logit, pattern_logit], lr=cfg.invert_lr)
    tgt = torch.full((len(others),), target, dtype=torch.long, device=x.device)
    for _step in range(cfg.invert_steps):
        j = torch.randint(0, len(others), (min(cfg.batch_size, len(others)),), generator=gen).to(x.device)
        m, p = torch.sigmoid(mask_logit), torch.sigmoid(pattern_logit)
        out = logits((1 - m) * others[j] + m * p)
        loss = F.cross_entropy(out, tgt[j]) + cfg.mask_weight * m.mean() * 100  # area in percent
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        m, p = torch.sigmoid(mask_logit), torch.sigmoid(pattern_logit)
        flips = 0
        for i in range(0, len(others), cfg.batch_size):
            flips += int((logits((1 - m) * others[i:i + cfg.batch_size] + m * p).argmax(1) == target).sum())
    return float(m.mean()), flips / len(others), m[0].detach(), p[0].detach()


def patch_masks(h: int, w: int, frac: float, grid: int, aspect: float = 1.0) -> list[tuple[str, torch.Tensor]]:
    """Masks of side ``frac`` x the shorter side (a square; ``aspect`` = width / height makes it a
    rectangle of the same area) at ``grid`` x ``grid`` places spread over the frame (corners
    included), named ``row,col`` in [0, 1] units."""
    side = max(1, round(frac * min(h, w)))
    tall = min(h, max(1, round(side / aspect ** 0.5)))
    wide = min(w, max(1, round(side * aspect ** 0.5)))
    out = []
    for r in range(grid):
        for c in range(grid):
            top = round(r * (h - tall) / max(1, grid - 1))
            left = round(c * (w - wide) / max(1, grid - 1))
            m = torch.zeros(1, h, w)
            m[:, top:top + tall, left:left + wide] = 1
            out.append((f"{r / max(1, grid - 1):.2g},{c / max(1, grid - 1):.2g}", m))
    return out


def invert_patches(logits: ZeroShotLogits, x: torch.Tensor, y: torch.Tensor, target: int, frac: float, grid: int,
                   steps: int, lr: float, batch_size: int, gen: torch.Generator,
                   aspect: float = 1.0) -> list[dict[str, Any]]:
    """A patch-shaped inversion: for a square of side ``frac`` at each of ``grid`` x ``grid``
    places, the pattern that sends the images not of ``target`` to it (Adam on the pattern's
    logits, ``steps`` steps). One dict per place: ``place``, ``flip`` (share of those images
    sent to the target), ``loss`` (their mean cross-entropy to it), ``mask`` [1,H,W] and
    ``pattern`` [3,H,W], best first (most flips, then lowest loss). The shape of the triggers of
    BadNet, BadCLIP and TrojVQA; on a small model an adversarial patch flips nearly every image
    from anywhere, so the best place is not necessarily the trigger's."""
    others = x[y != target]
    h, w = x.shape[-2:]
    if len(others) == 0:
        return []
    tgt = torch.full((len(others),), target, dtype=torch.long, device=x.device)
    found = []
    for place, mask in patch_masks(h, w, frac, grid, aspect):
        m = mask.to(x.device)
        pattern_logit = (torch.randn(1, 3, h, w, generator=gen) * 0.1).to(x.device).requires_grad_(True)
        opt = torch.optim.Adam([pattern_logit], lr=lr)
        for _ in range(steps):
            j = torch.randint(0, len(others), (min(batch_size, len(others)),), generator=gen).to(x.device)
            loss = F.cross_entropy(logits((1 - m) * others[j] + m * torch.sigmoid(pattern_logit)), tgt[j])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            p = torch.sigmoid(pattern_logit)
            flips, total = 0, 0.0
            for i in range(0, len(others), batch_size):
                out = logits((1 - m) * others[i:i + batch_size] + m * p)
                flips += int((out.argmax(1) == target).sum())
                total += float(F.cross_entropy(out, tgt[i:i + batch_size], reduction="sum"))
        found.append({"place": place, "flip": flips / len(others), "loss": total / len(others),
                      "mask": m.detach().cpu(), "pattern": p[0].detach().cpu()})
    return sorted(found, key=lambda r: (-r["flip"], r["loss"]))


def scan(bundle: ClipBundle, data: LabelledImages, classes: Classes, cfg: ScanConfig | None = None,
         device: str | torch.device = "cpu", reference: dict[str, float] | None = None,
         reference_name: str | None = None) -> tuple[ScanReport, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """Score every class as a possible backdoor target; returns the report (classes sorted by
    anomaly index) and, for the ``top`` classes, their inverted (mask, pattern). ``reference``
    (from :func:`read_reference`, named ``reference_name`` in the report) ranks the classes by
    their attraction beyond that model's."""
    cfg = cfg or ScanConfig()
    device = torch.device(device)
    model = bundle.model.to(device).eval()
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.requires_grad_(False)  # gradients flow to the images only
    try:
        classifier = build_classifier(bundle, classes, device).float()
        logits = ZeroShotLogits(bundle, classifier).to(device)
        x, y = frame_images(bundle, data, cfg.images)
        x, y = x.to(device), y.to(device)
        rows, acc = rank_classes(logits, x, y, cfg, classes.classnames, reference)
        gen = torch.Generator().manual_seed(cfg.seed)
        triggers = {}
        for row in rows[:cfg.top]:
            area, flip, m, p = invert_trigger(logits, x, y, row.index, cfg, gen)
            row.trigger_area, row.trigger_flip = area, flip
            triggers[row.name] = (m.cpu(), p.cpu())
    finally:
        for p in trainable:
            p.requires_grad_(True)
    report = ScanReport(rows, len(x), acc, asdict(cfg),
                        reference=(reference_name or "reference") if reference is not None else None)
    report.suspects = [r.name for r in rows if r.anomaly >= report.cut]
    return report, triggers


def format_report(report: ScanReport, rows: int = 10) -> str:
    ref = report.reference is not None
    lines = [f"{'class':24s} {'attraction':>10s}{' reference' if ref else ''} {'anomaly':>8s} {'trigger area':>12s} "
             f"{'flip':>6s}"]
    for r in report.classes[:rows]:
        area = "" if r.trigger_area is None else f"{100 * r.trigger_area:.1f}%"
        flip = "" if r.trigger_flip is None else f"{100 * r.trigger_flip:.0f}%"
        beside = f" {100 * r.reference_attraction:9.1f}%" if ref else ""
        lines.append(f"{r.name[:24]:24s} {100 * r.attraction:9.1f}%{beside} {r.anomaly:8.1f} {area:>12s} {flip:>6s}")
    lines.append(f"{report.images} images, clean zero-shot accuracy on them {100 * report.probe_clean_acc:.1f}%")
    return "\n".join(lines)


def save_triggers(triggers: dict[str, tuple[torch.Tensor, torch.Tensor]], example: torch.Tensor, path) -> None:
    """One row per class: the mask (white = replaced), the pattern where the mask is, and an
    example image with the inverted trigger applied; atomically written PNG."""
    from PIL import Image

    from .fileio import atomic_path

    if not triggers:
        return
    h, w = example.shape[-2:]
    rows = []
    for m, p in triggers.values():
        tiles = [m.expand(3, h, w), m * p, (1 - m) * example + m * p]
        rows.append(torch.cat([t.clamp(0, 1) for t in tiles], dim=2))
    grid = (torch.cat(rows, dim=1) * 255).round().byte().permute(1, 2, 0).numpy()
    scale = max(1, 96 // h)  # small frames enlarged for the eye
    img = Image.fromarray(grid).resize((grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
