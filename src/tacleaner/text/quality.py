"""Sanity measures of generated subtexts: coverage, order-preserving positives, one-word
negatives, and negatives that a picture of the caption may still fit (:func:`entailed`)."""
from __future__ import annotations

import re
from collections import Counter
from typing import Any

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


KIND_POS = {"object": "n", "attribute": "a", "relation": "v"}  # WordNet POS of each negative kind


def _senses(word: str, pos: str) -> set[Any]:
    """Every WordNet sense of ``word`` (any inflected form) as ``pos``; adjectives include
    satellites."""
    wn = wordnet()
    low = word.lower()
    return {s for base in {low, *wn._morphy(low, pos)} for s in wn.synsets(base, pos)}


def _hypernym_closure(synset: Any) -> set[Any]:
    return set(synset.closure(lambda s: s.hypernyms() + s.instance_hypernyms()))


def entailed(source: str, replacement: str, pos: str) -> bool:
    """Whether a picture described with ``source`` may still fit ``replacement``: the
    replacement is, in any WordNet sense of either word, a synonym of the source (a shared
    synset), a hypernym (at any depth: "boy" -> "male") or, for adjectives, a similar-to.

    The measuring stick of negatives that do not contradict the image, independent of the
    rules that make them (:mod:`.negatives`). It is an upper bound: any sense of either word
    counts, so a rare sense flags a good swap too; verb hypernyms are loose (WordNet's verb
    trees are shallow, so "walk" -> "travel" counts, and so would "walk" -> "move").
    ``pos``: "n", "v", "a" (satellites included) or "r"; words are lemmatised by WordNet."""
    if source.lower() == replacement.lower():
        return True
    mine, theirs = _senses(source, pos), _senses(replacement, pos)
    if mine & theirs:
        return True
    if any(theirs & _hypernym_closure(s) for s in mine):
        return True
    return pos == "a" and any(theirs & set(s.similar_tos()) for s in mine)


def entailed_negative(neg: Negative) -> bool:
    """:func:`entailed` for a negative, with the part of speech of its kind (spatial
    relations are read as adverbs: "left" -> "right")."""
    pos = "r" if neg.kind == "relation" and neg.source.lower() in SPATIAL else KIND_POS[neg.kind]
    return entailed(neg.source, neg.replacement, pos)


def entailment_report(subtexts: list[Subtexts]) -> dict:
    """Captions, coverage (at least one positive and one negative), negatives, and the share
    of negatives :func:`entailed` flags, with the flagged ones (base, source, replacement)."""
    negatives = [neg for s in subtexts for neg in s.negatives]
    flagged = [neg for neg in negatives if entailed_negative(neg)]
    n = len(subtexts)
    return {"captions": n,
            "coverage": round(sum(bool(s.positives and s.negatives) for s in subtexts) / n, 4) if n else 0.0,
            "negatives": len(negatives), "flagged": len(flagged),
            "flagged_share": round(len(flagged) / len(negatives), 4) if negatives else 0.0,
            "flagged_examples": [f"{neg.source} -> {neg.replacement} ({neg.origin}): {neg.text}" for neg in flagged]}


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


def plausibility_report(subtexts: list[Subtexts]) -> dict:
    """Shares over generated subtexts: positives that keep the caption's depicted head object
    (as :func:`~tacleaner.text.positives.depicted_object` finds it), captions where it was found,
    and negatives whose replacement word is in the common-word list."""
    from .lexicon import is_common

    def share(k: int, total: int) -> float:
        return round(k / total, 4) if total else 0.0

    positives = [(s.depicted, p) for s in subtexts for p in s.positives]
    with_obj = [(d, p) for d, p in positives if d]
    negatives = [neg for s in subtexts for neg in s.negatives]
    return {
        "depicted_found": share(sum(bool(s.depicted) for s in subtexts), len(subtexts)),
        "positives_keep_depicted": share(sum(d.lower() in caption_words(p) for d, p in with_obj), len(with_obj)),
        "replacements_common": share(sum(is_common(n.replacement) or n.replacement.lower() in SPATIAL
                                         for n in negatives), len(negatives)),
    }


def labelled_report(cases: list[dict], subtexts: list[Subtexts]) -> dict:
    """Scores against hand-labelled cases (``benchmarks/data/subtext_cases.yaml``): each case
    gives the depicted ``object``, ``bad`` replacements and ``keep`` words no negative may
    replace. Returns shares and the failures, one line each."""
    failures = []
    kept = total_pos = bad = total_neg = touched = found = 0
    for case, sub in zip(cases, subtexts):
        obj = case["object"].lower()
        found += sub.depicted.lower() == obj
        for p in sub.positives:
            total_pos += 1
            if obj in caption_words(p):
                kept += 1
            else:
                failures.append(f"positive drops {obj!r}: {case['caption']!r} -> {p!r}")
        for n in sub.negatives:
            total_neg += 1
            if n.replacement.lower() in {w.lower() for w in case.get("bad", [])}:
                bad += 1
                failures.append(f"bad replacement {n.source!r} -> {n.replacement!r}: {n.text!r}")
            if n.source.lower() in {w.lower() for w in case.get("keep", [])}:
                touched += 1
                failures.append(f"replaced a kept word {n.source!r}: {n.text!r}")

    def share(k: int, total: int) -> float:
        return round(k / total, 4) if total else 0.0

    return {"cases": len(cases), "depicted_object_found": share(found, len(cases)),
            "positives_keep_object": share(kept, total_pos), "negatives_with_bad_replacement": bad,
            "negatives_replacing_kept_words": touched, "negatives": total_neg, "failures": failures}
