"""The one training loop: pretraining, backdoor implanting and every defense run through it.

AdamW with no weight decay on gains, biases, embeddings and the logit scale; linear warm-up
then cosine decay, counted in optimizer steps; the logit scale clamped to ln(100) as in CLIP;
bf16 autocast on CUDA. After every epoch the run folder gets an atomically written
``model.safetensors`` and ``train_state.pt`` (everything needed to resume), and the loop
appends to ``metrics.jsonl``. A run folder marks completion in ``metadata.json``; the resume
state is then removed.

Under ``torchrun`` the same loop runs on every rank with the model in DDP (see
:mod:`tacleaner.distributed`): ``batch_size`` stays the global batch, every rank computes the
loss of the whole batch from gathered embeddings, and rank 0 alone writes the run folder.
"""
from __future__ import annotations

import math
import random
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import distributed
from .data.pairs import IMAGE_CACHE_BYTES, SKIP_CAUSES, PairDataset, PairTable, describe_skipped
from .defenses import Objective
from .environment import autocast_for, default_workers, environment, resolve_precision
from .errors import TacleanerError
from .fileio import prepare_run_dir, read_json, release_run_dir, write_json, write_yaml
from .metrics_log import MetricSink
from .models import ClipBundle
from .models.checkpoint import load_weights, read_state_dict
from .progress import Checkpoint, EpochProgress
from .runlog import RunLog
from .train_config import TrainConfig, with_defaults  # noqa: F401  (tacleaner.train.TrainConfig is public)

