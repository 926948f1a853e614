"""Several processes, one training loop: what ``torchrun`` starts, and the collectives the
loop, the losses and evaluation need.

``torchrun --nproc_per_node N -m tacleaner clean ...`` starts N copies of the command; each
reads its rank from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``),
joins one process group (NCCL on CUDA, gloo on CPU) and takes one device. A plain
``tacleaner`` command is world size 1: every helper here is then the identity and no
collective runs, so single-process results are exactly those of the code without this module.

Conventions, chosen so that a config means the same thing on any number of processes:

- ``batch_size`` is the *global* batch; each rank takes ``batch_size / N`` consecutive pairs of
  the same global batches one process would see (:class:`EpochBatches`).
- Every rank gathers the embeddings of the whole global batch and computes the whole loss, as
  open_clip's ``ClipLoss(local_loss=False, gather_with_grad=True)`` does for the CLIP term
  (open_clip ``loss.py``, read for this module); here every term is computed that way, the
  in-modal and subtext terms included. :func:`gather_rows` carries each rank's gradient back to
  the rows it owns, summed over ranks; with DDP's mean over ranks the update is the one a single
  process with the global batch makes. Its own gather (not open_clip's) because ranks may hold
  different numbers of pairs when some images fail to decode.
- Rank 0 alone writes run folders, logs, metrics and checkpoints; an error it meets there is
  sent to the other ranks, which raise it too rather than wait forever.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence, TypeVar

import torch

from .environment import resolve_device
from .errors import SharedError, TacleanerError

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: rank, number of ranks, rank on this machine, and
    whether a launcher started it (then it trains through DDP and the collectives even as a
    job of one process: ``torchrun --nproc_per_node 1`` exercises the multi-process path)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False

    @property
    def enabled(self) -> bool:
        return self.launched

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 alone and hand its result (or its :class:`TacleanerError`,
        which every rank then raises) to every rank."""
        if not self.enabled:
            return fn()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except TacleanerError as e:
                box[0] = ("error", str(e))
            except Exception as e:  # noqa: BLE001 - the others must not wait for rank 0 forever
                box[0] = ("error", f"rank 0: {type(e).__name__}: {e}")
                torch.distributed.broadcast_object_list(box, src=0)
                raise
        torch.distributed.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "error":
            raise (TacleanerError if self.is_main else SharedError)(value)
        return value

    def all_gather_ints(self, values: Sequence[int], device: torch.device) -> list[list[int]]:
        """Every rank's ``values`` (same length on every rank), in rank order."""
        if not self.enabled:
            return [list(values)]
        local = torch.tensor(list(values), dtype=torch.int64, device=device)
        out = [torch.empty_like(local) for _ in range(self.world_size)]
        torch.distributed.all_gather(out, local)
        return torch.stack(out).cpu().tolist()

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(out, obj)
        return out

    def gather(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Each tensor's rows from every rank, concatenated in rank order (see :func:`gather_rows`)."""
        if not self.enabled:
            return list(tensors)
        return gather_rows(list(tensors), self)


SINGLE = Dist()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of ``rank``'s own random stream: rank 0 keeps ``seed`` (a one-process run's
    stream), every other rank gets one of its own."""
    return seed if rank == 0 else seed * 1_000_003 + rank


def from_env() -> Dist:
    """The job torchrun describes in the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``
    and the rendezvous address ``MASTER_ADDR``), or a single process."""
    if not ("WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ):
        return SINGLE
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise TacleanerError("WORLD_SIZE, RANK and LOCAL_RANK must be integers (torchrun sets them)") from None
    if world < 1 or not 0 <= rank < world:
        raise TacleanerError(f"RANK={rank} is not in a job of WORLD_SIZE={world}")
    return Dist(rank, world, local, launched=True)


def current() -> Dist:
    """This process's :class:`Dist` once :func:`setup` has joined the job (else a single process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return Dist(torch.distributed.get_rank(), torch.distributed.get_world_size(), from_env().local_rank,
                    launched=True)
    return SINGLE


def setup(device_name: str = "auto") -> tuple[Dist, torch.device]:
    """Join the job torchrun started (once per process) and pick this rank's device: with
    ``auto`` or ``cuda``, GPU ``LOCAL_RANK`` when CUDA is there, else the CPU; NCCL on CUDA,
    gloo on the CPU. A single process gets :data:`SINGLE` and ``device_name``'s device."""
    dist = from_env()
    device = resolve_device(device_name)
    if not dist.enabled:
        return SINGLE, device
    if device.type == "cuda":
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
        if device.index is None and local_world > torch.cuda.device_count():  # the same check on every process
            raise TacleanerError(f"{local_world} processes on this machine but {torch.cuda.device_count()} CUDA "
                                 "device(s): start torchrun with --nproc_per_node "
                                 f"{torch.cuda.device_count()} at most")
        if device.index is None:
            device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend, device_id=device if device.type == "cuda" else None)
    return current(), device


