"""Command line: ``tacleaner <command>``. The only module that reads argv.

Every command is a small function over the library; ``main(argv)`` returns the exit status
(0 success, 2 bad input with a one-line ``error:`` message, 130 interrupted).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
import warnings
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import SharedError, TacleanerError
from .fileio import check_inputs_outside, release_all_locks

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}
MULTI_PROCESS = ("train", "clean", "evaluate", "run", "demo")  # the commands torchrun may start on several processes


def command(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    COMMANDS[fn.__name__.rstrip("_").replace("_", "-")] = fn
    return fn


# -- shared option groups ----------------------------------------------------------------------
def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """One ``--field-name`` option per dataclass field, default None so that unset options
    fall through to the YAML file or the dataclass default."""
    from .params import coerce, field_types

    group = parser.add_argument_group(title)
    for name, typ in field_types(cls).items():
        f = next(x for x in dataclasses.fields(cls) if x.name == name)

        def convert(text: str, typ=typ) -> Any:
            try:
                return coerce(text, typ)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {getattr(typ, '__name__', typ)}, got {text!r}") from None

        convert.__name__ = getattr(typ, "__name__", "value")  # argparse names the type in its errors
        group.add_argument(f"--{name.replace('_', '-')}", type=convert, default=None,
                           metavar=getattr(typ, "__name__", "VALUE").upper(), help=f"default {f.default}")


def dataclass_from(cls: type, args: argparse.Namespace, yaml_path: str | None = None,
                   defaults: dict[str, Any] | None = None) -> Any:
    """Dataclass defaults -> ``defaults`` -> YAML file -> command-line overrides, every value
    type-checked."""
    from .params import build

    values: dict[str, Any] = {}
    if yaml_path:
        from .fileio import load_yaml_file

        loaded = load_yaml_file(yaml_path) or {}
        if not isinstance(loaded, dict):
            raise TacleanerError(f"{yaml_path}: expected a mapping of settings")
        values.update(loaded)
    for f in dataclasses.fields(cls):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = v
    if defaults:
        from .train import with_defaults

        values = with_defaults(defaults, values)
    return build(cls, values, str(yaml_path) if yaml_path else "settings")


def parse_params(items: list[str] | None, option: str = "--param") -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML scalars (numbers, booleans, strings)."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise TacleanerError(f"{option} {item!r}: expected KEY=VALUE")
        if not value.strip():
            raise TacleanerError(f"{option} {item!r}: no value after '='")
        name = key.strip().replace("-", "_")
        if name in out:
            raise TacleanerError(f"{option} {name} given twice")
        try:
            out[name] = yaml.safe_load(value)
        except yaml.YAMLError:
            out[name] = value  # read as text; the parameter's type check names it if it is not one
    return out


def output_file(path: str, overwrite: bool, what: str = "file") -> Path:
    """An --out file: never a folder, never an existing file without --overwrite."""
    out = Path(path)
    if out.is_dir():
        raise TacleanerError(f"{out}: is a folder; --out names the {what} to write")
    if out.exists() and not overwrite:
        raise TacleanerError(f"{out}: exists; pass --overwrite to replace it")
    return out


def finite_float(text: str) -> float:
    """argparse type: a finite number (not nan or inf)."""
    from .params import coerce

    try:
        return coerce(text, float)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}") from None


def seed_int(text: str) -> int:
    """argparse type: a seed, an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seeds are >= 0, got {value}")
    return value


def add_run_folder_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue an existing run folder")
    g.add_argument("--overwrite", action="store_true", help="replace an existing run folder (only one tacleaner created)")


def add_model_options(p: argparse.ArgumentParser, checkpoint_required: bool) -> None:
    p.add_argument("--checkpoint", required=checkpoint_required,
                   help="model file: ours (safetensors), open_clip, or an OpenAI-format state dict (CleanCLIP/BadCLIP)"
                   + ("" if checkpoint_required else " (default: none: --model with random or --pretrained weights)"))
    p.add_argument("--model", help="architecture for foreign checkpoints (RN50-quickgelu for OpenAI-format RN50; "
                   "default: the name our checkpoints carry)")


