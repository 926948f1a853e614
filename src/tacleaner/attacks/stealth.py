"""How visible a trigger is: PSNR, SSIM and L-inf between clean and triggered images.

All functions take HxWx3 (or HxW) arrays on the 0..255 scale, normally uint8. SSIM follows
Wang, Bovik, Sheikh & Simoncelli (2004) and their reference ``ssim_index.m``: an 11x11
Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, L = 255, statistics over the windows that
fit inside the image ("valid"), the mean of the SSIM map; colour images are scored per channel
and averaged. Without the later automatic downsampling of ``ssim.m``, so the score is that of
the image at its stored resolution, which is where a trigger lives.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

PEAK = 255.0
WINDOW = 11
SIGMA = 1.5
K1, K2 = 0.01, 0.03


def _pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if a.ndim not in (2, 3) or a.size == 0:
        raise ValueError(f"expected an HxW or HxWxC image, got shape {a.shape}")
    return a.astype(np.float64), b.astype(np.float64)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB (peak 255); ``inf`` for identical images."""
    a, b = _pair(a, b)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(PEAK ** 2 / mse)


def linf(a: np.ndarray, b: np.ndarray) -> int:
    """The largest absolute difference of any pixel channel, in pixel units."""
    a, b = _pair(a, b)
    return int(round(float(np.max(np.abs(a - b)))))


def gaussian_window(size: int = WINDOW, sigma: float = SIGMA) -> np.ndarray:
    """The 1-D Gaussian of the separable SSIM window, normalised to sum 1."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``x`` (HxW) correlated with the separable window ``g`` x ``g``, valid part only."""
    k = len(g)
    x = np.lib.stride_tricks.sliding_window_view(x, k, axis=1) @ g
    return np.lib.stride_tricks.sliding_window_view(x, k, axis=0) @ g


def _ssim_channel(x: np.ndarray, y: np.ndarray, g: np.ndarray) -> float:
    c1, c2 = (K1 * PEAK) ** 2, (K2 * PEAK) ** 2
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mx * mx
    syy = _filter_valid(y * y, g) - my * my
    sxy = _filter_valid(x * y, g) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(ssim_map.mean())


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity (1.0 for identical images).

    Images smaller than the 11 px window get the largest odd window that fits (same sigma),
    so even tiny images have a score rather than an error.
    """
    a, b = _pair(a, b)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    size = min(WINDOW, a.shape[0], a.shape[1])
    size -= 1 - size % 2  # odd, so the window has a centre pixel
    g = gaussian_window(size)
    return float(np.mean([_ssim_channel(a[..., c], b[..., c], g) for c in range(a.shape[2])]))


def stealth_report(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Summary over (clean, triggered) pairs.

    ``psnr_mean`` averages the finite values only (identical pairs would make it ``inf``) and
    ``identical`` says how many were left out; it is ``inf`` when every pair is identical.
    """
    psnrs, ssims, linfs = [], [], []
    for clean, triggered in pairs:
        psnrs.append(psnr(clean, triggered))
        ssims.append(ssim(clean, triggered))
        linfs.append(linf(clean, triggered))
    if not psnrs:
        raise ValueError("stealth_report needs at least one image pair")
    finite = [p for p in psnrs if math.isfinite(p)]
    return {
        "count": len(psnrs),
        "psnr_mean": float(np.mean(finite)) if finite else math.inf,
        "identical": len(psnrs) - len(finite),
        "ssim_mean": float(np.mean(ssims)),
        "linf_max": max(linfs),
        "linf_mean": float(np.mean(linfs)),
    }


def format_report(report: dict) -> str:
    """``PSNR 21.43 dB, SSIM 0.912, L-inf 255 (mean 241.0)``, noting identical pairs."""
    identical = report["identical"]
    if identical == report["count"]:
        psnr_text = "PSNR inf dB (all identical)"
    else:
        psnr_text = f"PSNR {report['psnr_mean']:.2f} dB" + (f" ({identical} identical, left out)" if identical else "")
    return (f"{psnr_text}, SSIM {report['ssim_mean']:.3f}, "
            f"L-inf {report['linf_max']} (mean {report['linf_mean']:.1f})")
