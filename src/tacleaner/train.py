"""The one training loop: pretraining, backdoor implanting and every defense run through it.

AdamW with no weight decay on gains, biases, embeddings and the logit scale; linear warm-up
then cosine decay, counted in optimizer steps; the logit scale clamped to ln(100) as in CLIP;
bf16 autocast on CUDA. After every epoch the run folder gets an atomically written
``model.safetensors`` and ``train_state.pt`` (everything needed to resume), and the loop
appends to ``metrics.jsonl``. A run folder marks completion in ``metadata.json``.

Under ``torchrun`` the same loop runs on every rank with the model in DDP (see
:mod:`tacleaner.distributed`): ``batch_size`` stays the global batch, every rank computes the
loss of the whole batch from gathered embeddings, and rank 0 alone writes the run folder.
"""
from __future__ import annotations

import math
import random
import time
import warnings
from dataclasses import asdict
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
from .fileio import append_line, atomic_path, prepare_run_dir, read_json, release_run_dir, write_json, write_yaml
from .metrics_log import MetricSink
from .models import ClipBundle, save_model
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


class RunLog:
    """Lines to stderr (through tqdm) and to the run folder's ``log.txt`` (rank 0 only)."""

    def __init__(self, path: Path, quiet: bool = False, enabled: bool = True) -> None:
        self.path, self.quiet, self.enabled = path, quiet, enabled

    def __call__(self, msg: str) -> None:
        if not self.enabled:
            return
        append_line(self.path, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}")
        if not self.quiet:
            tqdm.write(msg)


def is_complete(out: str | Path) -> bool:
    meta = Path(out) / "metadata.json"
    return meta.is_file() and bool(read_json(meta).get("completed"))


def _settings(cfg: TrainConfig, objective: Objective) -> dict[str, Any]:
    """The training and objective settings a run folder's config.yaml records."""
    return {"train": asdict(cfg), "objective": {"name": objective.name, **objective.params()}}


def _check_same_settings(out: Path, cfg: TrainConfig, objective: Objective) -> None:
    """--resume continues a run with the settings it was started with: a changed setting would
    otherwise be silently ignored (a complete run) or mix two schedules (an unfinished one)."""
    saved_path = out / "config.yaml"
    if not saved_path.is_file():
        return
    import yaml

    saved = yaml.safe_load(saved_path.read_text(encoding="utf-8")) or {}
    now = _settings(cfg, objective)
    # Settings that do not change the result may differ: where it runs and how it reports.
    free = {"device", "num_workers", "log_every", "save_every", "tensorboard", "threads", "compile"}
    for part in ("train", "objective"):
        before = saved.get(part) or {}
        for key, value in now[part].items():
            if key in before and key not in free and before[key] != (list(value) if isinstance(value, tuple) else value):
                raise TacleanerError(f"{out}: was started with {part} setting {key}={before[key]!r}, not {value!r}; "
                                     "--resume continues a run with its own settings (start a new --out to change them)")


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
    # Batches per epoch (and, before anything is written, a batch the ranks cannot share fails here).
    steps_per_epoch = len(distributed.EpochBatches(len(table), cfg.batch_size, 0, dist))
    out = dist.on_main(lambda: prepare_run_dir(out, resume=resume, overwrite=overwrite))  # locked by rank 0
    try:
        return _train_locked(bundle, table, objective, cfg, out, dist, device, steps_per_epoch, resume=resume,
                             progress=progress, extra_config=extra_config)
    finally:
        if dist.is_main:
            release_run_dir(out)


