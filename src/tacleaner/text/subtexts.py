"""Positive and negative subtexts of a caption, for TA-Cleaner's fine-grained text alignment.

A *positive subtext* is a shorter caption that keeps the essential semantics: "there are green
grapes, yellow lemons, oranges and kiwis on a blue table" -> "there are green grapes on a blue
table". A *negative subtext* is a counterfactual: a positive (or the caption) with exactly one
content word replaced by another word of the same category: "a red circle" -> "a blue circle".

The paper gives no algorithm, so what follows is a reconstruction; the tunable parts are fields
of :class:`SubtextConfig`. The rules live with their code, one concern per module:

- :mod:`.tokens`: token predicates and rendering that both kinds of subtext share;
- :mod:`.positives`: the dependency-parse rules that shorten a caption;
- :mod:`.negatives`: which word of a base text may be replaced, by what, and in which form;
- :mod:`.negative_modes`: how the replacements are picked (ours, the paper's random swaps);
- :mod:`.lexicon`: the WordNet look-ups (senses, frequencies, co-hyponyms, antonyms, colours);
- :mod:`.inflection`: plurals, verb forms, articles;
- :mod:`.quality`: the sanity measures of generated subtexts.

Results are cached per caption, and WordNet lookups per word, so repeated calls are cheap.
"""
from __future__ import annotations

import random
from collections.abc import Iterable
from typing import Any

from .negative_modes import MODES, NEGATIVE_MODES
from .negatives import NegativeMaker, Vocabulary
from .positives import depicted_object, positive_spans
from .quality import quality_report
from .resources import spacy_pipeline
from .subtext_config import KINDS, NEGATIVE_BASES, ORIGINS, Negative, SubtextConfig, Subtexts
from .tokens import intraword, render

__all__ = ["KINDS", "NEGATIVE_MODES", "ORIGINS", "Negative", "SubtextConfig", "SubtextGenerator", "Subtexts", "quality_report"]


PARALLEL_FROM = 2000  # captions; below this, starting spaCy processes costs more than it saves


class SubtextGenerator:
    """Positive and negative subtexts for captions (rules in the module docstring).

    ``vocabulary``: the dataset's captions; they supply same-POS replacement words and the
    inflected forms observed for each tag. Parsed lazily, on the first :meth:`generate`.
    """

    def __init__(self, cfg: SubtextConfig | None = None, vocabulary: Iterable[str] = ()):
        self.cfg = cfg or SubtextConfig()
        unknown = set(self.cfg.negative_sources) - set(ORIGINS)
        if unknown:
            raise ValueError(f"unknown negative sources {sorted(unknown)}; choose from {ORIGINS}")
        if self.cfg.negative_mode not in NEGATIVE_MODES:
            raise ValueError(f"unknown negative mode {self.cfg.negative_mode!r}; choose from {NEGATIVE_MODES}")
        if self.cfg.negatives_from not in NEGATIVE_BASES:
            raise ValueError(f"unknown negatives_from {self.cfg.negatives_from!r}; choose from {NEGATIVE_BASES}")
        self._vocab_texts = list(vocabulary)
        self._vocab: Vocabulary | None = None
        self._nlp: Any = None
        self._cache: dict[str, Subtexts] = {}
        self._maker = NegativeMaker(self.cfg)
        self._mode = MODES[self.cfg.negative_mode]

    # -- public -------------------------------------------------------------------------------

    def generate(self, captions: list[str]) -> list[Subtexts]:
        """Subtexts for each caption, in order. New captions are parsed in one batch."""
        todo = list(dict.fromkeys(c for c in captions if c not in self._cache))
        if todo:
            nlp = self._pipeline()
            vocab = self._vocabulary()
            for caption, doc in zip(todo, nlp.pipe(todo, batch_size=256, n_process=self._processes(len(todo)))):
                self._cache[caption] = self._subtexts(caption, doc, vocab)
        return [self._cache[c] for c in captions]

    # -- resources ----------------------------------------------------------------------------

    def _processes(self, n: int) -> int:
        """spaCy processes for ``n`` texts: ``cfg.n_process`` for large batches (each process
        loads the pipeline, a few seconds), one for small ones."""
        return self.cfg.n_process if n >= PARALLEL_FROM and self.cfg.n_process > 1 else 1

    def _pipeline(self) -> Any:
        if self._nlp is None:
            self._nlp = spacy_pipeline(self.cfg.spacy_model)
        return self._nlp

    def _vocabulary(self) -> Vocabulary:
        if self._vocab is None:
            # Tags and lemmas suffice here, so the parser is skipped (about twice as fast).
            texts = list(dict.fromkeys(self._vocab_texts))
            docs = self._pipeline().pipe(texts, batch_size=512, disable=["parser"],
                                         n_process=self._processes(len(texts)))
            self._vocab = Vocabulary(docs)
        return self._vocab

    # -- one caption --------------------------------------------------------------------------

    def _subtexts(self, caption: str, doc: Any, vocab: Vocabulary) -> Subtexts:
        rng = random.Random(f"{self.cfg.seed}\x00{caption}")  # str seeds are hashed stably
        spans = positive_spans(doc, self.cfg.max_positives)
        whole = tuple(t.i for t in doc if not t.is_punct or intraword(t))
        in_caption = {t.lower_ for t in doc} | {t.lemma_.lower() for t in doc}
        negatives: list[Negative] = []
        if self.cfg.negatives_from == "caption":  # every token, punctuation too: base == the caption
            negatives = self._mode(self._maker, doc, tuple(range(len(doc))), in_caption, vocab, rng)
        else:
            for span in spans:
                negatives += self._mode(self._maker, doc, span, in_caption, vocab, rng)
            if not negatives:  # no positive, or none with a replaceable word: use the caption
                negatives = self._mode(self._maker, doc, whole, in_caption, vocab, rng)
        obj = depicted_object(doc)
        return Subtexts(caption, tuple(render(doc, s) for s in spans), tuple(negatives), obj.text if obj else "")
