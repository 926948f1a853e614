"""Options several commands share, and the argparse types that check a value as it is parsed,
each written once. Nothing here imports torch: ``tacleaner --help`` builds every parser."""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable

from tacleaner.params import coerce, field_types

Handler = Callable[[argparse.Namespace], int]  # a command: parsed options in, exit status out
AddCommand = Callable[[str, str, Handler], argparse.ArgumentParser]  # (name, help, handler) -> its parser


# -- argparse types ----------------------------------------------------------------------------
def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``minimum``. Text that is no integer gets argparse's own
    ``invalid int value`` error, as ``type=int`` does."""

    def convert(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    convert.__name__ = "int"  # argparse names the type in its errors
    return convert


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def seed_int(text: str) -> int:
    """argparse type: a seed, an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"seeds are >= 0, got {value}")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite number (not nan or inf)."""
    try:
        return coerce(text, float)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}") from None


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    value = finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1)."""
    value = finite_float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1), got {value}")
    return value


# -- option groups -----------------------------------------------------------------------------
PAIRS_HELP = ("image-caption CSV, or WebDataset shards: a .tar, a folder of them, or a {00000..00099}.tar "
              "pattern")
PARAM_LISTED_BY = {"attack": "attacks", "objective": "defenses"}  # the command that lists each kind's parameters


def add_global_options(p: argparse.ArgumentParser, top: bool) -> None:
    # Accepted before or after the command; the sub-parser's copy must not reset the top one.
    p.add_argument("--quiet", action="store_true", default=False if top else argparse.SUPPRESS,
                   help="no progress bars or log lines on the terminal")


def add_param_option(p: argparse.ArgumentParser, of: str = "attack", help: str | None = None) -> None:
    """``--param KEY=VALUE``, repeatable: the parameters of a registered attack or objective
    (``of``), or ``help`` for settings of another kind."""
    help = help or (f"{of} parameter, repeatable (default: the {of}'s own, see `tacleaner "
                    f"{PARAM_LISTED_BY[of]}`)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help=help)


def add_pairs_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help=PAIRS_HELP)


def add_data_columns(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image-col", default="image", help="CSV column with the image path")
    p.add_argument("--caption-col", default="caption", help="CSV column with the caption")


def add_device_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto = cuda when available, else cpu")


def add_run_folder_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue an existing run folder")
    g.add_argument("--overwrite", action="store_true",
                   help="replace an existing run folder (only one tacleaner created)")


def add_model_options(p: argparse.ArgumentParser, checkpoint_required: bool) -> None:
    p.add_argument("--checkpoint", required=checkpoint_required,
                   help="model file: ours (safetensors), open_clip, or an OpenAI-format state dict (CleanCLIP/BadCLIP)"
                   + ("" if checkpoint_required else " (default: none: --model with random or --pretrained weights)"))
    p.add_argument("--model", help="architecture for foreign checkpoints (RN50-quickgelu for OpenAI-format RN50; "
                   "default: the name our checkpoints carry)")


def add_clean_model_options(p: argparse.ArgumentParser, what: str) -> None:
    """``--clean-model`` (``what``: how the command names it) and its ``--model``."""
    p.add_argument("--clean-model", help=f"{what}, for attacks that optimise a trigger against it (default: none)")
    p.add_argument("--model", help="architecture of a foreign --clean-model checkpoint (default: from the checkpoint)")


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """One ``--field-name`` option per dataclass field, default None so that unset options
    fall through to the YAML file or the dataclass default."""
    group = parser.add_argument_group(title)
    for name, typ in field_types(cls).items():
        f = next(x for x in dataclasses.fields(cls) if x.name == name)
        group.add_argument(f"--{name.replace('_', '-')}", type=_field_type(typ), default=None,
                           metavar=getattr(typ, "__name__", "VALUE").upper(), help=f"default {f.default}")


def _field_type(typ: Any) -> Callable[[str], Any]:
    """argparse type for a dataclass field of type ``typ``, checked as YAML values are."""

    def convert(text: str) -> Any:
        try:
            return coerce(text, typ)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {getattr(typ, '__name__', typ)}, got {text!r}") from None

    convert.__name__ = getattr(typ, "__name__", "value")  # argparse names the type in its errors
    return convert
