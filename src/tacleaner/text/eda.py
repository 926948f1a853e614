"""EDA text augmentation (Wei & Zou, 2019) with real WordNet, as CleanCLIP uses it.

Four operations, each at rate ``alpha`` (n = max(1, round(alpha * words)) edits):
synonym replacement of non-stop words, random insertion of a synonym of a non-stop word,
random swap of two words, random deletion of each word with probability ``alpha``.
One operation is drawn per caption. Synonyms are the lemmas of every WordNet synset of the
word (underscores become spaces), excluding the word itself.
"""
from __future__ import annotations

import functools
import re

import numpy as np

from .resources import wordnet


@functools.lru_cache(maxsize=1)
def _stop_words() -> frozenset[str]:
    """spaCy's English stop words, imported when EDA first runs (importing spaCy is slow, and
    the defenses' modules load without it)."""
    from spacy.lang.en.stop_words import STOP_WORDS

    return frozenset(STOP_WORDS)


OPERATIONS = ("synonym", "insert", "swap", "delete")
_WORD = re.compile(r"[a-z]+(?:['-][a-z]+)*")


@functools.lru_cache(maxsize=65536)
def synonyms(word: str) -> tuple[str, ...]:
    """WordNet synonyms of ``word`` in a stable order, without the word itself."""
    out: dict[str, None] = {}
    for synset in wordnet().synsets(word):
        for lemma in synset.lemmas():
            name = lemma.name().replace("_", " ").replace("-", " ").lower()
            if name != word and all(_WORD.fullmatch(part) for part in name.split()):
                out[name] = None
    return tuple(out)


def _content_positions(words: list[str]) -> list[int]:
    stop = _stop_words()
    return [i for i, w in enumerate(words) if w not in stop and _WORD.fullmatch(w)]


def synonym_replacement(words: list[str], n: int, rng: np.random.Generator) -> list[str]:
    out = list(words)
    done = 0
    for i in rng.permutation(_content_positions(out)):
        options = synonyms(out[i])
        if options:
            out[i] = options[rng.integers(len(options))]
            done += 1
            if done >= n:
                break
    return out


def random_insertion(words: list[str], n: int, rng: np.random.Generator) -> list[str]:
    out = list(words)
    for _ in range(n):
        candidates = [w for w in (out[i] for i in _content_positions(out)) if synonyms(w)]
        if not candidates:
            break
        word = candidates[rng.integers(len(candidates))]
        options = synonyms(word)
        out.insert(int(rng.integers(len(out) + 1)), options[rng.integers(len(options))])
    return out


def random_swap(words: list[str], n: int, rng: np.random.Generator) -> list[str]:
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(n):
        i, j = rng.choice(len(out), size=2, replace=False)
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(words: list[str], p: float, rng: np.random.Generator) -> list[str]:
    if len(words) <= 1:
        return list(words)
    kept = [w for w in words if rng.random() > p]
    return kept or [words[rng.integers(len(words))]]  # never return an empty caption


def eda(caption: str, rng: np.random.Generator, alpha: float = 0.1, operation: str | None = None) -> str:
    """One EDA operation (drawn at random unless given) applied to ``caption``.

    Like the reference implementation, the caption is lower-cased and reduced to words.
    """
    words = _WORD.findall(caption.lower())
    if not words:
        return caption
    op = operation or OPERATIONS[rng.integers(len(OPERATIONS))]
    n = max(1, round(alpha * len(words)))
    if op == "synonym":
        out = synonym_replacement(words, n, rng)
    elif op == "insert":
        out = random_insertion(words, n, rng)
    elif op == "swap":
        out = random_swap(words, n, rng)
    elif op == "delete":
        out = random_deletion(words, alpha, rng)
    else:
        raise ValueError(f"unknown EDA operation {op!r}")
    return " ".join(out)


def augment_all(captions: list[str], seed: int, alpha: float = 0.1) -> list[str]:
    """EDA for every caption, each from its own seeded generator (order-independent)."""
    return [eda(c, np.random.default_rng([seed, i]), alpha) for i, c in enumerate(captions)]


class EdaView:
    """The captions' EDA augmentations (as :func:`augment_all`), computed when sliced, so a
    million captions are augmented and tokenised chunk by chunk, never held as one list."""

    def __init__(self, captions, seed: int, alpha: float = 0.1) -> None:
        self.captions, self.seed, self.alpha = captions, seed, alpha

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return eda(self.captions[i], np.random.default_rng([self.seed, i]), self.alpha)
