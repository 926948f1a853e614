"""``tacleaner models | attacks | defenses``: what can be named on the other commands."""
from __future__ import annotations

import argparse
import dataclasses

from .options import AddCommand

OPEN_CLIP_SHOWN = ["RN50", "RN50-quickgelu", "ViT-B-32", "ViT-B-32-quickgelu"]  # listed beside ours without --all
COMBINING = ("\ncombine defenses with '+' (e.g. tacleaner+par): the first's losses plus the others' extra terms "
             "(the CLIP loss once), with the parameters of all")


def add_parsers(add: AddCommand) -> None:
    s = add("models", "list model architectures", models)
    s.add_argument("--all", action="store_true", help="every open_clip architecture")
    add("attacks", "list registered attacks and their parameters", attacks)
    add("defenses", "list registered defenses and their parameters", defenses)


def models(args: argparse.Namespace) -> int:
    from tacleaner.models import list_models, shipped_models

    names = list_models() if args.all else shipped_models() + OPEN_CLIP_SHOWN
    print("\n".join(names))
    if not args.all:
        print("(--all lists every open_clip architecture)")
    return 0


def attacks(args: argparse.Namespace) -> int:
    from tacleaner.attacks import ATTACKS

    return _print_registry(ATTACKS)


def defenses(args: argparse.Namespace) -> int:
    from tacleaner.defenses import DEFENSES

    return _print_registry(DEFENSES, COMBINING)


def _print_registry(registry, footer: str = "") -> int:
    from tacleaner.params import default_of

    for name in registry:
        cls = registry.get(name)
        params = ", ".join(f"{f.name}={default_of(f)}" for f in dataclasses.fields(cls))
        print(f"{name:10s} {cls.description}\n{'':10s} params: {params}")
    if footer:
        print(footer)
    return 0