def load_bundle(args: argparse.Namespace):
    from .models import create_model, load_model

    if getattr(args, "checkpoint", None):
        return load_model(args.checkpoint, args.model)
    if not args.model:
        raise TacleanerError("pass --checkpoint FILE or --model NAME")
    return create_model(args.model, pretrained=getattr(args, "pretrained", None))


def _clean_model(args: argparse.Namespace):
    """The clean (pre-implant) model of ``--clean-model``, for attacks that optimise against it."""
    if not args.clean_model:
        return None
    from .models import load_model

    return load_model(args.clean_model, args.model)


def _stderr_log(args: argparse.Namespace) -> Callable[[str], None]:
    return (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))


def _describe(report: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in report.items())


# -- commands ----------------------------------------------------------------------------------
@command
def synth(args: argparse.Namespace) -> int:
    from .data.synth import SynthConfig, generate

    cfg = dataclass_from(SynthConfig, args)
    out = generate(args.out, cfg, overwrite=args.overwrite, progress=not args.quiet)
    print(f"wrote {out}: pretrain {cfg.pretrain}, implant {cfg.implant}, clean {cfg.clean} pairs; "
          f"zero-shot {cfg.zeroshot_per_class} images x classes in {out / 'classes.json'}")
    return 0


@command
def models(args: argparse.Namespace) -> int:
    from .models import list_models, shipped_models

    names = list_models() if args.all else shipped_models() + ["RN50", "RN50-quickgelu", "ViT-B-32", "ViT-B-32-quickgelu"]
    print("\n".join(names))
    if not args.all:
        print("(--all lists every open_clip architecture)")
    return 0


def _print_registry(registry, footer: str = "") -> int:
    from .params import default_of

    for name in registry:
        cls = registry.get(name)
        params = ", ".join(f"{f.name}={default_of(f)}" for f in dataclasses.fields(cls))
        print(f"{name:10s} {cls.description}\n{'':10s} params: {params}")
    if footer:
        print(footer)
    return 0


@command
def attacks(args: argparse.Namespace) -> int:
    from .attacks import ATTACKS

    return _print_registry(ATTACKS)


@command
def defenses(args: argparse.Namespace) -> int:
    from .defenses import DEFENSES

    return _print_registry(DEFENSES, "\ncombine defenses with '+' (e.g. tacleaner+par): the first's losses plus the "
                                     "others' extra terms (the CLIP loss once), with the parameters of all")


@command
def poison(args: argparse.Namespace) -> int:
    from .attacks import create_attack, poison_dataset
    from .data.zeroshot import imagenet_classes, read_classes

    from .environment import resolve_device

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
                       image_col=args.image_col, caption_col=args.caption_col, overwrite=args.overwrite,
                       clean_model=_clean_model(args), device=device, log=_stderr_log(args),
                       frame=args.frame)
    if "prepare" in m:
        print(f"trigger: {Path(args.out) / m['trigger']}  ({_describe(m['prepare'])})")
    print(f"poisoned {m['num_poisoned']} of {m['num_total']} pairs with {m['attack']} toward {target!r} "
          f"(in a {m['frame']} px model frame): {Path(args.out) / 'data.csv'}")
    return 0


def _train_common(args: argparse.Namespace, bundle, objective) -> int:
    from .data.pairs import read_pairs
    from .environment import resolve_device, resolve_precision
    from .train import TrainConfig, train

    cfg = dataclass_from(TrainConfig, args, args.config, defaults=objective.train_defaults)
    objective.check_ready()
    check_inputs_outside(args.out, [args.data, args.config, getattr(args, "init", None), getattr(args, "checkpoint", None)])
    resolve_precision(cfg.precision, resolve_device(cfg.device))  # before the run folder exists
    table = read_pairs(args.data, args.image_col, args.caption_col)
    import torch

    torch.manual_seed(cfg.seed)
    train(bundle, table, objective, cfg, args.out, resume=args.resume, overwrite=args.overwrite,
          progress=not args.quiet, extra_config={"init": getattr(args, "init", None) or getattr(args, "checkpoint", None)})
    if _is_main():
        print(f"wrote {Path(args.out) / 'model.safetensors'}")
    return 0


