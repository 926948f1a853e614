"""A small StegaStamp-style encoder/decoder pair, the engine of the SSBA attack.

SSBA (Li et al., ICCV 2021) hides a fixed bit string in every poisoned image with a
StegaStamp encoder: the trigger is the encoder's residual, small and different for every
image. No pretrained StegaStamp can be had offline, so we train a small pair ourselves on the
images being poisoned: the encoder adds a bounded residual to an image given a bit vector, the
decoder reads the bits back from the 8-bit image, and a penalty keeps the residual small.

The bits become a small map, upsampled to a TILE x TILE pixel tile that is repeated over the
image; the encoder's convolutions blend it with the image, so the residual follows the image's
content. The decoder averages its features over all whole tiles and reads the bits from the
averaged tile. The code thus sits at a fixed pixel scale: both networks are fully
convolutional, an encoder trained on 32 px images or crops applies to images of any size, and
bigger images carry more copies of the code. The encoder is saved as safetensors with its
architecture in the metadata, so a user-supplied file is rebuilt without executing code.

Everything runs on the CPU in one thread: the tensors are small (so more threads mostly add
synchronisation, and lose badly on a busy machine), and a fixed thread count keeps the float
arithmetic, hence the rounded trigger bytes, the same however many cores the machine has.
"""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ..errors import TacleanerError
from ..fileio import atomic_path
from .stealth import psnr

META_KEY = "tacleaner"
ENCODER_KIND = "ssba-encoder"
# The bit vector becomes a MAP_SIDE x MAP_SIDE map, and the decoder reads a map of the same
# grid. A code tied to positions in the tile (StegaStamp's decoder, too, ends in a dense,
# position-aware layer) learns in a few hundred steps; with global average pooling alone the
# pair must first discover a texture code, which took far longer than our CPU budget in trials.
MAP_SIDE = 8
MAP_CHANNELS = 8
CELL = 4  # pixels per map cell: the decoder's total stride, so a tile is MAP_SIDE features
TILE = MAP_SIDE * CELL  # the code repeats every TILE pixels
HIGH_PASS_GAIN = 16.0
MAX_TRAIN_SIDE = 64  # larger training images are randomly cropped to this, which keeps training cheap


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture hyperparameters: everything needed to rebuild an encoder from its weights.
    ``max_residual`` is in pixel units (8 = 8/255)."""

    n_bits: int = 32
    width: int = 16
    max_residual: float = 8.0

    def check(self, where: str = "ssba") -> None:
        if self.n_bits < 1:
            raise TacleanerError(f"{where} n_bits must be >= 1, got {self.n_bits}")
        if self.width < 1:
            raise TacleanerError(f"{where} width must be >= 1, got {self.width}")
        if not 0 < self.max_residual <= 255:
            raise TacleanerError(f"{where} max_residual must be in (0, 255] (pixel units), got {self.max_residual}")


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


class Encoder(nn.Module):
    """(images in [0, 1], bits in {0, 1}) -> residuals in [-max_residual, max_residual] / 255."""

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.secret = nn.Linear(cfg.n_bits, MAP_CHANNELS * MAP_SIDE * MAP_SIDE)
        w = cfg.width
        self.body = nn.Sequential(
            _conv(3 + MAP_CHANNELS, w), nn.LeakyReLU(0.2),
            _conv(w, w), nn.LeakyReLU(0.2),
            _conv(w, w), nn.LeakyReLU(0.2),
            _conv(w, 3),
        )

    def forward(self, images: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        # Bits as -1/+1, so that a zero bit drives the map as much as a one bit does.
        secret = self.secret(bits.float() * 2 - 1).view(n, MAP_CHANNELS, MAP_SIDE, MAP_SIDE)
        # Upsample to one tile (circular padding keeps the repeated tiles seamless).
        secret = F.interpolate(F.pad(secret, (1, 1, 1, 1), mode="circular"), scale_factor=CELL,
                               mode="bilinear", align_corners=False)[:, :, CELL:-CELL, CELL:-CELL]
        secret = secret.repeat(1, 1, -(-h // TILE), -(-w // TILE))[:, :, :h, :w]
        out = self.body(torch.cat([images * 2 - 1, secret], dim=1))
        return torch.tanh(out) * (self.cfg.max_residual / 255)


class Decoder(nn.Module):
    """Images in [0, 1] -> n_bits logits, at any image size: the features of all whole tiles
    are averaged into one MAP_SIDE x MAP_SIDE tile before the linear read-out.

    The convolutions see the image minus its local 3x3 mean, amplified HIGH_PASS_GAIN times.
    Natural images are locally smooth while the residual is not, so this leaves mostly the
    residual, at about unit scale; in trials it made the decoder find the code several times
    sooner and far more reliably than the raw image did (or the raw image scaled up).
    """

    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        w = cfg.width
        self.body = nn.Sequential(
            _conv(3, w), nn.LeakyReLU(0.2),
            _conv(w, w, stride=2), nn.LeakyReLU(0.2),
            _conv(w, 2 * w, stride=2), nn.LeakyReLU(0.2),
        )
        self.head = nn.Linear(2 * w * MAP_SIDE * MAP_SIDE, cfg.n_bits)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        local_mean = F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        features = self.body((images - local_mean) * HIGH_PASS_GAIN)
        # An image smaller than a tile is zero-padded to one; a partial tile at the right or
        # bottom edge is left out.
        n, c, h, w = features.shape
        th, tw = max(1, h // MAP_SIDE), max(1, w // MAP_SIDE)
        features = F.pad(features, (0, max(0, MAP_SIDE - w), 0, max(0, MAP_SIDE - h)))
        features = features[:, :, :th * MAP_SIDE, :tw * MAP_SIDE].reshape(n, c, th, MAP_SIDE, tw, MAP_SIDE)
        features = features.mean(dim=(2, 4))
        return self.head(features.flatten(1))


@contextmanager
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    # Initialise under a private RNG state: building a network (even just to load weights
    # into it) must not move the global torch RNG that other code seeds.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def secret_bits(n_bits: int, pattern_seed: int) -> np.ndarray:
    """The attack's fixed bit string, a pure function of the pattern seed."""
    return np.random.default_rng([pattern_seed, 0x55BA]).integers(0, 2, size=n_bits).astype(np.uint8)


