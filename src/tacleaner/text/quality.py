"""Sanity measures of generated subtexts: coverage, order-preserving positives, one-word
negatives."""
from __future__ import annotations

import re
from collections import Counter

from .lexicon import SPATIAL
from .resources import wordnet
from .subtext_config import Negative, Subtexts

_WORD = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]")


def caption_words(text: str) -> list[str]:
    """Lowercase words and punctuation marks, "an" read as "a" (articles follow the next word)."""
    return ["a" if w == "an" else w for w in _WORD.findall(text.lower())]


def is_subsequence(part: list[str], whole: list[str]) -> bool:
    it = iter(whole)
    return all(any(w == x for x in it) for w in part)


def one_word_swap(neg: Negative) -> bool:
    """``neg.text`` differs from ``neg.base`` in exactly the recorded word (a/an aside), and
    source and replacement have the same coarse part of speech in WordNet."""
    a, b = caption_words(neg.base), caption_words(neg.text)
    if len(a) != len(b):
        return False
    diff = [k for k, (x, y) in enumerate(zip(a, b)) if x != y]
    if len(diff) != 1:
        return False
    k = diff[0]
    if (a[k], b[k]) != (neg.source.lower(), neg.replacement.lower()):
        return False
    pos = {"object": ("n",), "attribute": ("a",), "relation": ("v",)}.get(neg.kind, ())
    if neg.kind == "relation" and a[k] in SPATIAL:
        return b[k] in SPATIAL
    wn = wordnet()
    return bool(pos) and all(any(wn.morphy(w, p) for p in pos) for w in (a[k], b[k]))


def quality_report(subtexts: list[Subtexts]) -> dict:
    """Coverage and sanity shares over generated subtexts (all shares in [0, 1]).

    coverage: captions with at least one positive and one negative; positive_subsequence:
    positives that are order-preserving word subsequences of their caption; negative_one_word:
    negatives that differ from their base in exactly the recorded word, of the same coarse
    part of speech (checked with WordNet); "a" and "an" count as the same word, as articles are
    adjusted to the word that follows them. Plus counts by kind and origin.
    """
    n = len(subtexts)
    positives = [(s.caption, p) for s in subtexts for p in s.positives]
    negatives = [neg for s in subtexts for neg in s.negatives]

    def share(k: int, total: int) -> float:
        return round(k / total, 4) if total else 0.0

    return {
        "captions": n,
        "coverage": share(sum(bool(s.positives and s.negatives) for s in subtexts), n),
        "with_positive": share(sum(bool(s.positives) for s in subtexts), n),
        "with_negative": share(sum(bool(s.negatives) for s in subtexts), n),
        "positives": len(positives),
        "positive_subsequence": share(sum(is_subsequence(caption_words(p), caption_words(c)) for c, p in positives),
                                      len(positives)),
        "negatives": len(negatives),
        "negative_one_word": share(sum(one_word_swap(neg) for neg in negatives), len(negatives)),
        "by_kind": dict(sorted(Counter(neg.kind for neg in negatives).items())),
        "by_origin": dict(sorted(Counter(neg.origin for neg in negatives).items())),
    }