@command
def train_(args: argparse.Namespace) -> int:
    from .defenses import create_defense
    from .models import create_model, load_model

    import torch

    if args.init and args.pretrained:
        raise TacleanerError("--init and --pretrained both name starting weights; pass one")
    if not args.init and not args.model:
        raise TacleanerError("pass --model NAME (random or --pretrained weights) or --init CHECKPOINT")
    torch.manual_seed(args.seed or 0)  # the random init is part of the run's seed
    bundle = load_model(args.init, args.model) if args.init else create_model(args.model, args.pretrained)
    return _train_common(args, bundle, create_defense(args.objective, **parse_params(args.param)))


@command
def clean(args: argparse.Namespace) -> int:
    from .defenses import create_defense

    objective = create_defense(args.defense, **parse_params(args.param))
    return _train_common(args, load_bundle(args), objective)


@command
def evaluate(args: argparse.Namespace) -> int:
    from .attacks import create_attack, load_attack
    from .data.zeroshot import read_classes, read_zeroshot
    from .evaluate import evaluate as run_eval
    from . import distributed
    from .fileio import write_json

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
    if args.batch_size < 1:
        raise TacleanerError(f"--batch-size must be >= 1, got {args.batch_size}")
    classes = read_classes(args.classes)
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
    data = read_zeroshot(args.data, classes)
    if args.present_classes:
        from .data.zeroshot import present_classes

        if target is not None:
            target = classes.classnames[classes.index(target)]  # by name: indices change below
        data, classes = present_classes(data, classes)
        if target is not None and target not in classes.classnames:
            raise TacleanerError(f"--target {target!r}: not among the {len(classes.classnames)} classes present "
                                 f"in {args.data}")
    if args.num_workers is not None and args.num_workers < 0:
        raise TacleanerError(f"--num-workers must be >= 0, got {args.num_workers}")
    _, device = distributed.setup(args.device)  # under torchrun: join the job, shard the images
    result = run_eval(load_bundle(args), data, classes, attack=attack, target=target,
                      device=device, batch_size=args.batch_size,
                      num_workers=args.num_workers, progress=not args.quiet)
    result = {"checkpoint": args.checkpoint, **result}
    if not _is_main():
        return 0
    if result["skipped"]:
        from .data.pairs import describe_skipped

        warnings.warn(f"{args.data}: {sum(result['skipped'].values())} file(s) not evaluated "
                      f"({describe_skipped(result['skipped'])})" + (f"; counted in {args.out}" if args.out else ""))
    if args.out:
        write_json(args.out, result)
    fmt = lambda x: "—" if x is None else f"{100 * x:.2f}%"  # noqa: E731
    print(f"CA {fmt(result['clean_acc'])}  ASR@1 {fmt(result['asr_at_1'])}  ASR@10 {fmt(result['asr_at_10'])}"
          + (f"  ({result['images_per_s']:.0f} images/s)" if result.get("images_per_s") else "")
          + (f"  -> {args.out}" if args.out else ""))
    return 0


@command
def scan(args: argparse.Namespace) -> int:
    from . import scan as scanning
    from .data.zeroshot import read_classes, read_zeroshot
    from .fileio import prepare_run_dir, write_json
    from .params import build
    from .environment import resolve_device

    classes = read_classes(args.classes)
    data = read_zeroshot(args.data, classes)
    cfg = build(scanning.ScanConfig, parse_params(args.param), "scan --param")
    device = resolve_device(args.device)
    bundle = load_bundle(args)
    if args.out:
        check_inputs_outside(args.out, [args.checkpoint, args.data, args.classes])
    out = prepare_run_dir(args.out, overwrite=args.overwrite, resumable=False) if args.out else None
    report, triggers = scanning.scan(bundle, data, classes, cfg, device)
    print(scanning.format_report(report))
    if out is not None:
        write_json(out / "scan.json", report.to_json())
        example, _ = scanning.frame_images(bundle, data, 1)
        scanning.save_triggers(triggers, example[0], out / "inverted_triggers.png")
        print(f"wrote {out / 'scan.json'} and {out / 'inverted_triggers.png'}")
    return 0


