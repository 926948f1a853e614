"""``tacleaner subtexts``: TA-Cleaner's positive and negative subtexts of each caption."""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from tacleaner.errors import TacleanerError

from .options import AddCommand, non_negative_int, seed_int

NEGATIVE_MODES = ("wordnet", "random")  # tacleaner.text.negative_modes' registry, named without importing spaCy


def add_parsers(add: AddCommand) -> None:
    s = add("subtexts", "print each caption's positive and negative subtexts (TA-Cleaner)", subtexts)
    s.add_argument("--captions", required=True, help="text file, one caption per line (blank lines skipped)")
    s.add_argument("--json", action="store_true", help="a JSON list of {caption, positives, negatives}")
    s.add_argument("--m", type=non_negative_int, default=2, help="negatives per positive")
    s.add_argument("--seed", type=seed_int, default=0, help="seed of the negatives' word draws")
    s.add_argument("--negative-mode", default="wordnet", choices=NEGATIVE_MODES,
                   help="wordnet: same-kind replacements from WordNet and the captions; random: the paper's "
                   "random swaps of a noun, verb or adjective")
    s.add_argument("--spacy-model", help="spaCy pipeline (default: en_core_web_sm)")


def subtexts(args: argparse.Namespace) -> int:
    import sys

    from tacleaner.text.subtexts import SubtextConfig, SubtextGenerator
    from tacleaner.text.usable import SUPPORTED_LANGUAGES, count_causes, describe, unusable_cause

    captions = _read_captions(Path(args.captions))
    cfg = SubtextConfig(spacy_model=args.spacy_model, seed=args.seed, negatives_per_positive=args.m,
                        negative_mode=args.negative_mode)
    results = SubtextGenerator(cfg, vocabulary=captions).generate(captions)
    causes = [unusable_cause(r.caption, bool(r.positives), bool(r.negatives), args.m > 0) for r in results]
    counts = count_causes(causes)
    summary = (f"unusable for TA-Cleaner's subtext term: {describe(counts, len(results))} "
               f"(supported: {', '.join(SUPPORTED_LANGUAGES)})")
    if args.json:
        print(json.dumps([{"caption": r.caption, "positives": list(r.positives),
                           "negatives": [n.text for n in r.negatives], "unusable": cause,
                           "negative_details": [dataclasses.asdict(n) for n in r.negatives]}
                          for r, cause in zip(results, causes)], indent=1))
        print(summary, file=sys.stderr)
        return 0
    for r in results:
        print(r.caption)
        for p in r.positives:
            print(f"  + {p}")
        for n in r.negatives:
            print(f"  - {n.text}    [{n.kind}: {n.source} -> {n.replacement}, {n.origin}]")
    print(summary)
    return 0


def _read_captions(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file; none is an error."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except FileNotFoundError:
        raise TacleanerError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise TacleanerError(f"{path}: not UTF-8 text ({e})") from None
    captions = [line for line in lines if line]
    if not captions:
        raise TacleanerError(f"{path}: no captions (one per line)")
    return captions
