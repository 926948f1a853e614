"""Saving and loading model weights without ever executing code from the file.

Our own checkpoints are safetensors files whose metadata carries the model name and config,
so every command rebuilds the model from the file alone. Foreign files are accepted as
safetensors or as PyTorch pickles read with ``weights_only=True``: open_clip checkpoints and
the OpenAI-format state dicts that CleanCLIP and BadCLIP release (``{"state_dict": ...}``,
with or without the ``module.`` prefix of DataParallel). A pickle that would construct
arbitrary objects is refused.
"""
from __future__ import annotations

import json
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

import open_clip
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from ..errors import TacleanerError
from ..fileio import atomic_path
from .factory import ClipBundle, bundle_for, model_config, register_config
from .prompts import META_KEY as PROMPTS_KEY
from .prompts import install_prompts, prompt_spec

META_KEY = "tacleaner"
# Buffers some OpenAI-format state dicts carry that are hyper-parameters, not weights.
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def save_model(bundle: ClipBundle, path: str | Path, **meta: Any) -> None:
    """Write the model as safetensors, atomically, with name and config in its metadata."""
    state = {k: v.detach().contiguous().cpu() for k, v in bundle.model.state_dict().items()}
    header = {"model_name": bundle.model_name, "model_cfg": bundle.model_cfg, **bundle.meta, **meta}
    spec = prompt_spec(bundle.model)  # deep visual prompts (rvpt): rebuilt by load_model
    header.pop(PROMPTS_KEY, None)
    if spec is not None:
        header[PROMPTS_KEY] = spec
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={META_KEY: json.dumps(header)})


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """The tacleaner metadata of a safetensors checkpoint, or None for a foreign file (another
    format, or safetensors written by another tool). A file that is neither a readable
    safetensors file nor a PyTorch checkpoint is a one-line error naming it: asking for
    ``--model`` would send the user after the wrong problem."""
    path = Path(path)
    if sniff(path) != "safetensors":
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except Exception as e:  # noqa: BLE001 - whatever the parser meets is a property of the file
        raise TacleanerError(f"{path}: corrupt safetensors file ({_first_line(e)}); copy or download it again") from None
    if not raw:
        return None
    try:
        meta = json.loads(raw)
    except ValueError:
        raise TacleanerError(f"{path}: corrupt tacleaner metadata in the safetensors header") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("model_name"), str) or not isinstance(
            meta.get("model_cfg"), dict):
        raise TacleanerError(f"{path}: corrupt tacleaner metadata in the safetensors header (no model name or config)")
    return meta


def _first_line(e: BaseException, limit: int = 160) -> str:
    text = str(e).strip()
    return (text.splitlines()[0][:limit] if text else type(e).__name__)


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive


def sniff(path: Path) -> str:
    """The format of a model file from its first bytes: ``safetensors``, ``zip`` (torch.save),
    ``pickle`` (torch.save's legacy format), else a one-line error naming the file. A truncated
    or overwritten download fails here, before any parser sees it."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(9)
    except OSError as e:
        raise TacleanerError(f"{path}: cannot read ({e.strerror or e})") from None
    if size == 0:
        raise TacleanerError(f"{path}: empty file, not a model (an interrupted download or copy?)")
    if len(head) == 9 and head[8:9] == b"{":  # an 8-byte little-endian header size, then JSON
        header = int.from_bytes(head[:8], "little")
        if header > size - 8:
            raise TacleanerError(f"{path}: truncated or corrupt safetensors file (its header says {header} bytes, "
                                 f"the file has {size}); copy or download it again")
        return "safetensors"
    if head.startswith(ZIP_MAGIC):
        return "zip"
    if head[:1] == b"\x80":  # a pickle's protocol opcode
        return "pickle"
    raise TacleanerError(f"{path}: not a model file: neither safetensors nor a PyTorch checkpoint "
                         "(a truncated or corrupt download?)")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a safetensors file or a weights-only PyTorch pickle, normalised to
    open_clip key names; any unreadable file is a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise TacleanerError(f"{path}: checkpoint not found" + (" (it is a folder)" if path.is_dir() else ""))
    if sniff(path) == "safetensors":
        try:
            state = load_file(str(path))
        except Exception as e:  # noqa: BLE001 - a corrupt file, whatever the parser raised
            raise TacleanerError(f"{path}: corrupt safetensors file ({_first_line(e)}); "
                                 "copy or download it again") from None
    else:
        state = _load_pickle(path)
    return _normalise(state, path)


def weights_sha256(path: str | Path) -> str:
    """Hash of every tensor's name, dtype, shape and bytes in name order: the same for two files
    holding the same weights, whatever their layout or stored metadata."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(read_state_dict(path).items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _load_pickle(path: Path) -> Any:
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if any(n.endswith("/code/") or "/code/" in n for n in z.namelist()):
                raise TacleanerError(
                    f"{path}: is a TorchScript archive, which runs code when loaded; "
                    "convert it to a state dict on a trusted machine first"
                )
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols: the error below says what matters
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Weights only load failed" in text:  # the weights-only reader met something beyond plain tensors
            lines = [line.strip() for line in text.splitlines()]
            found = next((line for line in lines if "GLOBAL" in line or line.startswith("Unsupported")), "")
            raise TacleanerError(
                f"{path}: refused to load: the file holds objects other than plain weights and "
                f"could execute code" + (f" ({found[:160]})" if found else "")
            ) from None
        raise TacleanerError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt ({_first_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - truncated archives and bad bytes raise many kinds
        raise TacleanerError(f"{path}: not a readable PyTorch checkpoint, truncated or corrupt "
                             f"({_first_line(e)})") from None


def _normalise(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TacleanerError(f"{path}: no state dict of tensors found (expected a dict or {{'state_dict': ...}})")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return {k: v for k, v in obj.items() if k not in _OPENAI_EXTRA_KEYS}


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path, name: str) -> None:
    """Load ``state`` strictly, explaining a mismatch in one line."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise TacleanerError(f"{path}: checkpoint does not match model {name}: " + "; ".join(parts))
    model.load_state_dict(state)


def load_model(path: str | Path, model_name: str | None = None, device: str | torch.device = "cpu",
               name_option: str = "--model NAME") -> ClipBundle:
    """Rebuild a model from a checkpoint file.

    Our own files name their model; for foreign files (open_clip, CleanCLIP, BadCLIP, OpenAI
    state dicts) pass ``model_name`` (``RN50-quickgelu`` for OpenAI-format RN50 weights).
    The file is read before a missing name is reported, so that a corrupt file is called
    corrupt; ``name_option`` is how the caller's user gives the name (an option, a config key).
    """
    path = Path(path)
    if not path.is_file():
        raise TacleanerError(f"{path}: checkpoint not found" + (" (it is a folder)" if path.is_dir() else ""))
    meta = read_meta(path)
    state = read_state_dict(path)
    if meta is not None and model_name in (None, meta["model_name"]):
        name, cfg = meta["model_name"], meta["model_cfg"]
        register_config(name, cfg)
    elif model_name is not None:
        name, cfg, meta = model_name, model_config(model_name), {}
    else:
        raise TacleanerError(f"{path}: checkpoint does not name its model; pass {name_option}")
    model = open_clip.create_model(name, device="cpu")
    if isinstance(meta.get(PROMPTS_KEY), dict):  # a model cleaned by prompt tuning (rvpt): its prompts first
        spec = meta[PROMPTS_KEY]
        install_prompts(model, int(spec["tokens"]), int(spec["first"]))
    load_weights(model, state, path, name)
    model.to(device)
    provenance = {k: v for k, v in meta.items() if k not in ("model_name", "model_cfg")}
    return bundle_for(model, name, cfg, {**provenance, "checkpoint": str(path)})


EXPORT_FORMATS = ("open_clip", "openai")


def export_model(bundle: ClipBundle, path: str | Path, fmt: str = "openai") -> None:
    """Write the model for the tools users already have, atomically. ``open_clip``: the bare
    state dict, as ``open_clip.create_model(name, pretrained=path)`` loads it; ``openai``: the
    layout CleanCLIP and BadCLIP release and load, ``{"epoch": ..., "state_dict": ...}`` with
    the OpenAI/open_clip key names (open_clip's CLIP uses OpenAI's). Both are plain tensors in a
    PyTorch pickle, loadable with ``torch.load(weights_only=True)``."""
    if fmt not in EXPORT_FORMATS:
        raise TacleanerError(f"export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    if prompt_spec(bundle.model) is not None:
        raise TacleanerError("this model's image encoder has deep visual prompts (cleaned by rvpt), which neither "
                             "open_clip nor the OpenAI layout can hold; use the tacleaner checkpoint itself")
    state = {k: v.detach().contiguous().cpu() for k, v in bundle.model.state_dict().items()}
    obj: Any = state if fmt == "open_clip" else {"epoch": int(bundle.meta.get("epoch", 0) or 0), "state_dict": state}
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