@command
def export(args: argparse.Namespace) -> int:
    from .models import export_model

    out = output_file(args.out, args.overwrite)
    if out.exists() and out.resolve() == Path(args.checkpoint).resolve():
        raise TacleanerError(f"{out}: is the --checkpoint being exported; write the export to another file")
    bundle = load_bundle(args)
    export_model(bundle, out, args.format)
    print(f"wrote {out} ({args.format} layout, {bundle.model_name}); load it with "
          + ("open_clip.create_model(NAME, pretrained=FILE)" if args.format == "open_clip"
             else "tacleaner --checkpoint FILE --model NAME, or CleanCLIP's --checkpoint"))
    return 0


@command
def show_trigger(args: argparse.Namespace) -> int:
    from .attacks import PoisonContext, create_attack, load_attack
    from .attacks.poison import require_model
    from .attacks.frame import frame_for
    from .attacks.show import read_table, sample_indices, trigger_grid, triggered_samples
    from .attacks.stealth import format_report, stealth_report
    from .data.pairs import image_size
    from .data.zeroshot import read_classes
    from .fileio import atomic_path

    if args.amplify is not None and not args.amplify > 0:
        raise TacleanerError(f"--amplify must be > 0, got {args.amplify}")
    if args.num < 1:
        raise TacleanerError(f"--num must be >= 1, got {args.num}")
    out = output_file(args.out, args.overwrite, "PNG file")
    table = read_table(args.data, args.image_col, args.caption_col)
    indices = sample_indices(len(table), args.num, args.seed)
    shown_sizes = (image_size(table.images[i]) for i in indices)  # read only if a default frame is needed
    if args.trigger:  # exactly the attack and trigger of a poisoning run
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
    elif args.attack:
        attack = create_attack(args.attack, **parse_params(args.param))
        if not attack.ready():  # learned from the data (and the clean model) first
            if args.target is None:
                raise TacleanerError(f"attack {attack.name} learns its trigger: pass --trigger RUN, or --target LABEL "
                                     "(and --clean-model CKPT when it optimises against a model)")
            require_model(attack, args.clean_model)
            classes = read_classes(args.classes)
            target = classes.classnames[classes.index(args.target)]
            log = _stderr_log(args)
            clean_model = _clean_model(args)
            attack.frame = frame_for(args.frame, clean_model, attack.name, sizes=shown_sizes)
            report = attack.prepare(PoisonContext(images=table.images, captions=table.captions, target=target,
                                                  templates=classes.templates, seed=args.seed,
                                                  clean_model=clean_model, device="cpu", log=log,
                                                  frame=attack.frame))
            if report:
                log(f"prepared {attack.name} trigger: {_describe(report)}")
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


@command
def subtexts(args: argparse.Namespace) -> int:
    import json

    from .text.subtexts import SubtextConfig, SubtextGenerator

    if args.m < 0:
        raise TacleanerError(f"--m must be >= 0, got {args.m}")
    path = Path(args.captions)
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except FileNotFoundError:
        raise TacleanerError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise TacleanerError(f"{path}: not UTF-8 text ({e})") from None
    captions = [line for line in lines if line]
    if not captions:
        raise TacleanerError(f"{path}: no captions (one per line)")
    cfg = SubtextConfig(spacy_model=args.spacy_model, seed=args.seed, negatives_per_positive=args.m,
                        negative_mode=args.negative_mode)
    results = SubtextGenerator(cfg, vocabulary=captions).generate(captions)
    if args.json:
        print(json.dumps([{"caption": r.caption, "positives": list(r.positives),
                           "negatives": [n.text for n in r.negatives],
                           "negative_details": [dataclasses.asdict(n) for n in r.negatives]} for r in results],
                         indent=1))
        return 0
    for r in results:
        print(r.caption)
        for p in r.positives:
            print(f"  + {p}")
        for n in r.negatives:
            print(f"  - {n.text}    [{n.kind}: {n.source} -> {n.replacement}, {n.origin}]")
    return 0


@command
def run(args: argparse.Namespace) -> int:
    from .experiment import load_config

    cfg, raw = load_config(args.config)
    return _run_experiment(cfg, raw, args.out or f"runs/{cfg.name}", args)