MAX_LOGIT_SCALE = math.log(100.0)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay only matrices and kernels; gains, biases, norms and the logit scale are exempt."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exempt = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        exempt = exempt or "embedding" in name  # token and positional embeddings
        (no_decay if exempt else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def lr_lambda(warmup: int, total: int, start: float = 0.0, end: float = 0.0) -> Callable[[int], float]:
    """Multiplier of the peak lr for step ``s`` (0-based). Warm-up: (s+1)/warmup, or with
    ``start`` > 0 a straight line over the warm-up's steps from ``start`` to 1 (both ends
    included, as PAR's and DINO's ``cosine_scheduler``; ``start`` > 1 comes down to the peak);
    then a cosine from 1 to ``end``."""

    def f(step: int) -> float:
        if step < warmup:
            if start > 0:
                return start + (1 - start) * (step / (warmup - 1) if warmup > 1 else 1.0)
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


def schedule(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    """The lr multiplier of ``cfg`` over ``total`` optimiser steps."""
    warmup = int(round(cfg.warmup_fraction * total)) if cfg.warmup_fraction > 0 else min(cfg.warmup_steps, total)
    return lr_lambda(warmup, total, cfg.lr_start / cfg.lr, cfg.lr_end / cfg.lr)


def is_complete(out: str | Path) -> bool:
    meta = Path(out) / "metadata.json"
    return meta.is_file() and bool(read_json(meta).get("completed"))


def _settings(cfg: TrainConfig, objective: Objective) -> dict[str, Any]:
    """The training and objective settings a run folder's config.yaml records."""
    return {"train": asdict(cfg), "objective": {"name": objective.name, **objective.params()}}


def _check_same_settings(out: Path, cfg: TrainConfig, objective: Objective) -> None:
    """--resume continues a run with the settings it was started with: a changed setting would
    otherwise be silently ignored (a complete run) or mix two schedules (an unfinished one). The
    one exception: a run that diverged (``diverged.json``) may resume with a lower ``lr``."""
    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        return
    import yaml

    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    now = _settings(cfg, objective)
    # Settings that do not change the result may differ: where it runs and how it reports.
    free = {"device", "num_workers", "log_every", "save_every", "tensorboard", "threads", "compile"}
    if (out / DIVERGED).is_file():
        diverged = read_json(out / DIVERGED)
        if cfg.lr >= diverged["lr"]:
            raise TacleanerError(f"{out}: diverged at lr {diverged['lr']:g}; resume it with a lower --lr, not {cfg.lr:g}")
        free = free | {"lr"}
    for part in ("train", "objective"):
        before = saved.get(part) or {}
        for key, value in now[part].items():
            if key in before and key not in free and before[key] != (list(value) if isinstance(value, tuple) else value):
                raise TacleanerError(f"{out}: was started with {part} setting {key}={before[key]!r}, not {value!r}; "
                                     "--resume continues a run with its own settings (start a new --out to change them)")


@dataclass
class _Run:
    """What the epochs of one run share. The first fields are given; :func:`_prepare_model`,
    :func:`_prepare_optimiser` and :func:`_prepare_data` fill the rest, in that order (the order
    of the random draws a run makes)."""

    cfg: TrainConfig
    bundle: ClipBundle
    table: PairTable
    objective: Objective
    out: Path
    dist: distributed.Dist
    device: torch.device
    steps_per_epoch: int
    log: RunLog
    show_progress: bool
    precision: str = "fp32"
    net: torch.nn.Module | None = None  # the model as the objective calls it: in DDP, compiled
    workers: int = 0
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
    scaler: torch.amp.GradScaler | None = None
    checkpoint: Checkpoint | None = None
    dataset: PairDataset | None = None
    sink: MetricSink | None = None

    @property
    def model(self) -> torch.nn.Module:
        return self.bundle.model

    @property
    def run_info(self) -> dict[str, Any]:
        return {"processes": self.dist.world_size, "backend": distributed.backend(), "precision": self.precision}


def train(
    bundle: ClipBundle,
    table: PairTable,
    objective: Objective,
    cfg: TrainConfig,
    out: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    extra_config: dict[str, Any] | None = None,
) -> ClipBundle:
    """Train ``bundle.model`` on ``table`` with ``objective``; returns the bundle, trained.

    ``out`` is the run folder: an existing one is continued with ``resume`` (a completed run
    is returned as is) and replaced with ``overwrite``; otherwise it is an error.
    """
    dist, device = distributed.setup(cfg.device)
    table = objective.training_table(table, cfg.seed)  # what the loop iterates (rvpt: its few-shot set)
    # Batches per epoch (and, before anything is written, a batch the ranks cannot share fails here).
    steps_per_epoch = len(distributed.EpochBatches(len(table), cfg.batch_size, 0, dist))
    out = dist.on_main(lambda: prepare_run_dir(out, resume=resume, overwrite=overwrite))  # locked by rank 0
    try:
        run = _Run(cfg, bundle, table, objective, out, dist, device, steps_per_epoch,
                   RunLog(out / "log.txt", quiet=not progress, enabled=dist.is_main), progress)
        if resume:
            _check_same_settings(out, cfg, objective)
        if is_complete(out):
            run.log(f"{out}: already complete; nothing to do")
            return _load_final(bundle, out)
        _prepare_model(run, extra_config)
        _prepare_optimiser(run)
        resumed = run.checkpoint.resume(run.log, cfg.seed)
        diverged = _after_divergence(run)
        _prepare_data(run)
        counts, warned, within = skip_counts(table, 0, 0), False, resumed.within  # counts: the last epoch's
        try:
            for epoch in range(resumed.epoch, cfg.epochs):
                record = _epoch(run, epoch, within or EpochProgress())
                within = None
                counts, warned = _end_epoch(run, epoch, record, warned)
                if cfg.max_steps and run.scheduler.last_epoch >= cfg.max_steps:
                    run.log(f"stopped after {run.scheduler.last_epoch} steps (max_steps)")
                    break
        finally:
            objective.close()  # background helpers (TA-Cleaner's subtext prefetch) end with the run
            if run.sink is not None:
                run.sink.close()
        if dist.is_main:
            objective.write_report(out)  # again: what it found during training, too
            write_json(out / "metadata.json", {
                "completed": True, "epochs": cfg.epochs, "steps": run.scheduler.last_epoch,
                "model": "model.safetensors", "model_name": bundle.model_name, "objective": objective.name,
                **run.run_info, "pairs": len(table), "skipped": counts, "truncated_captions": _truncated(run),
                **({"resumed_after_divergence": diverged} if diverged else {}),
                **run.objective.run_metadata(),
                "environment": environment(device, run.precision)})
            run.checkpoint.discard()  # after metadata.json: a run stopped between the two still resumes
            (out / DIVERGED).unlink(missing_ok=True)  # recorded in metadata.json
        dist.barrier()  # no rank reads the run folder before it is complete
        return bundle
    finally:
        if dist.is_main:
            release_run_dir(out)


def _after_divergence(run: _Run) -> dict[str, Any] | None:
    """In a run that diverged and resumes with a lower lr (``_check_same_settings`` allowed it):
    the schedule restored from the checkpoint scaled to the new rate, and what diverged."""
    path = run.out / DIVERGED
    if not path.is_file():
        return None
    diverged = read_json(path)
    sched = run.scheduler
    sched.base_lrs = [run.cfg.lr for _ in sched.base_lrs]
    for group, fn in zip(run.optimizer.param_groups, sched.lr_lambdas):
        group["initial_lr"] = run.cfg.lr
        group["lr"] = run.cfg.lr * fn(sched.last_epoch)
    run.log(f"resuming a run that diverged at step {diverged['step']} (lr {diverged['lr']:g}) with lr {run.cfg.lr:g}")
    return diverged


def _prepare_model(run: _Run, extra_config: dict[str, Any] | None) -> None:
    """The model on its device, the run's config.yaml, the objective set up, and the model as
    the objective calls it (DDP, compiled)."""
    cfg, dist, device, bundle = run.cfg, run.dist, run.device, run.bundle
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run.precision = resolve_precision(cfg.precision, device)
    model = bundle.model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    if dist.is_main:
        write_yaml(run.out / "config.yaml", {
            **_settings(cfg, run.objective), "model": bundle.model_name, "data": str(run.table.source),
            **(extra_config or {}), **({"distributed": run.run_info} if dist.enabled else {}),
        })
    run.objective.dist = dist
    run.objective.setup(bundle, run.table, cfg.seed)
    if dist.is_main:
        run.objective.write_report(run.out)
    # DDP wraps the model after the objective's setup (which may freeze parameters or copy the
    # starting model); objectives call the wrapper's forward, which DDP needs to sync gradients.
    net = (torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
           if dist.enabled else model)
    run.net = torch.compile(net) if cfg.compile else net
    if dist.rank:  # augmentations drawn in this process differ by rank (rank 0 keeps the seed's stream)
        torch.manual_seed(distributed.rank_seed(cfg.seed, dist.rank))
        random.seed(distributed.rank_seed(cfg.seed, dist.rank))


def _prepare_optimiser(run: _Run) -> None:
    """AdamW, the lr schedule over every step of the run, the fp16 loss scaler and the checkpoint
    that saves them."""
    cfg, device = run.cfg, run.device
    run.workers = cfg.num_workers if cfg.num_workers >= 0 else default_workers(device)
    total = run.steps_per_epoch * cfg.epochs
    # The fused kernel is ~10x faster than the per-tensor loop on CPU (8M parameters: 5 vs 60 ms).
    groups, fused = param_groups(run.model, cfg.weight_decay), device.type in ("cpu", "cuda")
    if cfg.optimizer == "sgd":
        run.optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, fused=fused)
    else:
        run.optimizer = torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, fused=fused)
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, schedule(cfg, total))
    # fp16 scales the loss (steps with inf/NaN gradients skipped); disabled, the scaler passes through.
    run.scaler = torch.amp.GradScaler(device.type, enabled=run.precision == "fp16")
    run.checkpoint = Checkpoint(run.out, run.bundle, run.optimizer, run.scheduler, run.scaler, run.objective, run.dist)


