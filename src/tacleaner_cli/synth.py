"""``tacleaner synth``: write the embedded synthetic image-caption world."""
from __future__ import annotations

import argparse

from tacleaner.data.synth_config import SynthConfig

from .common import dataclass_from
from .options import AddCommand, add_dataclass_options


def add_parsers(add: AddCommand) -> None:
    s = add("synth", "generate the embedded synthetic image-caption world", synth)
    s.add_argument("--out", required=True, help="folder to write")
    s.add_argument("--overwrite", action="store_true", help="replace a world folder tacleaner created")
    add_dataclass_options(s, SynthConfig, "world size")


def synth(args: argparse.Namespace) -> int:
    from tacleaner.data.synth import generate

    cfg = dataclass_from(SynthConfig, args)
    out = generate(args.out, cfg, overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {out}: pretrain {cfg.pretrain}, implant {cfg.implant}, clean {cfg.clean} pairs; "
          f"zero-shot {cfg.zeroshot_per_class} images x classes in {out / 'classes.json'}")
    return 0