def _run_experiment(cfg, raw, out, args) -> int:
    from .experiment import Experiment

    t0 = time.perf_counter()
    if args.jobs is not None and args.jobs < 1:
        raise TacleanerError(f"--jobs must be >= 1, got {args.jobs}")
    check_inputs_outside(out, [getattr(args, "config", None)]
                         + [v for v in cfg.data.values() if isinstance(v, str)] + [cfg.model.get("init")])
    from .distributed import from_env

    jobs = args.jobs or (min(2, os.cpu_count() or 1) if args.command == "demo" and not from_env().enabled else 1)
    exp = Experiment(cfg, raw, out, resume=args.resume, overwrite=args.overwrite, progress=not args.quiet, jobs=jobs)
    try:
        exp.run()
    finally:
        exp.close()
    if not _is_main():
        return 0
    print((exp.out / "results.md").read_text())
    print(f"results in {exp.out} (results.json, aggregate.json, results.md, results.png); "
          f"{time.perf_counter() - t0:.0f} s")
    return 0


@command
def demo(args: argparse.Namespace) -> int:
    from .experiment import parse_config

    name = "demo-quick.yaml" if args.quick else "demo.yaml"
    configs = resources.files("tacleaner.configs")
    raw = yaml.safe_load(configs.joinpath(name).read_text())
    out = args.out or f"runs/{raw['name']}-{time.strftime('%Y%m%d-%H%M%S')}"
    code = _run_experiment(parse_config(raw, name), raw, out, args)
    record = configs.joinpath(HELD_OUT_RECORD)
    if code == 0 and not args.quick and _is_main() and record.is_file():
        from .report import held_out_summary

        print(held_out_summary(json.loads(record.read_text())))
    return code


HELD_OUT_RECORD = "demo.heldout.json"  # what experiments/demo-heldout.yaml measured (scripts/heldout_record.py)


# -- parser ------------------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit 2), pointing at the command's --help. Options are
    spelled out: an abbreviation (``--check`` for ``--checkpoint``) is an unknown option."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


