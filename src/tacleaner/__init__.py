"""tacleaner: backdoor attacks on CLIP-style image-text models and the fine-tuning defenses that
remove them, centred on TA-Cleaner.

The functions the documentation uses are importable from here; each loads its module (and
torch) only when first used, so ``import tacleaner`` and ``tacleaner --help`` stay fast::

    import tacleaner
    model = tacleaner.create_model("tacleaner-tiny-rn")
    attack = tacleaner.create_attack("badnet", patch_frac=0.25)

The command line lives apart, in ``tacleaner_cli``; this package never imports it.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Any

__version__ = "0.8.0"

# public name -> the module that defines it (docs/reference/api.md documents each)
EXPORTS = {
    "create_model": "tacleaner.models", "load_model": "tacleaner.models", "save_model": "tacleaner.models",
    "list_models": "tacleaner.models",
    "create_attack": "tacleaner.attacks", "load_attack": "tacleaner.attacks", "poison_dataset": "tacleaner.attacks",
    "create_defense": "tacleaner.defenses",
    "TrainConfig": "tacleaner.train", "train": "tacleaner.train",
    "evaluate": "tacleaner.evaluate",
    "read_pairs": "tacleaner.data.pairs", "read_classes": "tacleaner.data.zeroshot",
    "read_zeroshot": "tacleaner.data.zeroshot",
    "ScanConfig": "tacleaner.scan", "scan": "tacleaner.scan", "decide": "tacleaner.findings",
    "DetectConfig": "tacleaner.detect", "detect": "tacleaner.detect",
    "per_run_checks": "tacleaner.report", "verdict": "tacleaner.report",
    "TacleanerError": "tacleaner.errors",
}

__all__ = ["__version__", *EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in EXPORTS:
        raise AttributeError(f"module 'tacleaner' has no attribute {name!r}")
    value = getattr(importlib.import_module(EXPORTS[name]), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *EXPORTS])


class _Package(types.ModuleType):
    """Importing a submodule binds it on its package (``tacleaner.train`` would become the
    module once anything imported it); an exported function of the same name (``train``,
    ``evaluate``, ``scan``, ``detect``) stays what ``tacleaner.NAME`` gives. The submodules
    are still imported by their dotted names (``from tacleaner.train import TrainConfig``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
