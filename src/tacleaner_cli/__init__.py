"""The application: ``tacleaner <command>``, the only package that reads argv. The library
(``tacleaner``) never imports it; it imports the library.

``main(argv)`` (app.py) returns the exit status; ``build_parser`` (parser.py) assembles one
module per command family, each with its parsers beside its handlers; options.py holds the
options and argparse types several commands share. Library modules (torch, open_clip, spaCy)
are imported inside the handlers, so ``tacleaner --help`` starts in well under a second.
"""
from .app import main
from .parser import build_parser

__all__ = ["build_parser", "main"]