def _train_locked(bundle: ClipBundle, table: PairTable, objective: Objective, cfg: TrainConfig, out: Path,
                  dist: distributed.Dist, device: torch.device, steps_per_epoch: int, *, resume: bool,
                  progress: bool, extra_config: dict[str, Any] | None) -> ClipBundle:
    """:func:`train` once the run folder is prepared and locked."""
    log = RunLog(out / "log.txt", quiet=not progress, enabled=dist.is_main)
    if resume:
        _check_same_settings(out, cfg, objective)
    if is_complete(out):
        log(f"{out}: already complete; nothing to do")
        return _load_final(bundle, out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    precision = resolve_precision(cfg.precision, device)
    model = bundle.model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    run_info = {"processes": dist.world_size, "backend": distributed.backend(), "precision": precision}
    if dist.is_main:
        write_yaml(out / "config.yaml", {
            **_settings(cfg, objective), "model": bundle.model_name, "data": str(table.source), **(extra_config or {}),
            **({"distributed": run_info} if dist.enabled else {}),
        })
    objective.dist = dist
    objective.setup(bundle, table, cfg.seed)
    if dist.is_main:
        objective.write_report(out)
    # DDP wraps the model after the objective's setup (which may freeze parameters or copy the
    # starting model); objectives call the wrapper's forward, which DDP needs to sync gradients.
    net = (torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
           if dist.enabled else model)
    if cfg.compile:
        net = torch.compile(net)
    if dist.rank:  # augmentations drawn in this process differ by rank (rank 0 keeps the seed's stream)
        torch.manual_seed(distributed.rank_seed(cfg.seed, dist.rank))
        random.seed(distributed.rank_seed(cfg.seed, dist.rank))
    workers = cfg.num_workers if cfg.num_workers >= 0 else default_workers(device)
    # Workers decode, augment and preprocess (the objective's collate runs in them); they are made
    # anew each epoch, so they see the objective's state for that epoch (TA-Cleaner's draw).
    loader_kw = dict(collate_fn=objective.collate, num_workers=workers, persistent_workers=False,
                     pin_memory=device.type == "cuda")
    total = steps_per_epoch * cfg.epochs
    # The fused kernel is ~10x faster than the per-tensor loop on CPU (8M parameters: 5 vs 60 ms).
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                  eps=cfg.eps, fused=device.type in ("cpu", "cuda"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(cfg, total))
    # fp16 scales the loss (steps with inf/NaN gradients skipped); disabled, the scaler passes through.
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    start_epoch, within = _maybe_resume(out, model, optimizer, scheduler, log, dist, cfg.seed, scaler, objective)
    autocast = autocast_for(precision, device)
    # Images keep the layout collate gave them unless channels-last is asked for: forcing NCHW
    # would change which convolution kernels run, and with them the numbers of every earlier run.
    image_format = torch.channels_last if cfg.channels_last else None
    # In process, images no larger than the model's input are decoded once and kept
    dataset = PairDataset(table, cache_bytes=IMAGE_CACHE_BYTES if workers == 0 else 0,
                          cache_max_pixels=bundle.image_size ** 2)
    sink = MetricSink(out, cfg.tensorboard) if dist.is_main else None
    log(f"training {bundle.model_name} on {len(table)} pairs ({table.source}) with {objective.name}: "
        f"{cfg.epochs} epochs x {steps_per_epoch} steps, device {device} ({precision})"
        + (f", {dist.world_size} processes ({distributed.backend()})" if dist.enabled else "")
        + (f"; left out when reading: {describe_skipped(_dropped(table))}" if _dropped(table) else ""))
    counts, warned = skip_counts(table, 0, 0), False  # the last epoch's, for metadata.json
    try:
        for epoch in range(start_epoch, cfg.epochs):
            objective.on_epoch_start(epoch)
            epoch_seed = cfg.seed * 1000 + epoch  # same order on resume
            # The generator seeds the loader's workers (per rank); the batches' order is the sampler's.
            gen = torch.Generator().manual_seed(distributed.rank_seed(epoch_seed, dist.rank))
            # Mid-epoch resume: the epoch's first batches are skipped (not loaded) and its sums go on.
            done = within.pop("batches") if within else 0
            loader = DataLoader(dataset, batch_sampler=distributed.EpochBatches(len(table), cfg.batch_size,
                                                                                 epoch_seed, dist, start=done),
                                generator=gen, **loader_kw)
            sums: dict[str, float] = within.pop("sums") if within else {}
            seen, skipped, steps, before = ((within["seen"], within["skipped"], within["steps"], within["seconds"])
                                            if within else (0, 0, 0, 0.0))
            missing = within.get("missing", 0) if within else 0  # of the skipped images, those not there
            within = None
            t0 = time.perf_counter() - before
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                       disable=not (progress and dist.is_main))
            net.train()
            for batch in bar:
                done += 1
                # [rank][size, skipped, missing]
                sizes = dist.all_gather_ints([batch["size"], batch["skipped"], batch.get("missing", 0)], device)
                skipped += sum(s[1] for s in sizes)
                missing += sum(s[2] for s in sizes)
                size = sum(s[0] for s in sizes)
                if size < 2 or min(s[0] for s in sizes) == 0:  # a contrastive loss needs two pairs; DDP, one per rank
                    continue
                batch["row_offset"] = sum(s[0] for s in sizes[:dist.rank])  # this rank's rows in the global batch
                batch = {k: _to(v, device, image_format) for k, v in batch.items()}
                with autocast:
                    losses = objective.losses(net, batch)
                loss = sum(v for k, v in losses.items() if k.endswith("_loss"))
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip > 0:
                    scaler.unscale_(optimizer)  # clipping sees the true gradients
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                with torch.no_grad():
                    model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
                steps += 1
                seen += size
                stop = cfg.max_steps and scheduler.last_epoch >= cfg.max_steps
                for k, v in losses.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach())
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
                rate = seen / (time.perf_counter() - t0)
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", pairs_s=f"{rate:.0f}")
                if steps % cfg.log_every == 0 and sink is not None:
                    sink.step({
                        "epoch": epoch + 1, "step": scheduler.last_epoch, "lr": scheduler.get_last_lr()[0],
                        "loss": float(loss.detach()), **{k: float(v.detach()) for k, v in losses.items()},
                        "logit_scale": float(model.logit_scale.detach().exp()), "pairs_per_s": rate,
                    })
                if stop:
                    break
                if cfg.save_every and scheduler.last_epoch % cfg.save_every == 0 and done < steps_per_epoch:
                    _save_epoch(out, bundle, optimizer, scheduler, epoch, dist, scaler, objective, within={
                        "batches": done, "sums": sums, "seen": seen, "skipped": skipped, "missing": missing,
                        "steps": steps,
                        "seconds": time.perf_counter() - t0})
            bar.close()
            counts = skip_counts(table, skipped, missing)
            skips = _skips_seen(table, counts, steps, epoch, out, warn=dist.is_main and not warned)
            warned = warned or bool(skips)
            elapsed = time.perf_counter() - t0
            means = {k: v / steps for k, v in sums.items()}
            if sink is not None:
                sink.epoch({"epoch": epoch + 1, "summary": True, **means, "pairs": seen, "skipped_images": skipped,
                            **{f"skipped_{k}": v for k, v in counts.items()},
                            "seconds": elapsed, "pairs_per_s": seen / elapsed}, scheduler.last_epoch)
            log(f"epoch {epoch + 1}/{cfg.epochs}: loss {means['loss']:.4f}, {seen / elapsed:.3g} pairs/s{skips}")
            _save_epoch(out, bundle, optimizer, scheduler, epoch + 1, dist, scaler, objective)
            if cfg.max_steps and scheduler.last_epoch >= cfg.max_steps:
                log(f"stopped after {scheduler.last_epoch} steps (max_steps)")
                break
    finally:
        objective.close()  # background helpers (TA-Cleaner's subtext prefetch) end with the run
        if sink is not None:
            sink.close()
    if dist.is_main:
        objective.write_report(out)  # again: what it found during training, too
        write_json(out / "metadata.json", {"completed": True, "epochs": cfg.epochs, "steps": scheduler.last_epoch,
                                           "model": "model.safetensors", "model_name": bundle.model_name,
                                           "objective": objective.name, **run_info, "pairs": len(table),
                                           "skipped": counts,
                                           "environment": environment(device, precision)})
    dist.barrier()  # no rank reads the run folder before it is complete
    return bundle


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
    if not torch.is_tensor(value):
        return value
    value = value.to(device, non_blocking=True)
    return value.contiguous(memory_format=image_format) if image_format is not None and value.ndim == 4 else value


