"""What the terminal shows: warnings as one line, ``--quiet``, and the silencing of the
libraries' own log lines. Outside the ``cli`` package so that library code (the scheduler's
worker processes) can show warnings the way a command does without importing the CLI."""
from __future__ import annotations

import logging
import sys
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Warnings as one line without the source path (``warnings.showwarning`` signature)."""
    print(f"warning: {str(message).splitlines()[0] if str(message) else category.__name__}", file=sys.stderr)


def stderr_log(quiet: bool) -> Callable[[str], None]:
    """A ``log(message)`` for the library's progress lines: stderr, or nothing under ``--quiet``."""
    return (lambda msg: None) if quiet else (lambda msg: print(msg, file=sys.stderr))


@contextmanager
def command_console() -> Iterator[None]:
    """The terminal of one command: no log lines from the libraries (open_clip announces a
    random init through the root logger, and a failure is our one ``error:`` line), no
    FutureWarnings from torch, and every other warning as :func:`show_warning`'s one line."""
    logging.disable(logging.CRITICAL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.showwarning = show_warning
        yield