def backend() -> str | None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return str(torch.distributed.get_backend())
    return None


class _GatherRows(torch.autograd.Function):
    """All-gather of a ``[n_r, ...]`` tensor whose ``n_r`` may differ by rank. Backward: the
    gradients every rank computed for the whole gathered tensor are summed (all-reduce) and
    each rank keeps those of its own rows."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: tuple[int, ...], rank: int) -> torch.Tensor:
        ctx.sizes, ctx.rank = sizes, rank
        widest = max(sizes)
        padded = x.new_zeros((widest,) + tuple(x.shape[1:]))
        padded[:len(x)] = x
        parts = [torch.empty_like(padded) for _ in sizes]
        torch.distributed.all_gather(parts, padded.contiguous())
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad)
        start = sum(ctx.sizes[:ctx.rank])
        return grad[start:start + ctx.sizes[ctx.rank]], None, None


def gather_rows(tensors: list[torch.Tensor], dist: Dist) -> list[torch.Tensor]:
    """Gather several tensors at once: one collective for their row counts, then tensors of one
    dtype and row shape travel together (one all-gather, and one all-reduce in backward).
    Gradients flow to the local rows, so every rank can compute the loss of the global batch."""
    device = tensors[0].device
    counts = dist.all_gather_ints([len(t) for t in tensors], device)  # [rank][tensor]
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.dtype, tuple(t.shape[1:])), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(tensors)
    for members in groups.values():
        local = torch.cat([tensors[i] for i in members]) if len(members) > 1 else tensors[members[0]]
        sizes = tuple(sum(counts[r][i] for i in members) for r in range(dist.world_size))
        whole = _GatherRows.apply(local, sizes, dist.rank)
        # ``whole`` is rank 0's members, then rank 1's, ...: cut it back into the tensors.
        pieces: dict[int, list[torch.Tensor]] = {i: [] for i in members}
        at = 0
        for r in range(dist.world_size):
            for i in members:
                pieces[i].append(whole[at:at + counts[r][i]])
                at += counts[r][i]
        for i in members:
            out[i] = torch.cat(pieces[i])
    return out  # type: ignore[return-value]


class EpochBatches:
    """This rank's batches of one epoch: the global batches of ``batch_size`` pairs cut from
    one permutation of the dataset, each split into ``world_size`` consecutive parts (rank 0's
    first), so that the ranks' parts, gathered in rank order, are the batch one process sees.

    The permutation is the one ``DataLoader(shuffle=True, generator=torch.Generator()
    .manual_seed(seed))`` draws (it takes one number from the generator for its workers'
    seeds before shuffling); runs made before multi-process training keep their data order.
    With ``len`` at most ``batch_size`` the epoch is one batch of everything; otherwise an
    incomplete last batch is dropped. ``start`` skips the epoch's first batches (a run resumed
    mid-epoch); ``len`` counts the batches still to come.
    """

    def __init__(self, n: int, batch_size: int, seed: int, dist: Dist = SINGLE, start: int = 0) -> None:
        if batch_size % dist.world_size:
            raise TacleanerError(f"batch_size {batch_size} is the global batch; it must be a multiple of the "
                                 f"{dist.world_size} processes")
        self.n, self.batch_size, self.seed, self.dist, self.start = n, batch_size, seed, dist, start

    @property
    def batches(self) -> int:
        """Batches in a whole epoch."""
        return self.n // self.batch_size if self.n > self.batch_size else 1

    def __len__(self) -> int:
        return max(0, self.batches - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator().manual_seed(self.seed)
        torch.empty((), dtype=torch.int64).random_(generator=g)  # what the DataLoader's iterator draws first
        perm = torch.randperm(self.n, generator=g).tolist()
        size = min(self.batch_size, self.n)
        w, r = self.dist.world_size, self.dist.rank
        for b in range(self.start, self.batches):
            batch = perm[b * size:(b + 1) * size]
            lo, hi = len(batch) * r // w, len(batch) * (r + 1) // w
            yield batch[lo:hi]


def shard(n: int, dist: Dist) -> range:
    """This rank's consecutive share of ``n`` items (evaluation), in rank order."""
    return range(n * dist.rank // dist.world_size, n * (dist.rank + 1) // dist.world_size)