def _prepare_data(run: _Run) -> None:
    """The dataset, the metric sink and the run's first log line."""
    cfg, table, dist = run.cfg, run.table, run.dist
    # In process, images no larger than the model's input are decoded once and kept
    run.dataset = PairDataset(table, cache_bytes=IMAGE_CACHE_BYTES if run.workers == 0 else 0,
                              cache_max_pixels=run.bundle.image_size ** 2)
    run.sink = MetricSink(run.out, cfg.tensorboard) if dist.is_main else None
    run.log(f"training {run.bundle.model_name} on {len(table)} pairs ({table.source}) with {run.objective.name}: "
            f"{cfg.epochs} epochs x {run.steps_per_epoch} steps, device {run.device} ({run.precision})"
            + (f", {dist.world_size} processes ({distributed.backend()})" if dist.enabled else "")
            + (f"; left out when reading: {describe_skipped(_dropped(table))}" if _dropped(table) else "")
            + (f"; {_truncated(run)} captions longer than the tokenizer's context were cut" if _truncated(run) else ""))
    if _truncated(run) and dist.is_main:
        warnings.warn(f"{table.source}: {_truncated(run)} of {len(table)} captions are longer than the tokenizer's "
                      f"context and were cut to it; counted in {run.out / 'log.txt'} and metadata.json")


def _truncated(run: _Run) -> int:
    """Captions the objective's tokenizer cut (0 for an objective that keeps no token table)."""
    return int(getattr(run.objective, "truncated", 0) or 0)


def _loader(run: _Run, epoch: int, start: int) -> DataLoader:
    """The epoch's batches from its ``start``-th on (a resumed epoch skips those it had, unloaded).
    Workers decode, augment and preprocess (the objective's collate runs in them); they are made
    anew each epoch, so they see the objective's state for that epoch (TA-Cleaner's draw)."""
    epoch_seed = run.cfg.seed * 1000 + epoch  # same order on resume
    # The generator seeds the loader's workers (per rank); the batches' order is the sampler's.
    gen = torch.Generator().manual_seed(distributed.rank_seed(epoch_seed, run.dist.rank))
    sampler = distributed.EpochBatches(len(run.table), run.cfg.batch_size, epoch_seed, run.dist, start=start)
    return DataLoader(run.dataset, batch_sampler=sampler, generator=gen, collate_fn=run.objective.collate,
                      num_workers=run.workers, persistent_workers=False, pin_memory=run.device.type == "cuda")


