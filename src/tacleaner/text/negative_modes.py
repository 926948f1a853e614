"""The ways negatives are made from a base text, behind one registry: ``negative_mode`` in
:class:`~.subtext_config.SubtextConfig` names an entry, and a new way is one more function
with :func:`register` on it, not another branch.

- ``wordnet`` (ours): every replaceable word gets WordNet and vocabulary replacements
  (:meth:`.negatives.NegativeMaker.slot`); words are visited so that kinds alternate.
- ``random`` (the paper's): a content word drawn at random, replaced by a common word of the
  same part of speech drawn at random.

Both take the base text as token indices of the parsed caption and draw from the caption's
own generator, so a caption's negatives do not depend on the batch it comes in.
"""
from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from .lexicon import random_pool, wn_lemma
from .negatives import KIND_OF_POS, NegativeMaker, Slot, Vocabulary
from .subtext_config import Negative
from .tokens import render

# (maker, parsed caption, base text's token indices, the caption's words and lemmas, vocabulary, rng)
# -> up to ``negatives_per_positive`` negatives of the base text, no two alike.
NegativeMode = Callable[[NegativeMaker, Any, tuple[int, ...], set[str], Vocabulary, random.Random], list[Negative]]

MODES: dict[str, NegativeMode] = {}  # in registration order: the order error messages list them in


def register(name: str) -> Callable[[NegativeMode], NegativeMode]:
    """Decorator registering a negative mode under ``name``."""

    def wrap(mode: NegativeMode) -> NegativeMode:
        MODES[name] = mode
        return mode

    return wrap


@register("wordnet")
def wordnet_negatives(maker: NegativeMaker, doc: Any, span: tuple[int, ...], in_caption: set[str],
                      vocab: Vocabulary, rng: random.Random) -> list[Negative]:
    """Up to m negatives of one base text, alternating kinds, no two alike."""
    base = render(doc, span)
    slots = [s for s in (maker.slot(doc[i], in_caption, vocab, rng) for i in span) if s is not None]
    rng.shuffle(slots)
    by_kind: dict[str, list[Slot]] = defaultdict(list)
    for s in slots:
        by_kind[s.kind].append(s)
    kinds = sorted(by_kind)
    rng.shuffle(kinds)
    out: list[Negative] = []
    seen = {base.lower()}
    # Round-robin over kinds, then over that kind's slots, trying replacements best first.
    for attempt in range(max((len(s.choices) for s in slots), default=0)):
        for kind in kinds:
            for slot in by_kind[kind]:
                if len(out) == maker.cfg.negatives_per_positive:
                    return out
                if attempt >= len(slot.choices):
                    continue
                neg = maker.apply(doc, span, slot, slot.choices[attempt], base, vocab)
                if neg is not None and neg.text.lower() not in seen:
                    seen.add(neg.text.lower())
                    out.append(neg)
                    break  # next kind
    return out


@register("random")
def random_negatives(maker: NegativeMaker, doc: Any, span: tuple[int, ...], in_caption: set[str],
                     vocab: Vocabulary, rng: random.Random) -> list[Negative]:
    """The paper's negatives: a content word (noun, verb or adjective) of the base text,
    drawn at random, replaced by a common word of the same part of speech drawn at random
    ("On a blue table were green grapes." -> "On a bad table ...", "... were bananas.",
    "On a blue table run kiwis."), in the replaced word's form."""
    cfg = maker.cfg
    base = render(doc, span)
    slots = [(doc[i], found) for i in span if maker.replaceable(doc[i])
             for found in [maker.content_class(doc[i])] if found is not None]
    out: list[Negative] = []
    seen = {base.lower()}
    for _ in range(20 * cfg.negatives_per_positive):
        if len(out) == cfg.negatives_per_positive or not slots:
            break
        tok, (pos, tag) = slots[rng.randrange(len(slots))]
        pool = random_pool(pos, cfg.random_min_zipf, cfg.blocklist)
        lemma = pool[rng.randrange(len(pool))]
        if lemma in in_caption or maker.refused(wn_lemma(tok, pos), lemma, pos):
            continue
        neg = maker.apply(doc, span, Slot(tok.i, KIND_OF_POS[pos], pos, tag, []), (lemma, "random"), base, vocab)
        if neg is not None and neg.text.lower() not in seen:
            seen.add(neg.text.lower())
            out.append(neg)
    return out


NEGATIVE_MODES = tuple(MODES)  # every mode is registered above: ("wordnet", "random"), for checks and messages