class HelpFormatter(argparse.HelpFormatter):
    """Every option's default in its help line (flags and options documented otherwise excepted)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("default" in text or action.default in (None, argparse.SUPPRESS) or action.required
                or isinstance(action, (argparse._StoreTrueAction, argparse._HelpAction))):
            return text
        return f"{text} (default: %(default)s)".strip()


def add_global_options(p: argparse.ArgumentParser, top: bool) -> None:
    # Accepted before or after the command; the sub-parser's copy must not reset the top one.
    p.add_argument("--quiet", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="no progress bars or log lines on the terminal")


def add_data_columns(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-col", default="image", help="CSV column with the image path")
    p.add_argument("--caption-col", default="caption", help="CSV column with the caption")


def build_parser() -> argparse.ArgumentParser:
    from .data.synth import SynthConfig
    from .train import TrainConfig

    p = Parser(prog="tacleaner", formatter_class=HelpFormatter,
                                description="Backdoor attacks on CLIP and the fine-tuning defenses that remove them.")
    add_global_options(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command_parser(name: str, helptext: str) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=helptext, description=helptext, formatter_class=HelpFormatter)
        add_global_options(s, top=False)
        return s

    s = command_parser("synth", "generate the embedded synthetic image-caption world")
    s.add_argument("--out", required=True, help="folder to write")
    s.add_argument("--overwrite", action="store_true", help="replace a world folder tacleaner created")
    add_dataclass_options(s, SynthConfig, "world size")

    s = command_parser("models", "list model architectures")
    s.add_argument("--all", action="store_true", help="every open_clip architecture")
    command_parser("attacks", "list registered attacks and their parameters")
    command_parser("defenses", "list registered defenses and their parameters")

    s = command_parser("poison", "poison an image-caption CSV with an attack")
    s.add_argument("--data", required=True, help="image-caption CSV, or WebDataset shards: a .tar, a folder of them, or a {00000..00099}.tar pattern")
    s.add_argument("--attack", required=True, help="attack name (see `tacleaner attacks`)")
    s.add_argument("--target", required=True, help="target class name or index")
    s.add_argument("--num", type=int, required=True, help="number of pairs to poison")
    s.add_argument("--out", required=True, help="poisoning run folder to write")
    s.add_argument("--seed", type=seed_int, default=0, help="which pairs are poisoned, and the trigger's draw")
    s.add_argument("--classes", default="imagenet", help="classes JSON (or 'imagenet') for the target and templates")
    s.add_argument("--param", action="append", metavar="KEY=VALUE", help="attack parameter, repeatable (default: the attack's own, see `tacleaner attacks`)")
    add_data_columns(s)
    s.add_argument("--clean-model", help="the clean (pre-implant) checkpoint, for attacks that optimise a trigger "
                   "against it (default: none)")
    s.add_argument("--model", help="architecture of a foreign --clean-model checkpoint (default: from the checkpoint)")
    s.add_argument("--frame", type=int, help="side of the square model input the trigger is applied in: triggered "
                   "images are resized (shorter side) and centre-cropped to it, as the model sees them (default: "
                   "--clean-model's input size; else the images' own side when all to poison are square of one "
                   "size; else 224, RN50's and ViT-B/32's)")
    s.add_argument("--device", default="auto", help="auto = cuda when available, else cpu")
    s.add_argument("--overwrite", action="store_true", help="replace a poisoning folder tacleaner created")

    for name, helptext in (("train", "train or fine-tune a CLIP model on image-caption pairs"),
                           ("clean", "apply a fine-tuning defense to a (backdoored) model")):
        s = command_parser(name, helptext)
        s.add_argument("--data", required=True, help="image-caption CSV, or WebDataset shards: a .tar, a folder of them, or a {00000..00099}.tar pattern")
        s.add_argument("--out", required=True, help="run folder")
        s.add_argument("--config", help="YAML with training settings, overridden by options (default: none)")
        add_data_columns(s)
        s.add_argument("--param", action="append", metavar="KEY=VALUE", help="objective parameter, repeatable (default: the objective's own, see `tacleaner defenses`)")
        add_run_folder_options(s)
        add_dataclass_options(s, TrainConfig, "training")
        if name == "train":
            s.add_argument("--model", help="architecture name (see `tacleaner models`; default: the --init "
                           "checkpoint's own)")
            s.add_argument("--init", help="start from this checkpoint instead of random weights (default: none)")
            s.add_argument("--pretrained", help="open_clip pretrained tag, needs network (default: none)")
            s.add_argument("--objective", default="finetune", help="training objective (a registered defense)")
        else:
            s.add_argument("--defense", required=True, help="defense name (see `tacleaner defenses`)")
            add_model_options(s, checkpoint_required=True)

    s = command_parser("evaluate", "zero-shot CA and, with an attack, ASR@1 / ASR@10")
    add_model_options(s, checkpoint_required=False)
    s.add_argument("--pretrained", help="open_clip pretrained tag, with --model and no --checkpoint (default: none)")
    s.add_argument("--data", required=True, help="zero-shot CSV (image, label) or ImageFolder tree")
    s.add_argument("--classes", default="imagenet", help="classes JSON, or 'imagenet'")
    s.add_argument("--attack", help="attack name, with --target (default: none: CA only)")
    s.add_argument("--param", action="append", metavar="KEY=VALUE", help="attack parameter, repeatable (default: the attack's own, see `tacleaner attacks`)")
    s.add_argument("--trigger", help="a poisoning run folder or manifest.json: evaluate with exactly its attack "
                   "(default: none)")
    s.add_argument("--target", help="target label (default: the --trigger run's)")
    s.add_argument("--out", help="write the metrics JSON here (default: print only)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    s.add_argument("--device", default="auto", help="auto = cuda when available, else cpu")
    s.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    s.add_argument("--present-classes", action="store_true", help="classify among the classes present in --data "
                   "only (ImageNet-A and -R: their 200 WordNet-id folders), as the literature evaluates them")
    s.add_argument("--num-workers", type=int, help="processes decoding images (default: on a GPU up to 8, one "
                   "core left; on CPU 0, decoding in the main process)")

    s = command_parser("scan", "audit a model for a backdoor target: per class, how strongly adversarial "
                       "probes are drawn to it, and the smallest trigger that sends other images there")
    add_model_options(s, checkpoint_required=True)
    s.add_argument("--data", required=True, help="zero-shot CSV (image, label) or ImageFolder tree of clean images")
    s.add_argument("--classes", default="imagenet", help="classes JSON, or 'imagenet'")
    s.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="scan setting, repeatable (defaults: images 256, eps 8/255, steps 10, step_size 2/255, "
                   "top 3, invert_steps 200, invert_lr 0.1, mask_weight 0.05, batch_size 128, seed 0)")
    s.add_argument("--out", help="folder for scan.json and inverted_triggers.png (default: print only)")
    s.add_argument("--overwrite", action="store_true", help="replace an --out folder tacleaner created")
    s.add_argument("--device", default="auto", help="auto = cuda when available, else cpu")

    s = command_parser("export", "write a model for other tools: an open_clip state dict or the OpenAI / "
                       "CleanCLIP layout ({'state_dict': ...})")
    add_model_options(s, checkpoint_required=True)
    s.add_argument("--out", required=True, help="the .pt file to write")
    s.add_argument("--format", default="openai", choices=("openai", "open_clip"),
                   help="openai: {'epoch', 'state_dict'} as CleanCLIP / BadCLIP save it; open_clip: the bare state dict")
    s.add_argument("--overwrite", action="store_true", help="replace an existing file")

    s = command_parser("show-trigger", "draw clean vs triggered images and their difference; "
                       "print PSNR / SSIM / L-inf")
    s.add_argument("--attack", help="attack name (default: the --trigger run's)")
    s.add_argument("--param", action="append", metavar="KEY=VALUE", help="attack parameter, repeatable (default: the attack's own, see `tacleaner attacks`)")
    s.add_argument("--data", required=True, help="image-caption CSV (or zero-shot CSV with image, label)")
    s.add_argument("--out", required=True, help="the PNG to write")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    s.add_argument("--num", type=int, default=8, help="number of images to show")
    s.add_argument("--seed", type=seed_int, default=0, help="picks the images; also the seed of a learned trigger")
    s.add_argument("--trigger", help="a poisoning run folder or manifest.json: show exactly its trigger "
                   "(default: none: --attack with its parameters)")
    s.add_argument("--target", help="target label, to learn the trigger of a learned attack without --trigger "
                   "(default: none)")
    s.add_argument("--classes", default="imagenet", help="classes JSON (or 'imagenet') for --target and its templates")
    s.add_argument("--clean-model", help="the clean checkpoint, for attacks that optimise a trigger against it "
                   "(default: none)")
    s.add_argument("--model", help="architecture of a foreign --clean-model checkpoint (default: from the checkpoint)")
    s.add_argument("--amplify", type=finite_float, help="difference row gain (default: the largest difference maps to 255)")
    s.add_argument("--frame", type=int, help="side of the model input the trigger is applied in (default: the "
                   "--trigger run's, else --clean-model's input size, else the images' own side when all shown are "
                   "square of one size, else 224)")
    add_data_columns(s)

    s = command_parser("subtexts", "print each caption's positive and negative subtexts (TA-Cleaner)")
    s.add_argument("--captions", required=True, help="text file, one caption per line (blank lines skipped)")
    s.add_argument("--json", action="store_true", help="a JSON list of {caption, positives, negatives}")
    s.add_argument("--m", type=int, default=2, help="negatives per positive")
    s.add_argument("--seed", type=seed_int, default=0, help="seed of the negatives' word draws")
    s.add_argument("--negative-mode", default="wordnet", choices=("wordnet", "random"),
                   help="wordnet: same-kind replacements from WordNet and the captions; random: the paper's "
                   "random swaps of a noun, verb or adjective")
    s.add_argument("--spacy-model", help="spaCy pipeline (default: en_core_web_sm)")

    for name in ("run", "demo"):
        s = command_parser(name, "run an experiment grid from a YAML config" if name == "run"
                           else "the whole story on the synthetic world, on a CPU in minutes")
        if name == "run":
            s.add_argument("config", help="experiment YAML (keys: README, 'Experiment configs')")
        else:
            s.add_argument("--quick", action="store_true", help="a smaller, faster version (~3 minutes)")
        s.add_argument("--out", help="experiment folder (default: runs/<name>" + ("" if name == "run" else "-<time>")
                       + ")")
        s.add_argument("--jobs", type=int, help="stages run in parallel processes (default: 1 for run, "
                       "min(2, CPU cores) for demo); results do not depend on it when the config fixes threads")
        add_run_folder_options(s)
    return p


def _is_main() -> bool:
    from .distributed import current

    return current().is_main


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line without the source path (``warnings.showwarning`` signature)."""
    print(f"warning: {str(message).splitlines()[0] if str(message) else category.__name__}", file=sys.stderr)