def quantise(x: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels in the forward pass, identity in the backward pass: the decoder
    trains on what a saved PNG holds, while gradients still reach the encoder."""
    return x + (torch.round(x * 255) / 255 - x).detach()


def apply_encoder(encoder: Encoder, image: np.ndarray, bits: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """``image`` (HxWx3 uint8) plus ``strength`` x its residual for ``bits``, rounded and
    clipped to uint8, at the image's own resolution."""
    with torch.no_grad(), one_thread():
        x = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]
        residual = encoder(x / 255, torch.from_numpy(np.asarray(bits))[None]) * (255 * strength)
        out = (x + residual).round().clamp(0, 255)
    return out[0].permute(1, 2, 0).to(torch.uint8).numpy()


def training_crops(images: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """One random square crop of each HxWx3 uint8 image, stacked as Nx3xSxS: S is the shorter
    side of the most common image size, at most MAX_TRAIN_SIDE. Crops keep the pixel scale at
    which the code is written; smaller images are first enlarged to cover a crop."""
    if not images:
        raise TacleanerError("ssba: no images to train the encoder on")
    side = min(MAX_TRAIN_SIDE, *Counter(img.shape[:2] for img in images).most_common(1)[0][0])
    out = np.empty((len(images), 3, side, side), dtype=np.uint8)
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        if min(h, w) < side:
            scale = side / min(h, w)
            h, w = max(side, round(h * scale)), max(side, round(w * scale))
            img = np.asarray(Image.fromarray(img).resize((w, h), Image.BILINEAR))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        out[i] = img[top:top + side, left:left + side].transpose(2, 0, 1)
    return out


def train_encoder(
    train: Sequence[np.ndarray],
    held_out: Sequence[np.ndarray],
    bits: np.ndarray,
    cfg: EncoderConfig,
    *,
    steps: int = 400,
    batch_size: int = 16,
    lr: float = 4e-3,
    w_image: float = 10.0,
    seed: int = 0,
    log: Callable[[str], None] = lambda msg: None,
) -> tuple[Encoder, Decoder, dict]:
    """Train an encoder/decoder pair on ``train`` (HxWx3 uint8 images), deterministically for
    a seed.

    Each step encodes a batch with fresh random bit strings; the loss is the decoder's binary
    cross-entropy on the quantised encoded images plus ``w_image`` x the mean squared residual
    (in [0, 1] image units). The report measures the attack's own ``bits`` on ``held_out`` at
    their stored size (see :func:`evaluate_encoder`), and the cost of training.
    """
    cfg.check()
    if steps < 1:
        raise TacleanerError(f"ssba train_steps must be >= 1, got {steps}")
    t0 = time.perf_counter()
    data = torch.from_numpy(training_crops(train, np.random.default_rng(seed)))
    gen = torch.Generator().manual_seed(seed)
    encoder = _seeded(lambda: Encoder(cfg), seed)
    decoder = _seeded(lambda: Decoder(cfg), seed + 1)
    opt = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=lr)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps)))
    batch = min(batch_size, len(data))
    acc_avg = 0.5  # running batch bit accuracy
    with one_thread():
        for step in range(steps):
            images = data[torch.randint(0, len(data), (batch,), generator=gen)].float() / 255
            batch_bits = torch.randint(0, 2, (batch, cfg.n_bits), generator=gen)
            residual = encoder(images, batch_bits)
            logits = decoder(quantise((images + residual).clamp(0, 1)))
            bit_loss = F.binary_cross_entropy_with_logits(logits, batch_bits.float())
            image_loss = residual.pow(2).mean()
            # The image term fades in from a quarter to half of the steps, and only as far as
            # the decoder reads the bits (full weight from 90% accuracy): applied before the
            # decoder has found the code, it flattens the residual to nothing.
            ramp = min(1.0, max(0.0, (step / steps - 0.25) / 0.25)) * min(1.0, max(0.0, (acc_avg - 0.6) / 0.3))
            loss = bit_loss + w_image * ramp * image_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            acc = ((logits > 0) == batch_bits.bool()).float().mean().item()
            acc_avg = 0.9 * acc_avg + 0.1 * acc
            if (step + 1) % max(1, steps // 10) == 0 or step + 1 == steps:
                log(f"ssba encoder step {step + 1}/{steps}: bit loss {bit_loss.item():.4f}, "
                    f"batch bit acc {acc:.3f}, residual rms {image_loss.detach().sqrt().item() * 255:.2f}/255")
    encoder.eval()
    decoder.eval()
    train_seconds = time.perf_counter() - t0
    report = {**evaluate_encoder(encoder, decoder, held_out, bits),
              "steps": steps, "train_images": len(train), "train_size": list(data.shape[2:]),
              "train_seconds": round(train_seconds, 2)}
    return encoder, decoder, report


def evaluate_encoder(encoder: Encoder, decoder: Decoder | None, images: Sequence[np.ndarray], bits: np.ndarray,
                     strength: float = 1.0) -> dict:
    """On ``images`` encoded with ``bits`` and rounded to uint8 as poisoning saves them: the
    decoder's bit accuracy (None without a decoder) and the mean PSNR (dB) against the
    originals."""
    accs, psnrs = [], []
    target = torch.from_numpy(np.asarray(bits)).bool()
    with torch.no_grad():
        for img in images:
            encoded = apply_encoder(encoder, img, bits, strength)
            psnrs.append(psnr(encoded, img))
            if decoder is not None:
                with one_thread():
                    logits = decoder(torch.from_numpy(encoded).permute(2, 0, 1)[None].float() / 255)[0]
                accs.append(((logits > 0) == target).float().mean().item())
    finite = [p for p in psnrs if math.isfinite(p)]
    return {"bit_acc": round(float(np.mean(accs)), 4) if accs else None,
            "psnr_db": round(float(np.mean(finite)), 2) if finite else None,
            "eval_images": len(images)}


def encoder_arrays(encoder: Encoder) -> dict[str, np.ndarray]:
    """The encoder's weights as float32 arrays, by state-dict name."""
    return {k: v.detach().cpu().float().contiguous().numpy() for k, v in encoder.state_dict().items()}


def encoder_from_arrays(cfg: EncoderConfig, arrays: dict[str, np.ndarray | torch.Tensor], where: str) -> Encoder:
    """Rebuild an encoder from its weights, explaining a mismatch in one line naming ``where``."""
    cfg.check(f"{where}:")
    encoder = _seeded(lambda: Encoder(cfg), 0)
    own = encoder.state_dict()
    missing = sorted(set(own) - set(arrays))
    unexpected = sorted(set(arrays) - set(own))
    wrong = [k for k in own if k in arrays and tuple(arrays[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}" if unexpected else
                  f"{wrong[0]} has shape {tuple(arrays[wrong[0]].shape)}, expected {tuple(own[wrong[0]].shape)}")
        raise TacleanerError(f"{where}: weights do not fit an ssba encoder with "
                             f"n_bits={cfg.n_bits}, width={cfg.width} ({detail})")
    encoder.load_state_dict({k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()})
    return encoder.eval()


def save_encoder(encoder: Encoder, path: str | Path) -> None:
    """Write the encoder as safetensors, atomically, with its architecture in the metadata."""
    from safetensors.numpy import save_file

    header = {"kind": ENCODER_KIND, **asdict(encoder.cfg)}
    with atomic_path(path) as tmp:
        save_file(encoder_arrays(encoder), str(tmp), metadata={META_KEY: json.dumps(header)})


def load_encoder(path: str | Path) -> Encoder:
    """Rebuild an encoder saved by :func:`save_encoder`; a missing, unreadable or foreign file
    is a one-line :class:`TacleanerError` naming it."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise TacleanerError(f"{path}: ssba encoder file not found")
    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = (f.metadata() or {}).get(META_KEY)
            arrays = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise TacleanerError(f"{path}: not a readable safetensors file ({first})") from None
    try:
        header = json.loads(raw) if raw else None
    except json.JSONDecodeError:
        header = None
    if not isinstance(header, dict) or header.get("kind") != ENCODER_KIND:
        raise TacleanerError(f"{path}: not an ssba encoder (no '{ENCODER_KIND}' in its metadata)")
    try:
        cfg = EncoderConfig(int(header["n_bits"]), int(header["width"]), float(header["max_residual"]))
    except (KeyError, TypeError, ValueError) as e:
        raise TacleanerError(f"{path}: ssba encoder metadata lacks a valid {e}") from None
    return encoder_from_arrays(cfg, arrays, str(path))