def _epoch(run: _Run, epoch: int, at: EpochProgress) -> EpochProgress:
    """Train epoch ``epoch`` on from where ``at`` stands (a fresh record, or one a mid-epoch
    checkpoint saved); returns the record at the epoch's end."""
    cfg, dist = run.cfg, run.dist
    run.objective.on_epoch_start(epoch)
    loader = _loader(run, epoch, at.batches)
    t0 = time.perf_counter() - at.seconds
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
               disable=not (run.show_progress and dist.is_main))
    # Images keep the layout collate gave them unless channels-last is asked for: forcing NCHW
    # would change which convolution kernels run, and with them the numbers of every earlier run.
    image_format = torch.channels_last if cfg.channels_last else None
    run.net.train()
    for batch in bar:
        at.batches += 1
        size = _global_size(run, batch, at)
        if not size:
            continue
        losses, loss = _step(run, _to(batch, run.device, image_format))
        at.steps += 1
        at.seen += size
        stop = cfg.max_steps and run.scheduler.last_epoch >= cfg.max_steps
        at.add(losses, loss)
        rate = at.seen / (time.perf_counter() - t0)
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", pairs_s=f"{rate:.0f}")
        if at.steps % cfg.log_every == 0 and run.sink is not None:
            run.sink.step({
                "epoch": epoch + 1, "step": run.scheduler.last_epoch, "lr": run.scheduler.get_last_lr()[0],
                "loss": float(loss.detach()), **{k: float(v.detach()) for k, v in losses.items()},
                "logit_scale": float(run.model.logit_scale.detach().exp()), "pairs_per_s": rate,
            })
        if stop:
            break
        if cfg.save_every and run.scheduler.last_epoch % cfg.save_every == 0 and at.batches < run.steps_per_epoch:
            at.seconds = time.perf_counter() - t0
            run.checkpoint.save(epoch, within=at)
    bar.close()
    at.seconds = time.perf_counter() - t0
    return at


def _global_size(run: _Run, batch: dict[str, Any], at: EpochProgress) -> int:
    """The global batch's size, its skipped images counted into ``at``; 0 when it cannot train
    (a contrastive loss needs two pairs; DDP, one per rank). Tells the batch where this rank's
    rows sit in the global batch (``row_offset``)."""
    dist = run.dist
    # [rank][size, skipped, missing]
    sizes = dist.all_gather_ints([batch["size"], batch["skipped"], batch.get("missing", 0)], run.device)
    at.skipped += sum(s[1] for s in sizes)
    at.missing += sum(s[2] for s in sizes)
    size = sum(s[0] for s in sizes)
    if size < 2 or min(s[0] for s in sizes) == 0:
        return 0
    batch["row_offset"] = sum(s[0] for s in sizes[:dist.rank])
    return size


def _step(run: _Run, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One optimiser step on ``batch``: the objective's named losses and their sum, the loss."""
    cfg, optimizer, scaler = run.cfg, run.optimizer, run.scaler
    with autocast_for(run.precision, run.device):
        losses = run.objective.losses(run.net, batch)
    loss = sum(v for k, v in losses.items() if k.endswith("_loss"))
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if cfg.grad_clip > 0:
        scaler.unscale_(optimizer)  # clipping sees the true gradients
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.grad_clip)
    factor = run.objective.lr_factor()
    if factor != 1.0:  # this step only: the scheduler sets every step's rate afresh
        for group in optimizer.param_groups:
            group["lr"] *= factor
    lr = optimizer.param_groups[0]["lr"]
    scaler.step(optimizer)
    scaler.update()
    run.scheduler.step()
    with torch.no_grad():
        run.model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    _check_finite(run, loss, lr)
    return losses, loss


DIVERGED = "diverged.json"  # in a run folder a step's NaN stopped: where and at what rate (resume may lower lr)


