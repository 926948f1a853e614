"""``tacleaner evaluate``: zero-shot clean accuracy and, with an attack, ASR@1 / ASR@10."""
from __future__ import annotations

import argparse
import warnings

from tacleaner.errors import TacleanerError

from .common import is_main, load_bundle, output_file, parse_params
from .options import AddCommand, add_device_option, add_model_options, add_param_option, non_negative_int, positive_int


def add_parsers(add: AddCommand) -> None:
    s = add("evaluate", "zero-shot CA and, with an attack, ASR@1 / ASR@10", evaluate)
    add_model_options(s, checkpoint_required=False)
    s.add_argument("--pretrained", help="open_clip pretrained tag, with --model and no --checkpoint (default: none)")
    s.add_argument("--data", required=True, help="zero-shot CSV (image, label) or ImageFolder tree")
    s.add_argument("--classes", default="imagenet", help="classes JSON, or 'imagenet'")
    s.add_argument("--attack", help="attack name, with --target (default: none: CA only)")
    add_param_option(s, "attack")
    s.add_argument("--trigger", help="a poisoning run folder or manifest.json: evaluate with exactly its attack "
                   "(default: none)")
    s.add_argument("--target", help="target label (default: the --trigger run's)")
    s.add_argument("--out", help="write the metrics JSON here (default: print only)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    add_device_option(s)
    s.add_argument("--batch-size", type=positive_int, default=256, help="images per forward pass")
    s.add_argument("--present-classes", action="store_true", help="classify among the classes present in --data "
                   "only (ImageNet-A and -R: their 200 WordNet-id folders), as the literature evaluates them")
    s.add_argument("--num-workers", type=non_negative_int, help="processes decoding images (default: on a GPU up "
                   "to 8, one core left; on CPU 0, decoding in the main process)")


def evaluate(args: argparse.Namespace) -> int:
    from tacleaner import distributed
    from tacleaner.data.zeroshot import read_classes, read_zeroshot
    from tacleaner.evaluate import evaluate as run_eval
    from tacleaner.fileio import write_json

    _check_options(args)
    classes = read_classes(args.classes)
    attack, target = _attack_and_target(args, classes)
    data = read_zeroshot(args.data, classes)
    if args.present_classes:
        data, classes, target = _present_only(args, data, classes, target)
    _, device = distributed.setup(args.device)  # under torchrun: join the job, shard the images
    result = run_eval(load_bundle(args), data, classes, attack=attack, target=target,
                      device=device, batch_size=args.batch_size,
                      num_workers=args.num_workers, progress=not args.quiet)
    result = {"checkpoint": args.checkpoint, **result}
    if not is_main():
        return 0
    if result["skipped"]:
        from tacleaner.data.pairs import describe_skipped

        warnings.warn(f"{args.data}: {sum(result['skipped'].values())} file(s) not evaluated "
                      f"({describe_skipped(result['skipped'])})" + (f"; counted in {args.out}" if args.out else ""))
    if args.out:
        write_json(args.out, result)
    fmt = lambda x: "—" if x is None else f"{100 * x:.2f}%"  # noqa: E731
    print(f"CA {fmt(result['clean_acc'])}  ASR@1 {fmt(result['asr_at_1'])}  ASR@10 {fmt(result['asr_at_10'])}"
          + (f"  ({result['images_per_s']:.0f} images/s)" if result.get("images_per_s") else "")
          + (f"  -> {args.out}" if args.out else ""))
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """Options that contradict each other, refused before anything is read."""
    if args.trigger and (args.attack or args.param):
        raise TacleanerError("--trigger fixes the attack and its parameters; drop --attack / --param")
    if args.param and not args.attack:
        raise TacleanerError("--param needs --attack NAME")
    if args.out:
        output_file(args.out, args.overwrite, "metrics JSON")  # refused before the evaluation, not after
    elif args.overwrite:
        raise TacleanerError("--overwrite replaces an --out file; there is no --out")
    if args.pretrained and args.checkpoint:
        raise TacleanerError("--pretrained names weights to download; it does not combine with --checkpoint")


def _attack_and_target(args: argparse.Namespace, classes):
    """The attack of ``--trigger`` or ``--attack`` (None: clean accuracy only) and its target."""
    from tacleaner.attacks import create_attack, load_attack

    attack, target = None, args.target
    if args.trigger:  # reuse exactly the attack and trigger of a poisoning run
        attack, run_target = load_attack(args.trigger)
        target = target or run_target
    elif args.attack:
        attack = create_attack(args.attack, **parse_params(args.param))
        attack.require_prepared()
    if attack is not None and target is None:
        raise TacleanerError("--attack needs --target LABEL")
    if attack is None and target is not None:
        raise TacleanerError("--target needs --attack NAME or --trigger RUN")
    if attack is not None:
        classes.index(target)  # fail before the slow part
    return attack, target


def _present_only(args: argparse.Namespace, data, classes, target):
    """``--present-classes``: the images and classes restricted to the classes present in
    ``--data``, the target kept by name."""
    from tacleaner.data.zeroshot import present_classes

    if target is not None:
        target = classes.classnames[classes.index(target)]  # by name: indices change below
    data, classes = present_classes(data, classes)
    if target is not None and target not in classes.classnames:
        raise TacleanerError(f"--target {target!r}: not among the {len(classes.classnames)} classes present "
                             f"in {args.data}")
    return data, classes, target
