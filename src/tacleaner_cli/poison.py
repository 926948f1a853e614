"""``tacleaner poison``: a new image-caption dataset with an attack's trigger in some pairs."""
from __future__ import annotations

import argparse
from pathlib import Path

from tacleaner.console import stderr_log
from tacleaner.errors import TacleanerError
from tacleaner.fileio import check_inputs_outside

from .common import describe, load_clean_model, parse_params
from .options import (
    AddCommand,
    add_clean_model_options,
    add_data_columns,
    add_device_option,
    add_pairs_option,
    add_param_option,
    seed_int,
)

FRAME_HELP = ("side of the square model input the trigger is applied in: triggered images are resized (shorter "
              "side) and centre-cropped to it, as the model sees them (default: --clean-model's input size; else "
              "the images' own side when all to poison are square of one size; else 224, RN50's and ViT-B/32's)")


def add_parsers(add: AddCommand) -> None:
    s = add("poison", "poison an image-caption CSV with an attack", poison)
    add_pairs_option(s)
    s.add_argument("--attack", required=True, help="attack name (see `tacleaner attacks`)")
    s.add_argument("--target", required=True, help="target class name or index")
    s.add_argument("--num", type=int, required=True, help="number of pairs to poison")
    s.add_argument("--out", required=True, help="poisoning run folder to write")
    s.add_argument("--seed", type=seed_int, default=0, help="which pairs are poisoned, and the trigger's draw")
    s.add_argument("--classes", default="imagenet", help="classes JSON (or 'imagenet') for the target and templates")
    add_param_option(s, "attack")
    add_data_columns(s)
    add_clean_model_options(s, "the clean (pre-implant) checkpoint")
    s.add_argument("--frame", type=int, help=FRAME_HELP)
    add_device_option(s)
    s.add_argument("--overwrite", action="store_true", help="replace a poisoning folder tacleaner created")


def poison(args: argparse.Namespace) -> int:
    from tacleaner.attacks import create_attack, poison_dataset
    from tacleaner.data.zeroshot import imagenet_classes, read_classes
    from tacleaner.environment import resolve_device

    classes = read_classes(args.classes) if args.classes else imagenet_classes()
    target = classes.classnames[classes.index(args.target)]
    attack = create_attack(args.attack, **parse_params(args.param))
    if args.clean_model and not attack.needs_model:
        raise TacleanerError(f"attack {attack.name} does not optimise against a model; drop --clean-model")
    if args.model and not args.clean_model:
        raise TacleanerError("--model names the architecture of --clean-model; pass both or neither")
    check_inputs_outside(args.out, [args.data, args.clean_model, args.classes])
    device = resolve_device(args.device)
    m = poison_dataset(args.data, attack, target, args.num, args.out, seed=args.seed, templates=classes.templates,
                       classnames=classes.classnames,
                       image_col=args.image_col, caption_col=args.caption_col, overwrite=args.overwrite,
                       clean_model=load_clean_model(args), device=device, log=stderr_log(args.quiet),
                       frame=args.frame)
    if "prepare" in m:
        print(f"trigger: {Path(args.out) / m['trigger']}  ({describe(m['prepare'])})")
    print(f"poisoned {m['num_poisoned']} of {m['num_total']} pairs with {m['attack']} toward {target!r} "
          f"(in a {m['frame']} px model frame): {Path(args.out) / 'data.csv'}")
    return 0