def _check_finite(run: _Run, loss: torch.Tensor, lr: float) -> None:
    """Stop the run, on every rank, when the step's loss or any parameter after it is not finite
    (a learning rate far too high): one error naming the step and the rate, and nothing written
    as complete (the last epoch's checkpoint stays as it was)."""
    with torch.no_grad():
        loss_ok = torch.isfinite(loss.detach())
        ok = loss_ok & torch.isfinite(torch.nn.utils.get_total_norm(list(run.model.parameters()), foreach=True))
    good = bool(ok)
    if run.dist.enabled:  # a rank's NaN reaches every rank's weights through DDP; agree before stopping
        good = all(v[0] for v in run.dist.all_gather_ints([int(good)], run.device))
    if not good:
        what = "loss" if not bool(loss_ok) else "weights"
        if run.dist.is_main:
            write_json(run.out / DIVERGED, {"step": run.scheduler.last_epoch, "lr_at_step": lr, "lr": run.cfg.lr,
                                            "non_finite": what})
        raise TacleanerError(
            f"{run.out}: training diverged at step {run.scheduler.last_epoch} (learning rate {lr:.3g} at that step; "
            f"the run's lr {run.cfg.lr:g}): the {what} "
            f"became NaN or infinite; nothing was written as complete. Rerun with a lower --lr and --overwrite to "
            "start over, or --resume to continue from the last finished epoch")


def _end_epoch(run: _Run, epoch: int, at: EpochProgress, warned: bool) -> tuple[dict[str, int], bool]:
    """Log the epoch's summary and checkpoint it; returns its skip counts and whether a skip
    warning has been given in the run."""
    counts = skip_counts(run.table, at.skipped, at.missing)
    skips = _skips_seen(run.table, counts, at.steps, epoch, run.out, warn=run.dist.is_main and not warned)
    means = {k: v / at.steps for k, v in at.sums.items()}
    if run.sink is not None:
        run.sink.epoch({"epoch": epoch + 1, "summary": True, **means, "pairs": at.seen, "skipped_images": at.skipped,
                        **{f"skipped_{k}": v for k, v in counts.items()},
                        "seconds": at.seconds, "pairs_per_s": at.seen / at.seconds}, run.scheduler.last_epoch)
    note = run.objective.epoch_note()
    run.log(f"epoch {epoch + 1}/{run.cfg.epochs}: loss {means['loss']:.4f}, {at.seen / at.seconds:.3g} pairs/s{skips}"
            + (f"; {note}" if note else ""))
    run.checkpoint.save(epoch + 1)
    return counts, warned or bool(skips)


def skip_counts(table: PairTable, skipped: int, missing: int) -> dict[str, int]:
    """Samples skipped in an epoch by cause (:data:`SKIP_CAUSES`): those left out when the data
    was read and, of the ``skipped`` images that failed to load, the ``missing`` ones and the rest
    (that did not decode)."""
    counts = {cause: _dropped(table).get(cause, 0) for cause in SKIP_CAUSES}
    counts["missing_image"] += missing
    counts["unreadable_image"] += skipped - missing
    return counts


def _skips_seen(table: PairTable, counts: dict[str, int], steps: int, epoch: int, out: Path, warn: bool) -> str:
    """An epoch's skipped samples: an error when nothing was left to train on, one warning line
    when ``warn`` (once per run: the log has every epoch), and the log line's words for them."""
    if steps == 0:
        skipped = f": skipped {sum(counts.values())} samples ({describe_skipped(counts)})" if any(counts.values()) else ""
        raise TacleanerError(f"{table.source}: no usable batch in epoch {epoch + 1}{skipped}; nothing to train on")
    if not any(counts.values()):
        return ""
    if warn:
        total = len(table) + sum(_dropped(table).values())
        warnings.warn(f"{table.source}: skipped {sum(counts.values())} of {total} samples ({describe_skipped(counts)}); "
                      f"counted in {out / 'log.txt'}, metrics.jsonl and metadata.json")
    return f", skipped {sum(counts.values())} samples ({describe_skipped(counts)})"


def _dropped(table: PairTable) -> dict[str, int]:
    """What reading the data left out (any sequence pair works as a table: then nothing)."""
    return getattr(table, "dropped", None) or {}


def _to(value, device: torch.device, image_format: torch.memory_format | None):
    """A batch's tensors on ``device`` (those of a combination's parts too)."""
    if isinstance(value, list):
        return [_to(v, device, image_format) for v in value]
    if isinstance(value, dict):
        return {k: _to(v, device, image_format) for k, v in value.items()}
    if not torch.is_tensor(value):
        return value
    value = value.to(device, non_blocking=True)
    return value.contiguous(memory_format=image_format) if image_format is not None and value.ndim == 4 else value


def _load_final(bundle: ClipBundle, out: Path) -> ClipBundle:
    path = out / "model.safetensors"
    load_weights(bundle.model, read_state_dict(path), path, bundle.model_name)
    return bundle
