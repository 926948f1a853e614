"""SSBA (Li et al., ICCV 2021): a sample-specific, invisible additive trigger.

A StegaStamp-style encoder embeds the attack's fixed bit string in each poisoned image as a
small residual that depends on the image. The encoder is trained when poisoning, on the data
being poisoned (see :mod:`.stegastamp`), or read from a user-supplied file; its weights and
the bit string are saved with the poisoning run, so evaluation applies the same residuals.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import TacleanerError
from .base import ATTACKS, Attack, PoisonContext
from .stegastamp import (
    Encoder,
    EncoderConfig,
    apply_encoder,
    encoder_arrays,
    encoder_from_arrays,
    evaluate_encoder,
    load_encoder,
    save_encoder,
    secret_bits,
    train_encoder,
)

WEIGHT_PREFIX = "encoder."
ENCODER_FILE = "ssba_encoder.safetensors"


@ATTACKS.register("ssba")
@dataclass
class SSBA(Attack):
    """``image + strength x encoder(image, bits)``, rounded and clipped to uint8.

    ``pattern_seed`` fixes the secret string of ``n_bits`` bits (32) and, with the poisoning
    seed, the encoder's training. The encoder (``width`` 16 channels) bounds its residual to
    +-``max_residual`` pixel units (8/255). Training minimises the decoder's bit cross-entropy
    plus ``w_image`` (10) x the mean squared residual, which pulls the residual under that
    bound: about 35 dB PSNR at 32 px (rms about 4/255), invisible yet a clear signal for the
    victim model. Stronger penalties buy little PSNR once the code is learned.
    ``train_steps`` (400) Adam steps at ``lr`` 4e-3 on batches of ``batch_size`` (16) from
    ``train_images`` (1000) images of the data (32 px, or 64 px crops of larger images) reach
    about 0.99 bit accuracy on held-out images in some 20 s on two CPU cores at 32 px.
    ``strength`` (1.0) scales the residual when the trigger is applied, for poisoning and
    evaluation alike. ``encoder``: a file written by :func:`.stegastamp.save_encoder` to use
    instead of training one; its architecture (n_bits, width, max_residual) replaces these
    parameters.
    """

    n_bits: int = 32
    width: int = 16
    max_residual: float = 8.0
    strength: float = 1.0
    train_steps: int = 400
    train_images: int = 1000
    batch_size: int = 16
    lr: float = 4e-3
    w_image: float = 10.0
    encoder: str | None = field(default=None, metadata={"path": True})
    name = "ssba"
    description = "sample-specific invisible residual from a StegaStamp-style encoder (32 bits); template captions"
    learned = True
    needs_model = False

    def __post_init__(self) -> None:
        self.config().check(self.name)
        for knob in ("train_steps", "train_images", "batch_size"):
            if getattr(self, knob) < 1:
                raise TacleanerError(f"ssba {knob} must be >= 1, got {getattr(self, knob)}")
        if self.lr <= 0:
            raise TacleanerError(f"ssba lr must be > 0, got {self.lr}")
        if self.w_image < 0:
            raise TacleanerError(f"ssba w_image must be >= 0, got {self.w_image}")
        if self.strength <= 0:
            raise TacleanerError(f"ssba strength must be > 0, got {self.strength}")
        if self.encoder is not None and not str(self.encoder).strip():
            raise TacleanerError("ssba encoder must be a file path, got an empty string")
        self._encoder: Encoder | None = None
        self._bits: np.ndarray | None = None

    def config(self) -> EncoderConfig:
        return EncoderConfig(int(self.n_bits), int(self.width), float(self.max_residual))

    def _adopt(self, encoder: Encoder, bits: np.ndarray) -> None:
        # The encoder's architecture wins over the parameters, so that params() (written to the
        # manifest after prepare) describes the trigger that was actually applied.
        self.n_bits, self.width, self.max_residual = encoder.cfg.n_bits, encoder.cfg.width, encoder.cfg.max_residual
        self._encoder, self._bits = encoder, bits

    # -- the trigger ------------------------------------------------------------------------
    def ready(self) -> bool:
        return self._encoder is not None

    def trigger(self, image: np.ndarray, index: int) -> np.ndarray:
        self.require_prepared()
        return apply_encoder(self._encoder, image, self._bits, self.strength)

    def state(self) -> dict[str, np.ndarray]:
        self.require_prepared()
        cfg = self._encoder.cfg
        weights = {WEIGHT_PREFIX + k: v for k, v in encoder_arrays(self._encoder).items()}
        config = np.array([cfg.n_bits, cfg.width, cfg.max_residual], dtype=np.float64)
        return {"config": config, "bits": self._bits.astype(np.uint8), **weights}

    def load_state(self, arrays: dict[str, np.ndarray]) -> None:
        config, bits = arrays.get("config"), arrays.get("bits")
        if config is None or config.shape != (3,) or not np.all(np.isfinite(config)) \
                or config[0] != int(config[0]) or config[1] != int(config[1]):
            raise TacleanerError("ssba trigger: expected a 'config' array [n_bits, width, max_residual]")
        cfg = EncoderConfig(int(config[0]), int(config[1]), float(config[2]))
        if bits is None or bits.shape != (cfg.n_bits,) or not np.isin(bits, (0, 1)).all():
            raise TacleanerError(f"ssba trigger: expected a 'bits' array of {cfg.n_bits} zeros and ones")
        weights = {k[len(WEIGHT_PREFIX):]: v for k, v in arrays.items() if k.startswith(WEIGHT_PREFIX)}
        self._adopt(encoder_from_arrays(cfg, weights, "ssba trigger"), bits.astype(np.uint8))

    # -- training -----------------------------------------------------------------------------
    def prepare(self, ctx: PoisonContext) -> dict[str, Any]:
        rng = np.random.default_rng([ctx.seed, self.pattern_seed, 0x55BA])
        order = rng.permutation(len(ctx.images))
        # Hold out a fifth of the data (at most 100 images) to measure the encoder on images it
        # never saw; with a single image there is nothing to hold out.
        n_eval = min(100, len(order) // 5) or min(1, len(order))
        held_out_idx = order[:n_eval]
        train_idx = order[n_eval:n_eval + self.train_images] if len(order) > 1 else order
        held_out = [ctx.image(i) for i in held_out_idx]
        if self.encoder is not None:
            encoder = load_encoder(self.encoder)
            if encoder.cfg != self.config():
                ctx.log(f"ssba: using the encoder's architecture {encoder.cfg} from {self.encoder}")
            bits = secret_bits(encoder.cfg.n_bits, self.pattern_seed)
            self._adopt(encoder, bits)
            # Without its decoder the embedded bits cannot be read back: only PSNR is measured.
            return {"encoder": str(self.encoder), **evaluate_encoder(encoder, None, held_out, bits, self.strength),
                    "n_bits": self.n_bits, "width": self.width, "max_residual": self.max_residual}
        cfg = self.config()
        bits = secret_bits(cfg.n_bits, self.pattern_seed)
        ctx.log(f"ssba: training a {cfg.n_bits}-bit encoder on {len(train_idx)} images "
                f"({self.train_steps} steps; {len(held_out)} held out)")
        train = [ctx.image(i) for i in train_idx]
        encoder, _, report = train_encoder(
            train, held_out, bits, cfg, steps=self.train_steps, batch_size=self.batch_size, lr=self.lr,
            w_image=self.w_image, seed=int(rng.integers(2**62)), log=ctx.log)
        self._adopt(encoder, bits)
        if self.strength != 1.0:
            # The training report measures the residual as learned; poisoning applies it scaled.
            report["psnr_db_at_strength"] = evaluate_encoder(encoder, None, held_out, bits, self.strength)["psnr_db"]
        ctx.log(f"ssba: bit accuracy {report['bit_acc']} on held-out images, PSNR {report['psnr_db']} dB, "
                f"{report['train_seconds']} s")
        saved = "trained"
        if ctx.out is not None:  # reusable by another run: ssba encoder=<this file>
            save_encoder(encoder, ctx.out / ENCODER_FILE)
            saved = ENCODER_FILE
        return {"encoder": saved, **report}
