"""Training objectives. Pretraining, backdoor implanting and every fine-tuning defense run the
same training loop; what differs is the objective, which builds its batch from raw samples
and returns a dict of named losses (the loop sums every ``*_loss`` entry; any other entry is
a measure it logs and averages per epoch without adding it, such as TA-Cleaner's ``ta_masked``).

Objectives encode through the model's forward (:func:`features`), so that the same code runs
on a bare model and on one wrapped in DDP, and pass every embedding their loss compares across
the batch through :meth:`ClipObjective.gather`: under several processes each rank then computes the
loss of the global batch (:mod:`tacleaner.distributed`); in one process it is the identity."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch
from open_clip.loss import ClipLoss

from ..data.pairs import PairTable
from ..distributed import SINGLE, Dist
from ..errors import TacleanerError
from ..models import ClipBundle


class Objective:
    """What the training loop calls: a batch from raw samples (:meth:`collate`), the named
    losses of a batch (:meth:`losses`), and the run's lifecycle around them, each a no-op
    unless a defense needs it. A defense is a :class:`ClipObjective`; a combination of
    defenses (:mod:`tacleaner.defenses.compose`) is an objective made of several."""

    name: ClassVar[str] = ""
    relative_cost: ClassVar[float] = 1.0  # time per pair against plain fine-tuning; orders parallel stages
    description: ClassVar[str] = ""
    dist: ClassVar[Dist] = SINGLE  # the training loop sets each objective's own (not a knob)
    # Training settings this objective's authors use, applied under the user's own (config file,
    # command line): e.g. PAR's learning-rate schedule.
    train_defaults: ClassVar[dict[str, Any]] = {}
    # Parameters an experiment fills from its world's data files when the config leaves them
    # unset: parameter -> data key (``classes``, ``zeroshot_val``, ...).
    world_files: ClassVar[dict[str, str]] = {}
    # False for an objective that trains on data of its own (training_table): no combination
    combinable: ClassVar[bool] = True

    def setup(self, bundle: ClipBundle, table: PairTable, seed: int) -> None:
        """Called once before training with the model and the whole dataset."""

    def lr_factor(self) -> float:
        """What the current step's learning rate is multiplied by (SafeCLIP's low-rate CLIP
        warm-up epoch); 1 for every other objective."""
        return 1.0

    def training_table(self, table: PairTable, seed: int) -> PairTable:
        """The data the loop trains on: ``table`` itself, unless the objective trains on data of
        its own (RVPT: K labelled images per class), drawn with ``seed``."""
        return table

    def check_ready(self) -> None:
        """Raise a one-line error for what setup would need and lacks (a file, a setting), so
        that a command fails before it makes its run folder."""

    def write_report(self, out) -> None:
        """Write what the objective found in its setup into the run folder ``out`` (rank 0)."""

    def state(self) -> dict[str, Any] | None:
        """What the objective learned during training that a resumed run needs (tensors and
        plain values; saved in the run's checkpoint), or None."""
        return None

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` when a run resumes (after :meth:`setup`)."""

    def on_epoch_start(self, epoch: int) -> None:
        """Prepare what this epoch's batches need (TA-Cleaner's subtexts, inverted triggers)."""

    def close(self) -> None:
        """Called when training ends (or fails): stop any background work."""

    def epoch_note(self) -> str:
        """What the run log's line for the epoch just prepared adds about this objective (words,
        or "")."""
        return ""

    def run_metadata(self) -> dict[str, Any]:
        """What ``metadata.json`` of the finished run records about this objective."""
        return {}

    def collate(self, samples: list[dict]) -> dict[str, Any]:
        """Turn dataset samples into a batch with its ``size``, ``skipped`` and ``missing`` counts."""
        raise NotImplementedError

    def losses(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Named losses of ``batch``: the loop sums every ``*_loss`` entry and logs the others."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The objective's parameters, as its run folder's config.yaml records them."""
        raise NotImplementedError


@dataclass
class ClipObjective(Objective):
    """What every defense shares: image-caption batches and the CLIP contrastive loss over
    them, weighed by ``w_clip``; a defense adds its own terms (``finetune`` adds none)."""

    w_clip: float = 1.0

    def __post_init__(self) -> None:
        check_weights(self.name, asdict(self))

    def setup(self, bundle: ClipBundle, table: PairTable, seed: int) -> None:
        self.bundle = bundle
        self.tokenizer = bundle.tokenizer
        self._clip_loss = ClipLoss()
        # Captions are fixed, so tokenise them once rather than in every batch of every epoch.
        self.tokens = tokenize_all(bundle.tokenizer, table.captions)
        self.truncated = count_truncated(bundle.tokenizer, self.tokens)

    def collate(self, samples: list[dict]) -> dict[str, Any]:
        """Turn dataset samples into a batch, dropping (and counting) unreadable images."""
        good = [s for s in samples if s["image"] is not None]
        missing = sum(s.get("skip") == "missing_image" for s in samples)
        batch: dict[str, Any] = {"skipped": len(samples) - len(good), "missing": missing, "size": len(good)}
        if good:
            batch["index"] = torch.tensor([s["index"] for s in good])
            batch["images"] = self.bundle.images_to_tensor(self.fitted(good))
            batch["texts"] = batch_tokens(self.tokens, batch["index"])
        return batch

    def fitted(self, samples: list[dict]) -> list:
        """The samples' images at the model's resolution (``ClipBundle.fit``), made once per
        sample and kept in it: a second view or a combined defense's other part reuses them
        instead of resizing the full image again (the resize is most of a large JPEG's cost)."""
        for s in samples:
            if "fitted" not in s:
                s["fitted"] = self.bundle.fit(s["image"])
        return [s["fitted"] for s in samples]

    def gather(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """The global batch's rows of each tensor (this rank's rows keep their gradients)."""
        return self.dist.gather(*tensors)

    def clip_loss(self, image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        return self._clip_loss(image_features, text_features, scale)

    def params(self) -> dict[str, Any]:
        return asdict(self)


def check_weights(name: str, params: dict[str, Any]) -> None:
    """Every loss weight (``w_clip``, ``w_inmodal``, ``w_ta``, ``w_dist``, ...) is >= 0."""
    for key, value in params.items():
        if key.startswith("w_") and not value >= 0:
            raise TacleanerError(f"{name} {key}={value}: loss weights are >= 0")


def features(model: torch.nn.Module, images: torch.Tensor | None,
             texts: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised image and text embeddings and the exponentiated logit scale, from one call
    of the model's forward (open_clip returns a tuple or, with ``output_dict``, a dict)."""
    out = model(images, texts)
    if isinstance(out, dict):
        return out["image_features"], out["text_features"], out["logit_scale"]
    return out[0], out[1], out[2]


def tokenize_all(tokenizer, texts, chunk: int = 4096) -> torch.Tensor:
    """Token ids for many texts (any sequence of strings) as one int32 tensor, filled chunk by
    chunk: half the memory of int64 (77-token contexts: 308 MB per million captions), no
    second copy at the end. Batches take their rows and widen them (:func:`batch_tokens`)."""
    out = None
    for i in range(0, len(texts), chunk):
        part = tokenizer(list(texts[i:i + chunk]))
        if out is None:
            out = torch.empty((len(texts), part.shape[1]), dtype=torch.int32)
        out[i:i + len(part)] = part
    return out if out is not None else torch.empty((0, 0), dtype=torch.int32)


def count_truncated(tokenizer, tokens: torch.Tensor) -> int:
    """Captions the tokenizer cut at its context length: rows whose last position is not padding
    (the padding id is what an empty text ends with; a caption of exactly the context length
    counts too, which is rare)."""
    if not len(tokens):
        return 0
    pad = int(tokenizer([""])[0, -1])
    return int((tokens[:, -1] != pad).sum())


def batch_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` of a :func:`tokenize_all` table as the int64 ids the text tower takes."""
    return tokens[index].long()
