"""``tacleaner show-trigger``: clean vs triggered images, their difference, and how visible
the trigger is (PSNR / SSIM / L-inf)."""
from __future__ import annotations

import argparse

from tacleaner.console import stderr_log
from tacleaner.errors import TacleanerError

from .common import describe, load_clean_model, output_file, parse_params
from .options import (
    AddCommand,
    add_clean_model_options,
    add_data_columns,
    add_param_option,
    positive_float,
    positive_int,
    seed_int,
)

FRAME_HELP = ("side of the model input the trigger is applied in (default: the --trigger run's, else "
              "--clean-model's input size, else the images' own side when all shown are square of one size, else 224)")


def add_parsers(add: AddCommand) -> None:
    s = add("show-trigger", "draw clean vs triggered images and their difference; print PSNR / SSIM / L-inf",
            show_trigger)
    s.add_argument("--attack", help="attack name (default: the --trigger run's)")
    add_param_option(s, "attack")
    s.add_argument("--data", required=True, help="image-caption CSV (or zero-shot CSV with image, label)")
    s.add_argument("--out", required=True, help="the PNG to write")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    s.add_argument("--num", type=positive_int, default=8, help="number of images to show")
    s.add_argument("--seed", type=seed_int, default=0, help="picks the images; also the seed of a learned trigger")
    s.add_argument("--trigger", help="a poisoning run folder or manifest.json: show exactly its trigger "
                   "(default: none: --attack with its parameters)")
    s.add_argument("--target", help="target label, to learn the trigger of a learned attack without --trigger "
                   "(default: none)")
    s.add_argument("--classes", default="imagenet", help="classes JSON (or 'imagenet') for --target and its templates")
    add_clean_model_options(s, "the clean checkpoint")
    s.add_argument("--amplify", type=positive_float, help="difference row gain (default: the largest difference "
                   "maps to 255)")
    s.add_argument("--frame", type=int, help=FRAME_HELP)
    add_data_columns(s)


def show_trigger(args: argparse.Namespace) -> int:
    from tacleaner.attacks.frame import frame_for
    from tacleaner.attacks.show import read_table, sample_indices, trigger_grid, triggered_samples
    from tacleaner.attacks.stealth import format_report, stealth_report
    from tacleaner.data.pairs import image_size
    from tacleaner.fileio import atomic_path

    out = output_file(args.out, args.overwrite, "PNG file")
    table = read_table(args.data, args.image_col, args.caption_col)
    indices = sample_indices(len(table), args.num, args.seed)
    shown_sizes = (image_size(table.images[i]) for i in indices)  # read only if a default frame is needed
    if args.trigger:
        attack = _run_attack(args)
    elif args.attack:
        attack = _named_attack(args, table, shown_sizes)
    else:
        raise TacleanerError("pass --attack NAME or --trigger RUN")
    frame = attack.frame or frame_for(args.frame, sizes=shown_sizes)
    clean, triggered = triggered_samples(attack, table.images, indices, frame)
    grid = trigger_grid(clean, triggered, args.amplify)
    try:
        with atomic_path(out) as tmp:
            grid.save(tmp, format="PNG")
    except OSError as e:
        raise TacleanerError(f"{out}: cannot write ({e.strerror or e})") from None
    report = stealth_report(zip(clean, triggered))
    print(f"{attack.name} on {report['count']} images: {format_report(report)} -> {out}")
    return 0


def _run_attack(args: argparse.Namespace):
    """Exactly the attack and trigger of the poisoning run ``--trigger``."""
    from tacleaner.attacks import load_attack

    if args.param:
        raise TacleanerError("--param does not combine with --trigger: the run fixes the attack's parameters")
    if args.target or args.clean_model:
        raise TacleanerError("--target and --clean-model learn a trigger; --trigger shows a run's saved one")
    attack, _ = load_attack(args.trigger)
    if args.attack and args.attack != attack.name:
        raise TacleanerError(f"--attack {args.attack} but the run {args.trigger} used {attack.name}")
    if args.frame is not None and attack.frame is not None and args.frame != attack.frame:
        raise TacleanerError(f"--frame {args.frame} but the run {args.trigger} applied its trigger "
                             f"in a {attack.frame} px frame")
    return attack


def _named_attack(args: argparse.Namespace, table, shown_sizes):
    """``--attack`` with its ``--param``; a learned trigger is learned here from the shown data
    (and ``--clean-model``) toward ``--target``."""
    from tacleaner.attacks import PoisonContext, create_attack
    from tacleaner.attacks.frame import frame_for
    from tacleaner.attacks.poison import require_model
    from tacleaner.data.zeroshot import read_classes

    attack = create_attack(args.attack, **parse_params(args.param))
    if attack.ready():
        return attack
    if args.target is None:
        raise TacleanerError(f"attack {attack.name} learns its trigger: pass --trigger RUN, or --target LABEL "
                             "(and --clean-model CKPT when it optimises against a model)")
    require_model(attack, args.clean_model)
    classes = read_classes(args.classes)
    target = classes.classnames[classes.index(args.target)]
    log = stderr_log(args.quiet)
    clean_model = load_clean_model(args)
    attack.frame = frame_for(args.frame, clean_model, attack.name, sizes=shown_sizes)
    report = attack.prepare(PoisonContext(images=table.images, captions=table.captions, target=target,
                                          templates=classes.templates, seed=args.seed, clean_model=clean_model,
                                          device="cpu", log=log, frame=attack.frame))
    if report:
        log(f"prepared {attack.name} trigger: {describe(report)}")
    return attack
