"""Why a caption gives TA-Cleaner's subtext term nothing to train on, one cause per caption:

- ``language not supported``: the caption has no letters (emoji, digits, punctuation only) or
  fewer than half of its letters are Latin (another script: Chinese, Cyrillic, Arabic, ...).
  The parser and WordNet are English; this is the part of a caption's language that can be told
  cheaply, so another language written in Latin letters (French, German) is not told apart and
  is parsed as English.
- ``no parse``: no positive subtext (the parse found no depicted noun phrase);
- ``no swappable word``: a positive but no negative (no word the negative rules may replace).

Such samples are still trained on by the CleanCLIP part of the loss; only the subtext term
loses them. Counted per epoch in the run folder's ``subtext_masking.json`` and by ``tacleaner
subtexts``.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

CAUSES = ("language not supported", "no parse", "no swappable word")
SUPPORTED_LANGUAGES = ("English",)
WARN_SHARE = 0.2  # share of an epoch's drawn captions unusable above which `clean` warns once


def language_supported(caption: str) -> bool:
    letters = [c for c in caption if c.isalpha()]
    return bool(letters) and sum(c.isascii() for c in letters) >= len(letters) / 2


def unusable_cause(caption: str, positives: bool, negatives: bool, need_negatives: bool = True) -> str | None:
    """The cause a caption with (or without) positives and negatives is unusable, or None."""
    if positives and (negatives or not need_negatives):
        return None
    if not language_supported(caption):
        return CAUSES[0]
    return CAUSES[1] if not positives else CAUSES[2]


def count_causes(causes: Iterable[str | None]) -> dict[str, int]:
    """Every cause with its count (zeros included), in :data:`CAUSES` order."""
    seen = Counter(c for c in causes if c is not None)
    return {c: seen.get(c, 0) for c in CAUSES}


def describe(counts: dict[str, int], total: int) -> str:
    bad = sum(counts.values())
    parts = ", ".join(f"{n} {c}" for c, n in counts.items() if n)
    return f"{bad} of {total} ({100 * bad / total:.0f}%: {parts})" if total and bad else f"0 of {total}"
