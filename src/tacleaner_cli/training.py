"""``tacleaner train`` and ``tacleaner clean``: the one training loop, from random or given
weights with any objective, or a named defense applied to a (backdoored) model."""
from __future__ import annotations

import argparse
from pathlib import Path

from tacleaner.errors import TacleanerError
from tacleaner.fileio import check_inputs_outside
from tacleaner.train_config import TrainConfig

from .common import dataclass_from, is_main, load_bundle, parse_params
from .options import (
    AddCommand,
    add_data_columns,
    add_dataclass_options,
    add_model_options,
    add_pairs_option,
    add_param_option,
    add_run_folder_options,
)


def add_parsers(add: AddCommand) -> None:
    s = _add_training(add, "train", "train or fine-tune a CLIP model on image-caption pairs", train)
    s.add_argument("--model", help="architecture name (see `tacleaner models`; default: the --init "
                   "checkpoint's own)")
    s.add_argument("--init", help="start from this checkpoint instead of random weights (default: none)")
    s.add_argument("--pretrained", help="open_clip pretrained tag, needs network (default: none)")
    s.add_argument("--objective", default="finetune", help="training objective (a registered defense)")
    s = _add_training(add, "clean", "apply a fine-tuning defense to a (backdoored) model", clean)
    s.add_argument("--defense", required=True, help="defense name (see `tacleaner defenses`)")
    add_model_options(s, checkpoint_required=True)
    s.add_argument("--check", help="clean labelled images (zero-shot CSV or ImageFolder): once cleaned, scan the model "
                   "before and after and print the suspected target's measure before and after, into check.json "
                   "(default: none)")
    s.add_argument("--check-classes", default="imagenet", help="classes of --check: a classes JSON or 'imagenet'")


def _add_training(add: AddCommand, name: str, helptext: str, handler) -> argparse.ArgumentParser:
    """The options ``train`` and ``clean`` share: data, run folder, objective parameters and
    every training setting."""
    s = add(name, helptext, handler)
    add_pairs_option(s)
    s.add_argument("--out", required=True, help="run folder")
    s.add_argument("--config", help="YAML with training settings, overridden by options (default: none)")
    add_data_columns(s)
    add_param_option(s, "objective")
    add_run_folder_options(s)
    add_dataclass_options(s, TrainConfig, "training")
    return s


def train(args: argparse.Namespace) -> int:
    import torch

    from tacleaner.defenses import create_defense
    from tacleaner.models import create_model, load_model

    if args.init and args.pretrained:
        raise TacleanerError("--init and --pretrained both name starting weights; pass one")
    if not args.init and not args.model:
        raise TacleanerError("pass --model NAME (random or --pretrained weights) or --init CHECKPOINT")
    torch.manual_seed(args.seed or 0)  # the random init is part of the run's seed
    bundle = load_model(args.init, args.model) if args.init else create_model(args.model, args.pretrained)
    return _train(args, bundle, create_defense(args.objective, **parse_params(args.param)))


def clean(args: argparse.Namespace) -> int:
    from tacleaner.defenses import create_defense

    objective = create_defense(args.defense, **parse_params(args.param))
    check = None
    if args.check:  # read before training, so that a bad path fails at once
        from tacleaner.data.zeroshot import read_classes, read_zeroshot

        classes = read_classes(args.check_classes)
        check = read_zeroshot(args.check, classes), classes
    status = _train(args, load_bundle(args), objective)
    if check is not None and is_main():
        from tacleaner import findings
        from tacleaner.fileio import write_json
        from tacleaner.models import load_model

        result = findings.check_cleaning(load_bundle(args), load_model(Path(args.out) / "model.safetensors"),
                                         *check, args.device or "auto")
        write_json(Path(args.out) / "check.json", result)
        print(findings.before_after_line(result["before_after"]))
        print(findings.reliability_line("cleaning"))
    return status


def _train(args: argparse.Namespace, bundle, objective) -> int:
    import torch

    from tacleaner.data.pairs import read_pairs
    from tacleaner.environment import resolve_device, resolve_precision
    from tacleaner.train import train

    cfg = dataclass_from(TrainConfig, args, args.config, defaults=objective.train_defaults)
    objective.check_ready()
    init, checkpoint = getattr(args, "init", None), getattr(args, "checkpoint", None)  # train's, clean's
    check_inputs_outside(args.out, [args.data, args.config, init, checkpoint])
    resolve_precision(cfg.precision, resolve_device(cfg.device))  # before the run folder exists
    table = read_pairs(args.data, args.image_col, args.caption_col)
    torch.manual_seed(cfg.seed)
    train(bundle, table, objective, cfg, args.out, resume=args.resume, overwrite=args.overwrite,
          progress=not args.quiet, extra_config={"init": init or checkpoint})
    if is_main():
        print(f"wrote {Path(args.out) / 'model.safetensors'}")
    return 0