def _save_epoch(out: Path, bundle: ClipBundle, optimizer, scheduler, epoch: int,
                dist: distributed.Dist = distributed.SINGLE, scaler=None, objective: Objective | None = None,
                within: dict | None = None) -> None:
    """Checkpoint after ``epoch`` complete epochs and, with ``within``, partway through the next
    (batches consumed, the epoch's running sums)."""
    # Every rank's random state (its augmentations), saved by rank 0 with the rest.
    rngs = dist.all_gather_object((torch.get_rng_state(), random.getstate()))
    if not dist.is_main:
        return
    # The resume state holds its own copy of the weights, so the pair can never disagree.
    state = {"epoch": epoch, "model": bundle.model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "torch_rng": rngs[0][0], "python_rng": rngs[0][1]}
    if scaler is not None and scaler.is_enabled():
        state["grad_scaler"] = scaler.state_dict()
    if within is not None:
        state["within_epoch"] = within
    own = objective.state() if objective is not None else None
    if own is not None:  # what the objective found during training (the invert defense's triggers)
        state["objective"] = own
    if dist.enabled:
        state["rank_torch_rng"] = [r[0] for r in rngs]
        state["rank_python_rng"] = [r[1] for r in rngs]
    with atomic_path(out / "train_state.pt") as tmp:
        torch.save(state, tmp)
    save_model(bundle, out / "model.safetensors", epoch=epoch)


