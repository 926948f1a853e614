"""A trigger-inversion defense that knows neither the trigger nor the target, in the manner of
InverTune (Sun et al., NDSS 2026; public code github.com/Goodman-liyu/InverTune, read for this
file: ``TargetLabel.py``, ``models/inversion.py``, ``ActivationTuning.py``).

At the start of training, and again at the start of every epoch on the model being cleaned
(``reinvert``; InverTune inverts once, on the starting model), the target found at the start
kept (``retarget`` searches again each time; on a model half cleaned the search wanders off to
other classes):

1. **Target**: untargeted PGD probes on clean images of the cleaning set, against the model's
   own zero-shot classifier over ``classes``; the class the probes fall into most often is the
   suspected target (:mod:`tacleaner.scan`'s attraction, InverTune's target identification).
   There are no labels in an image-caption set, so a probe "moves" when it leaves the model's
   own prediction for the clean image. With ``candidates`` > 1 the most attracting classes are
   each inverted and the one whose best trigger flips the most probe images is kept: the probe
   alone can name the wrong class (a held-out BadCLIP condition put the true target second);
   ``inversion.json`` lists every candidate's flip rate and the margin of the winner.
2. **Triggers**: for a square patch (side ``patch_frac`` of the frame, or each side of
   ``sizes`` and each width/height ratio of ``aspects``, without being told the trigger's) at
   each of ``patch_grid`` x ``patch_grid`` places, the pattern that sends the probe images the model
   does not already put in the target to it (``shape: free`` inverts one Neural-Cleanse mask
   and pattern instead; at 32 px that finds a sparse adversarial perturbation, not a patch).

Then, each step, on the clean pairs:

``w_clip * L_clip + w_align * mean ||f(stamp(x)) - f0(x)||^2 + w_keep * mean ||f(x) - f0(x)||^2``

where ``f`` is the model being cleaned, ``f0`` a frozen copy of the starting model, both
normalised image embeddings, and ``stamp`` puts one of the inverted patches (drawn per image)
on the image: images carrying a trigger must embed where the starting model put the same
image without it (they keep their own class), while clean images stay where they were.
InverTune's tuning aligns the mean activations of the "critical neurons" (picked by k-means on
the activation change) of the three layers the trigger changes most, with a feature
preservation term on the final embedding; ours aligns the final embedding of every image and
keeps the CLIP loss on the clean pairs (InverTune tunes on images alone).

``inversion.json`` (every inversion: the suspected target with its attraction and anomaly
index, each patch's place and flip rate) and ``inverted_trigger.png`` (the latest patches) are
written in the run folder; the triggers in use are saved with each checkpoint, so a run resumed
mid-epoch goes on with them.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..data.pairs import PairTable, load_image
from ..data.zeroshot import read_classes
from ..errors import TacleanerError
from ..evaluate import build_classifier
from ..fileio import read_json, write_json
from ..models import ClipBundle
from ..scan import (
    ScanConfig,
    ZeroShotLogits,
    comma_floats,
    frame_tensor,
    invert_patches,
    invert_trigger,
    probe_kinds,
    rank_classes,
    save_triggers,
    spaced,
)
from .base import ClipObjective, features
from .registry import DEFENSES

# The original design (until 2026-12-03 the defaults): one target, square patches of 1/4 of the
# side, the L-inf probe. Chosen on BadCLIP implant seed 0 with ASR on the true trigger, whose side
# is 1/4 (oracle); experiments/badclip.yaml, badclip-variants.yaml and trojvqa-grids.yaml run it.
DESIGN = {"candidates": 1, "sizes": "", "probe": "linf"}


@DEFENSES.register("invert")
@dataclass
class InvertTrigger(ClipObjective):
    """Knobs: ``classes`` (a classes JSON or ``imagenet``: the class names the zero-shot
    classifier probes; an experiment passes its world's); ``target`` skips the target search
    (an oracle, for ablations); ``probe_images`` clean images of the set used to probe and
    invert (evenly spaced); ``probe`` the target search's probe kinds (``linf``, the design;
    ``patch`` or ``linf,patch`` as ``tacleaner scan``); ``eps`` / ``steps`` / ``step_size`` the
    PGD probe; ``invert_steps``
    / ``invert_lr`` / ``mask_weight`` the inversion (as ``tacleaner scan``); ``w_align`` and
    ``w_keep`` the two distance terms; ``shape`` ``patch`` (``patch_frac``, ``patch_grid``,
    ``patch_steps``; ``places`` ``all`` trains against every place's patch, ``best`` against
    the one that flips most) or ``free`` (one Neural-Cleanse mask); ``reinvert`` inverts again
    at the start of every epoch, toward the target found on the starting model unless
    ``retarget`` searches for it again too. ``candidates``: how many of the most attracting
    classes are inverted, the target being the one whose trigger flips most; ``sizes`` /
    ``aspects``: comma-separated patch sides (fractions of the frame) and width/height ratios
    inverted instead of ``patch_frac`` alone, every one kept (empty: ``patch_frac``, square).
    ``search``: ``all`` inverts every (candidate, size, place) for ``patch_steps`` steps, and
    again from scratch at each re-inversion; ``halving`` optimises them all at once and keeps
    the best third twice (:mod:`tacleaner.patch_search`), the survivors of the chosen target
    being the triggers, and a re-inversion toward the same target goes on from them for a fifth
    of the steps (about a twentieth of the inversion work; not yet the default: the held-out
    comparison with ``all`` is docs/research/benchmarks.md's to record).

    The defaults are the setting measured on worlds nobody tuned on (``experiments/invert-heldout.yaml``):
    three candidate targets, sides 1/8, 1/4 and 1/3 (fixed in advance, not told the trigger's
    size) and both probe kinds. :data:`DESIGN` is the original quarter-side design, which the
    older grids ran (chosen with ASR on the true trigger: oracle)."""

    classes: str | None = field(default=None, metadata={"path": True})
    target: str | None = None
    probe_images: int = ScanConfig.images  # the probe's and the free inversion's defaults: scan's
    probe: str = "linf,patch"
    eps: float = ScanConfig.eps
    steps: int = ScanConfig.steps
    step_size: float = ScanConfig.step_size
    invert_steps: int = ScanConfig.invert_steps
    invert_lr: float = ScanConfig.invert_lr
    mask_weight: float = ScanConfig.mask_weight
    w_align: float = 1.0
    w_keep: float = 1.0
    shape: str = "patch"
    patch_frac: float = 0.25
    patch_grid: int = 3
    patch_steps: int = 50
    places: str = "all"
    candidates: int = 3
    sizes: str = "0.125,0.25,0.333"
    aspects: str = ""
    reinvert: bool = True
    retarget: bool = False
    search: str = "all"
    name = "invert"
    world_files = {"classes": "classes"}  # an experiment passes its world's class list
    relative_cost = 1.8  # a second image pass and the frozen model's, on top of fine-tuning (not measured)
    description = ("finds the likely target by adversarial probes, inverts patch triggers toward it (again each "
                   "epoch), aligns triggered images with their clean embeddings (InverTune-style)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.probe_images >= 2 and self.eps > 0 and self.steps >= 1 and self.step_size > 0
                and self.invert_steps >= 1 and self.invert_lr > 0 and self.mask_weight >= 0
                and self.shape in ("patch", "free") and 0 < self.patch_frac < 1 and self.patch_grid >= 1
                and self.patch_steps >= 1 and self.places in ("all", "best") and self.candidates >= 1
                and self.search in ("all", "halving")):
            raise TacleanerError(f"invert settings out of range: {self.params()}")
        probe_kinds(self.probe, "invert probe=")
        for name, ok in (("sizes", lambda v: 0 < v < 1), ("aspects", lambda v: v > 0)):
            try:
                values = comma_floats(getattr(self, name))
            except ValueError:
                values = [float("nan")]
            if not all(ok(v) for v in values):
                raise TacleanerError(f"invert {name}={getattr(self, name)!r}: expected comma-separated numbers "
                                     + ("in (0, 1)" if name == "sizes" else "> 0"))

    def shapes(self) -> list[tuple[float, float]]:
        """(side, aspect) of every patch shape inverted."""
        return [(f, a) for f in (comma_floats(self.sizes) or [self.patch_frac]) for a in (comma_floats(self.aspects) or [1.0])]

    def check_ready(self) -> None:
        if self.classes is None:
            raise TacleanerError("invert needs classes=PATH: the class names (a classes JSON, or imagenet) whose "
                                 "zero-shot classifier it probes for the backdoor's target")
        names = read_classes(self.classes).classnames  # a bad file fails here, before any run folder
        if self.target is not None and self.target not in names and not str(self.target).isdigit():
            raise TacleanerError(f"invert target={self.target!r} is not a class of {self.classes}")

    def setup(self, bundle: ClipBundle, table: PairTable, seed: int) -> None:
        super().setup(bundle, table, seed)
        self.check_ready()
        self.frozen = copy.deepcopy(bundle.model).eval().requires_grad_(False)
        self.triggers = TriggerInversion(self, bundle, table, seed)  # inverted on the starting model

    def on_epoch_start(self, epoch: int) -> None:
        if self.reinvert and epoch != self.triggers.inverted_at:
            self.triggers.invert(epoch)

    def write_report(self, out) -> None:
        self.triggers.write_report(out)

    def state(self) -> dict[str, Any]:
        return self.triggers.state()

    def load_state(self, state: dict[str, Any]) -> None:
        self.triggers.load_state(state)

    def losses(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        n = batch["size"]
        images = batch["images"]
        both, txt, scale = features(model, torch.cat([images, self.triggers.stamp(images)]), batch["texts"])
        img, stamped = both[:n], both[n:]
        with torch.no_grad():
            img0 = self.frozen.encode_image(images, normalize=True).to(img.dtype)
        # Means over the global batch under several processes, as PAR's distances.
        img, stamped, img0, txt = self.gather(img, stamped, img0, txt)
        align = (stamped - img0).pow(2).sum(dim=1).mean()
        keep = (img - img0).pow(2).sum(dim=1).mean()
        return {"clip_loss": self.w_clip * self.clip_loss(img, txt, scale),
                "align_loss": self.w_align * align, "keep_loss": self.w_keep * keep}

    def close(self) -> None:
        self.frozen = None


def _margin(search: list[dict[str, Any]]) -> float | None:
    """How sure the target search is: the winner's best flip rate minus the runner-up's (None
    with one candidate)."""
    flips = sorted((s["best_flip"] for s in search if s["best_flip"] is not None), reverse=True)
    return None if len(flips) < 2 else flips[0] - flips[1]


class TriggerInversion:
    """What the invert defense prepares for its batches: the suspected target and the patch
    triggers inverted toward it, on the model as it is at an epoch's start (:meth:`invert`),
    and the stamping of them onto images (:meth:`stamp`); ``knobs`` are the defense's settings."""

    def __init__(self, knobs: InvertTrigger, bundle: ClipBundle, table: PairTable, seed: int) -> None:
        self.knobs, self.bundle, self.seed = knobs, bundle, seed
        self.mean = torch.tensor(bundle.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(bundle.std).view(1, 3, 1, 1)
        self.class_list = read_classes(knobs.classes)
        self.probe = frame_tensor(bundle, _readable(table, spaced(len(table), knobs.probe_images)))
        self.history: list[dict[str, Any]] = []
        self.inverted_at = 0
        self.invert(0)

    def invert(self, epoch: int) -> None:
        """Find the target and invert its triggers on the model as it is now."""
        k = self.knobs
        model = self.bundle.model
        device = next(model.parameters()).device
        was_training = model.training
        trainable = [p for p in model.parameters() if p.requires_grad]
        model.eval().requires_grad_(False)
        try:
            logits = ZeroShotLogits(self.bundle, build_classifier(self.bundle, self.class_list, device).float()).to(device)
            cfg = ScanConfig(images=len(self.probe), probe=k.probe, eps=k.eps, steps=k.steps, step_size=k.step_size,
                             invert_steps=k.invert_steps, invert_lr=k.invert_lr, mask_weight=k.mask_weight,
                             seed=self.seed * 1000 + epoch)
            x = self.probe.to(device)
            with torch.no_grad():
                own = torch.cat([logits(x[i:i + cfg.batch_size]).argmax(1) for i in range(0, len(x), cfg.batch_size)])
            rows, _ = rank_classes(logits, x, own, cfg, self.class_list.classnames)
            if k.target is not None:  # given (an oracle, for ablations)
                pool = [next(r for r in rows if r.index == self.class_list.index(k.target))]
            elif epoch > 0 and not k.retarget:  # the target found on the starting model
                pool = [next(r for r in rows if r.name == self.history[0]["target"])]
            else:
                pool = rows[:k.candidates]
            gen = torch.Generator().manual_seed(cfg.seed)
            tried = self._search(logits, x, own, pool, cfg, gen, epoch)
            best = max(range(len(tried)), key=lambda i: (max((f["flip"] for f in tried[i][1]), default=-1.0), -i))
            chosen, found = tried[best]
            search = [{"class": r.name, "attraction_rank": 1 + [q.index for q in rows].index(r.index),
                       "attraction": r.attraction, "best_flip": max((f["flip"] for f in fs), default=None)}
                      for r, fs in tried]
        finally:
            for prm in trainable:
                prm.requires_grad_(True)
            model.train(was_training)
        if not found:
            raise TacleanerError(f"invert: every probe image is already classified as {chosen.name!r}; "
                                 "no trigger to invert (probe with more images or other classes)")
        self._keep(epoch, chosen, rows, found, search)

    def _search(self, logits, x, own, pool: list, cfg: ScanConfig, gen: torch.Generator,
                epoch: int) -> list[tuple[Any, list[dict[str, Any]]]]:
        """Each candidate class of ``pool`` with the triggers inverted toward it (best first)."""
        k = self.knobs
        if k.search != "halving" or k.shape != "patch":
            return [(r, self._triggers(logits, x, own, r.index, cfg, gen)) for r in pool]
        from ..patch_search import ROUNDS, invert_patches_halving, refine_patches

        if epoch > 0 and len(pool) == 1 and getattr(self, "found", None) and pool[0].name == self.found["target"]:
            found = refine_patches(logits, x, own, self._kept(pool[0].index), max(1, round(ROUNDS[0] * k.patch_steps)),
                                   k.invert_lr, cfg.batch_size, gen)
            return [(pool[0], found[:1] if k.places == "best" else found)]
        found = invert_patches_halving(logits, x, own, [r.index for r in pool], k.shapes(), k.patch_grid, k.patch_steps,
                                       k.invert_lr, cfg.batch_size, gen)
        mine = [(r, [f for f in found if f["target"] == r.index]) for r in pool]
        return [(r, fs[:1] if k.places == "best" else fs) for r, fs in mine]

    def _kept(self, target: int) -> list[dict[str, Any]]:
        """The triggers in use, as :func:`tacleaner.patch_search.refine_patches` takes them."""
        return [{"target": target, "side": t.get("side"), "aspect": t.get("aspect"), "place": t["place"], "mask": m,
                 "pattern": p} for t, m, p in zip(self.found["triggers"], self.masks, self.patterns)]

    def _triggers(self, logits, x, own, target: int, cfg: ScanConfig, gen: torch.Generator) -> list[dict[str, Any]]:
        """The triggers inverted toward ``target``, best first: patches of every shape at every
        place (``places: best`` keeps the best one), or one free mask."""
        k = self.knobs
        if k.shape != "patch":
            area, flip, m, p = invert_trigger(logits, x, own, target, cfg, gen)
            return [{"place": None, "flip": flip, "loss": None, "mask": m.cpu(), "pattern": p.cpu()}]
        found = []
        for side, aspect in k.shapes():
            for f in invert_patches(logits, x, own, target, side, k.patch_grid, k.patch_steps, k.invert_lr,
                                    cfg.batch_size, gen, aspect):
                found.append({**f, "side": side, "aspect": aspect})
        found.sort(key=lambda r: (-r["flip"], r["loss"]))
        return found[:1] if k.places == "best" else found

    def _keep(self, epoch: int, chosen, rows: list, found: list[dict[str, Any]], search: list[dict[str, Any]]) -> None:
        """Hold the triggers ``found`` for ``chosen`` (of the ranked ``rows``) and record them."""
        self.masks = torch.stack([f["mask"] for f in found])  # [P, 1, H, W]
        self.patterns = torch.stack([f["pattern"] for f in found])  # [P, 3, H, W]
        self.inverted_at = epoch
        self.found = {"epoch": epoch, "target": chosen.name, "target_given": self.knobs.target is not None,
                      "probe": self.knobs.probe,
                      "attraction": chosen.attraction, "anomaly": chosen.anomaly,
                      "attraction_rank": 1 + [r.index for r in rows].index(chosen.index),
                      "shape": self.knobs.shape, "probe_images": len(self.probe),
                      "triggers": [{"place": f["place"], "mask_area": float(f["mask"].mean()), "flip_rate": f["flip"],
                                    "loss": f["loss"], **({"side": f["side"], "aspect": f["aspect"]} if "side" in f
                                                          else {})} for f in found],
                      "target_search": search, "margin": _margin(search),
                      "top_classes": [asdict(r) for r in rows[:5]]}
        self.history.append(self.found)

    def write_report(self, out) -> None:
        """``inversion.json``: every inversion of the run (a resumed run keeps the earlier ones);
        ``inverted_trigger.png``: the latest triggers, one row per place."""
        out = Path(out)
        path = out / "inversion.json"
        earlier = read_json(path).get("inversions", []) if path.is_file() else []
        mine = {h["epoch"] for h in self.history}
        history = sorted([h for h in earlier if h.get("epoch") not in mine] + self.history, key=lambda h: h["epoch"])
        write_json(path, {"classes": str(self.knobs.classes), "target": self.found["target"], "inversions": history})
        names = [f"{self.found['target']} @{t['place']}" for t in self.found["triggers"]]
        save_triggers(dict(zip(names, zip(self.masks, self.patterns))), self.probe[0], out / "inverted_trigger.png")

    def state(self) -> dict[str, Any]:
        return {"masks": self.masks, "patterns": self.patterns, "inverted_at": self.inverted_at,
                "found": self.found}

    def load_state(self, state: dict[str, Any]) -> None:
        self.masks, self.patterns = state["masks"], state["patterns"]
        self.inverted_at, self.found = int(state["inverted_at"]), state["found"]
        if all(h["epoch"] != self.inverted_at for h in self.history):  # found after the last report
            self.history.append(self.found)

    def stamp(self, images: torch.Tensor, which: torch.Tensor | None = None) -> torch.Tensor:
        """``images`` (normalised) with an inverted trigger blended in, normalised again: trigger
        ``which[i]`` on image i (default: one drawn at random per image)."""
        if which is None:
            which = torch.randint(0, len(self.masks), (len(images),))
        mean, std = self.mean.to(images.device, images.dtype), self.std.to(images.device, images.dtype)
        m = self.masks[which].to(images.device, images.dtype)
        p = self.patterns[which].to(images.device, images.dtype)
        x01 = images * std + mean
        return ((1 - m) * x01 + m * p - mean) / std


def _readable(table: PairTable, idx: list[int]) -> list:
    """The images of ``idx`` that open, opened once (a broken file is skipped, as training skips it)."""
    good = []
    for i in idx:
        try:
            good.append(load_image(table.images[i]))
        except TacleanerError:
            continue
    if len(good) < 2:
        raise TacleanerError(f"{table.source}: invert needs at least 2 readable images to probe, found {len(good)}")
    return good