def _one_line(e: Exception) -> str:
    """The message of an error; one raised in a DataLoader worker arrives wrapped in the
    worker's traceback ("Caught TacleanerError in DataLoader worker process 0 ... Original
    Traceback ..."): its last line is the message."""
    text = str(e)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        return last.split("TacleanerError: ", 1)[-1]
    return text.splitlines()[0] if text else type(e).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed its one-line usage error (or the help)
        return int(e.code or 0)
    # open_clip announces random init through the root logger; our commands say what they load.
    logging.disable(logging.CRITICAL)  # their error lines too: a failure is our one line
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.showwarning = show_warning
        try:
            _check_launcher(args.command)
            return COMMANDS[args.command](args)
        except SharedError:  # rank 0 prints it and fails the job; a rank that failed first could get
            return 0          # rank 0 stopped by torchrun before it printed (seen: the message lost)
        except TacleanerError as e:
            _report(f"error: {_one_line(e)}")
            return 2
        except KeyboardInterrupt:
            resumable = args.command in ("train", "clean", "run", "demo")
            _report("interrupted; " + ("rerun with --resume to continue" if resumable else
                                       "nothing half-written was left behind"), hold=False)
            return 130
        except OSError as e:  # disk full, permissions: the system's words, naming the file
            where = f"{e.filename}: " if e.filename else ""
            _report(f"error: {where}{e.strerror or e}")
            return 2
        except Exception as e:  # a bug: one line, the traceback on request
            if os.environ.get("TACLEANER_TRACEBACK"):
                raise
            first = str(e).splitlines()[0] if str(e) else ""
            _report(f"error: unexpected {type(e).__name__}: {first} (set TACLEANER_TRACEBACK=1 for the traceback; "
                    "please report it)")
            return 1
        finally:
            release_all_locks()  # the command's run folders are free for the next writer
            _leave_job()