def _maybe_resume(out: Path, model, optimizer, scheduler, log: RunLog,
                  dist: distributed.Dist = distributed.SINGLE, seed: int = 0,
                  scaler=None, objective: Objective | None = None) -> tuple[int, dict | None]:
    """Load the run's checkpoint: the epochs complete and, for one saved mid-epoch, where in the
    next epoch it stopped."""
    path = out / "train_state.pt"
    if not path.is_file():
        return 0, None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated or corrupt file raises many kinds
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise TacleanerError(f"{path}: unreadable resume state ({first}); remove it to restart the run from its "
                             "last model, or start a new --out") from None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and scaler.is_enabled() and "grad_scaler" in state:
        scaler.load_state_dict(state["grad_scaler"])
    if objective is not None and state.get("objective") is not None:
        objective.load_state(state["objective"])
    ranks = state.get("rank_torch_rng") or [state["torch_rng"]]
    if dist.rank < len(ranks):  # this rank's own stream
        torch.set_rng_state(ranks[dist.rank])
        random.setstate((state.get("rank_python_rng") or [state["python_rng"]])[dist.rank])
    else:  # a rank the saved run did not have: a fresh stream of its own
        fresh = distributed.rank_seed(seed, dist.rank) * 1_000 + int(state["epoch"])
        torch.manual_seed(fresh)
        random.seed(fresh)
    within = state.get("within_epoch")
    where = (f"in epoch {state['epoch'] + 1} after {within['batches']} batches" if within
             else f"after epoch {state['epoch']}")
    log(f"resuming {where}"
        + (f" on {dist.world_size} processes (saved by {len(ranks)})" if len(ranks) != dist.world_size else ""))
    return int(state["epoch"]), (dict(within) if within else None)


def _load_final(bundle: ClipBundle, out: Path) -> ClipBundle:
    from .models.checkpoint import load_weights, read_state_dict

    path = out / "model.safetensors"
    load_weights(bundle.model, read_state_dict(path), path, bundle.model_name)
    return bundle
