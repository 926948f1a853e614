"""The ``tacleaner`` parser, assembled from the command families; each family module builds
its own commands' parsers beside their handlers (``add_parsers``)."""
from __future__ import annotations

import argparse

from .audit import add_parsers as add_audit
from .catalog import add_parsers as add_catalog
from .detect import add_parsers as add_detect
from .evaluate import add_parsers as add_evaluate
from .experiment import add_parsers as add_experiment
from .export import add_parsers as add_export
from .options import Handler, add_global_options
from .poison import add_parsers as add_poison
from .report import add_parsers as add_report
from .scan import add_parsers as add_scan
from .show_trigger import add_parsers as add_show_trigger
from .subtexts import add_parsers as add_subtexts
from .synth import add_parsers as add_synth
from .training import add_parsers as add_training

# in the order --help lists their commands
FAMILIES = (add_synth, add_catalog, add_poison, add_training, add_evaluate, add_scan, add_detect, add_export,
            add_show_trigger, add_subtexts, add_audit, add_experiment, add_report)


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


def build_parser() -> argparse.ArgumentParser:
    """Every command's parser; the parsed namespace carries the command's ``handler``."""
    p = Parser(prog="tacleaner", formatter_class=HelpFormatter,
               description="Backdoor attacks on CLIP and the fine-tuning defenses that remove them.")
    add_global_options(p, top=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, helptext: str, handler: Handler) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=helptext, description=helptext, formatter_class=HelpFormatter)
        add_global_options(s, top=False)
        s.set_defaults(handler=handler)
        return s

    for add_family in FAMILIES:
        add_family(add)
    return p