REPEAT_GRACE_S = 5.0  # how long torchrun's other processes hold back an error line


def _report(line: str, hold: bool = True) -> None:
    """Print a failed command's line on stderr: at once in a single process and in the first
    process of each machine (LOCAL_RANK 0); in torchrun's other processes only after
    :data:`REPEAT_GRACE_S` seconds, marked with their rank. Errors found before the processes
    join (a device that is not there, a bad option) are the same in every process: the first
    prints it, exits 2, and torchrun stops the others while they wait, so the job fails once,
    with one line. An error a process meets alone is still printed, a few seconds late. Ctrl-C
    (``hold`` False) reaches every process at once: only the first of each machine says so."""
    world, local = os.environ.get("WORLD_SIZE", "1"), os.environ.get("LOCAL_RANK", "0")
    if world not in ("", "1") and local != "0":
        if not hold:
            return
        time.sleep(REPEAT_GRACE_S)
        line = line.replace("error: ", f"error: rank {os.environ.get('RANK', local)}: ", 1)
    print(line, file=sys.stderr, flush=True)


def _check_launcher(name: str) -> None:
    """Under torchrun, only the commands that share work across processes may start."""
    if os.environ.get("WORLD_SIZE", "1") not in ("", "1") and name not in MULTI_PROCESS:
        raise (TacleanerError if os.environ.get("RANK", "0") == "0" else SharedError)(
            f"{name} runs in one process; start it without torchrun (torchrun runs {', '.join(MULTI_PROCESS)})")


def _leave_job() -> None:
    if "torch" in sys.modules:
        import torch.distributed as td

        if td.is_available() and td.is_initialized():
            td.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
