"""``tacleaner export``: a model in the layout other tools load."""
from __future__ import annotations

import argparse
from pathlib import Path

from tacleaner.errors import TacleanerError

from .common import load_bundle, output_file
from .options import AddCommand, add_model_options

FORMATS = ("openai", "open_clip")  # the layouts of tacleaner.models.EXPORT_FORMATS, named without importing torch


def add_parsers(add: AddCommand) -> None:
    s = add("export", "write a model for other tools: an open_clip state dict or the OpenAI / CleanCLIP layout "
            "({'state_dict': ...})", export)
    add_model_options(s, checkpoint_required=True)
    s.add_argument("--out", required=True, help="the .pt file to write")
    s.add_argument("--format", default="openai", choices=FORMATS,
                   help="openai: {'epoch', 'state_dict'} as CleanCLIP / BadCLIP save it; open_clip: the bare state "
                   "dict")
    s.add_argument("--overwrite", action="store_true", help="replace an existing file")


def export(args: argparse.Namespace) -> int:
    from tacleaner.models import export_model

    out = output_file(args.out, args.overwrite)
    if out.exists() and out.resolve() == Path(args.checkpoint).resolve():
        raise TacleanerError(f"{out}: is the --checkpoint being exported; write the export to another file")
    bundle = load_bundle(args)
    export_model(bundle, out, args.format)
    print(f"wrote {out} ({args.format} layout, {bundle.model_name}); load it with "
          + ("open_clip.create_model(NAME, pretrained=FILE)" if args.format == "open_clip"
             else "tacleaner --checkpoint FILE --model NAME, or CleanCLIP's --checkpoint"))
    return 0
