"""Negative subtexts: counterfactuals of a base text with exactly one content word replaced.

Negatives (m = ``negatives_per_positive`` per positive; from the caption if that gives none)
  * One content word of the positive is replaced: a noun (kind "object"), an adjective
    ("attribute"), a verb or a spatial word such as left/above/top/up ("relation"). Noun
    modifiers ("construction workers") and parts of hyphenated words are left alone. The small
    parser's usual slips are repaired: a colour word before its noun is an adjective even when
    tagged as a noun, and a determined adjective ("a small pink cross") is a noun.
  * Slots are visited so that kinds alternate; the order is drawn from a generator seeded by
    ``(seed, caption)``, so results are reproducible and do not depend on the batch.
  * Replacements (origins): "cohyponym": single-word lemmas of sibling synsets (same
    lexicographer file) of the source's sense, under a hypernym that is specific enough (at
    least ``min_hypernym_depth`` deep, at most ``max_siblings`` hyponyms, not one of WordNet's
    noun.Tops categories), most specific hypernym and most frequent lemma first; "antonym":
    WordNet antonyms of the adjective (or of its cluster head, for a satellite: "tiny" ->
    "large") and of spatial words (left/right, above/below, ...); "sibling-attribute": another
    common colour for a colour (the direct hyponyms of chromatic_color.n.01 and
    achromatic_color.n.01 that are adjectives), or another value of the same WordNet attribute
    (size.n.01: large/small); "vocabulary": a word of the same part of speech from the
    dataset's captions that is close in meaning (nouns: a hypernym within ``vocabulary_hops``
    levels in common, but neither hypernym nor hyponym; verbs: same lexicographer file;
    adjectives: colour for colour, otherwise any other common adjective). Origins are
    interleaved in the order of ``negative_sources``.
  * The source's sense is its first (most frequent) WordNet sense; for a noun whose first sense
    is abstract, the first concrete one among its first ``physical_senses`` ("table" is
    furniture, not an array). Filters against obscure and wrong-sense words: the replacement's
    lemma count (SemCor frequency) must be >= ``min_sense_count`` and the sibling sense must be
    among its first ``replacement_senses`` senses ("dog" never becomes "head", a head of cattle
    being the second sense of "head"; "people" never "series"); multiword and capitalised
    lemmas, synonyms of the source (any shared synset), offensive senses (WordNet usage domains
    and ``blocklist``) and words already in the caption (which could make the "negative" true)
    are skipped; at most ``max_candidates`` per origin are kept.
  * A negative must contradict the image: with ``refuse_entailed`` (default) a replacement
    that is, between the two words' own (first two) WordNet senses, a synonym, a word on the
    source's own hypernym / hyponym chain, a similar-to or also-see, or its near-equivalent in
    the shipped hand-written table (``data/near_equivalents.tsv``: boy/man, girl/woman,
    rest/sit, wear/dress, little/young, pond/lagoon, boat/ship), is refused; co-hyponyms
    (dog -> cat) are kept, in both negative modes (:func:`.lexicon.near_equivalent`; the modes themselves,
    ours and the paper's random swaps, are in :mod:`.negative_modes`).
  * Inflection is kept: the new word takes the source's form (NNS, VBG, VBZ, VBD, ...). Forms
    observed in the vocabulary with that tag come first; otherwise WordNet's exception lists
    (men, children, sitting, lying) and regular spelling rules are used, and a candidate whose
    form is uncertain (past forms of irregular verbs not seen in the vocabulary) is skipped
    rather than guessed: never "mans" or "runned". An "a"/"an" right before the replaced word
    is adjusted, the only other change a negative makes.
"""
from __future__ import annotations

import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .inflection import match_case, plural, verb_form
from .lexicon import (
    ABSTRACT_LEXNAMES,
    PEOPLE,
    PLACEHOLDERS,
    SPATIAL,
    ancestors,
    antonyms,
    cohyponyms,
    colour_words,
    common_word,
    dominant_pos,
    first_sense,
    fixed_phrase,
    is_common,
    lemma_count,
    near_equivalent,
    sibling_attributes,
    source_sense,
    spatial_swaps,
    unattested_as,
    wn_lemma,
    wn_synonyms,
    word_senses,
)
from .subtext_config import Negative, SubtextConfig
from .tokens import FRAME_NOUNS, SHOWING_VERBS, frame_word, intraword, nominal, render

# Adjectives and nouns that carry no swappable content.
NON_CONTENT = frozenset({"other", "each", "about", "such", "same", "own", "many", "several", "few",
                          "much", "more", "most", "various", "certain", "thing", "something",
                          "one", "ones", "lot", "kind", "type", "sort", "way", "part"})

_POS = {"NOUN": "n", "VERB": "v", "ADJ": "a"}
KIND_OF_POS = {"n": "object", "a": "attribute", "v": "relation"}  # a negative's kind by the replaced word's POS


class Vocabulary:
    """Same-POS words of the dataset's captions, with the surface forms seen for each tag."""

    def __init__(self, docs: Iterable[Any]):
        self.counts: dict[str, Counter] = {"n": Counter(), "v": Counter(), "a": Counter()}
        self.forms: dict[tuple[str, str], Counter] = defaultdict(Counter)
        for doc in docs:
            for t in doc:
                pos = _POS.get(t.pos_)
                if pos is None or not t.is_alpha:
                    continue
                lemma = t.lemma_.lower()
                self.counts[pos][lemma] += 1
                self.forms[(lemma, t.tag_)][t.lower_] += 1

    def form(self, lemma: str, tag: str) -> str | None:
        seen = self.forms.get((lemma, tag))
        return seen.most_common(1)[0][0] if seen else None

    def words(self, pos: str) -> list[str]:
        """Lemmas of ``pos``, most frequent first."""
        return [w for w, _ in sorted(self.counts[pos].items(), key=lambda kv: (-kv[1], kv[0]))]


@dataclass
class Slot:
    """A replaceable word of a base text and its replacements (lemma, origin), best first."""

    index: int
    kind: str  # "object", "attribute" or "relation"
    pos: str  # WordNet part of speech: "n", "a", "v" ("r" for spatial words)
    tag: str  # the form the replacement takes (NNS, VBG, ...)
    choices: list[tuple[str, str]]


def word_class(tok: Any) -> tuple[str, str] | None:
    """(WordNet POS, tag to inflect to) of a content word, repairing the small model's usual
    slips on short lowercase captions: a colour word before its noun is an adjective even when
    tagged as a noun ("an orange cross"), lowercase proper nouns and determined adjectives
    ("a small pink cross") are common nouns."""
    low = tok.lower_
    if low in colour_words() and tok.pos_ in ("ADJ", "NOUN", "PROPN"):
        return "a", "JJ"  # a colour is swapped for a colour, even as a noun ("a man in red")
    if low in SPATIAL or tok.dep_ == "compound":
        return None  # noun modifiers ("construction workers") are part of the head's meaning
    if tok.pos_ == "NOUN" or (tok.pos_ == "PROPN" and tok.text.islower()) or (tok.pos_ == "ADJ" and nominal(tok)):
        return "n", "NNS" if tok.tag_ in ("NNS", "NNPS") else "NN"
    if tok.pos_ == "ADJ" and tok.tag_ == "JJ":
        return "a", "JJ"
    if tok.pos_ == "VERB" and tok.tag_.startswith("VB") and tok.lemma_ not in ("be", "have", "do"):
        return "v", tok.tag_
    return None


def in_fixed_phrase(tok: Any) -> bool:
    """The token and a neighbour it forms a compound with (or a particle: "close up") make an
    expression WordNet lists as one ("ice cream", "close up"). An adjective and its noun ("little
    girl", listed too) stay separate words."""
    doc = tok.doc
    pairs = []
    if tok.i > 0:
        pairs.append((doc[tok.i - 1], tok))
    if tok.i + 1 < len(doc):
        pairs.append((tok, doc[tok.i + 1]))
    tied = [(a, b) for a, b in pairs
            if (a.head is b and a.dep_ in ("compound", "prt")) or (b.head is a and b.dep_ in ("compound", "prt"))]
    return any(a.is_alpha and b.is_alpha and fixed_phrase(a.lower_, b.lower_) for a, b in tied)


class NegativeMaker:
    """The word machinery of negatives for one config: which words of a base text may be
    replaced, by what, and in which form; candidate replacements are cached per lemma. How
    replacements are picked is a negative mode (:mod:`.negative_modes`)."""

    def __init__(self, cfg: SubtextConfig):
        self.cfg = cfg
        self._choices: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {}
        self._vocab_index: dict[str, tuple[Any, frozenset[Any]]] | None = None
        self._shares: Counter | None = None

    def replaceable(self, tok: Any) -> bool:
        """A content word that may be replaced at all: not a frame or placeholder word, not
        half of a hyphenated word or of a fixed phrase."""
        low, doc = tok.lower_, tok.doc
        if not tok.is_alpha or low in NON_CONTENT or low in PLACEHOLDERS or frame_word(tok):
            return False
        if any(0 <= j < len(doc) and intraword(doc[j]) for j in (tok.i - 1, tok.i + 1)):
            return False  # part of a hyphenated word ("light-colored")
        return not in_fixed_phrase(tok)  # "close up", "ice cream": half of it says nothing about the image

    def apply(self, doc: Any, span: tuple[int, ...], slot: Slot, choice: tuple[str, str],
              base: str, vocab: Vocabulary) -> Negative | None:
        """The negative of ``base`` with ``slot``'s word replaced by ``choice`` (in the word's
        form), or None when that form is uncertain or not a common word."""
        tok = doc[slot.index]
        word = self._inflect(choice[0], slot.pos, slot.tag, vocab)
        if word is None or (slot.pos != "r" and not is_common(word)):
            return None  # an uncertain or made-up form ("puted")
        word = match_case(word, tok.text)
        text = render(doc, span, {slot.index: word})  # also fixes "a"/"an" before the word
        return Negative(text, slot.kind, tok.text, word, choice[1], base)

    @staticmethod
    def _inflect(lemma: str, pos: str, tag: str, vocab: Vocabulary) -> str | None:
        """``lemma`` in the form ``tag``: as observed in the vocabulary, else by rule."""
        if tag in ("NN", "JJ", "VB", "VBP"):
            return lemma
        seen = vocab.form(lemma, tag)
        if seen:
            return seen
        if pos == "n":
            return plural(lemma)
        return verb_form(lemma, tag)

    # -- candidate words ----------------------------------------------------------------------

    def slot(self, tok: Any, in_caption: set[str], vocab: Vocabulary,
              rng: random.Random) -> Slot | None:
        """The token's kind and replacement choices, or None if it is not a content word."""
        low = tok.lower_
        if not self.replaceable(tok):
            return None
        if low in SPATIAL and (tok.pos_ in ("ADP", "ADV", "PART") or tok.dep_ in ("pobj", "prt")):
            if "antonym" not in self.cfg.negative_sources:
                return None
            slot = Slot(tok.i, "relation", "r", "", [(w, "antonym") for w in spatial_swaps(low)])
        else:
            found = self.content_class(tok)
            if found is None:
                return None
            pos, tag = found
            kind = KIND_OF_POS[pos]
            slot = Slot(tok.i, kind, pos, tag, self._choices_for(tok, pos, vocab, rng))
        slot.choices = [(w, o) for w, o in slot.choices if w not in in_caption]
        return slot if slot.choices else None

    def content_class(self, tok: Any) -> tuple[str, str] | None:
        """:func:`word_class`, without the words no counterfactual should touch: a tag against
        the word's use ("a child clings" read as a noun), nouns too general to swap ("animal",
        "group"), and nouns for what one cannot see ("night", "ways")."""
        found = word_class(tok)
        if found is None:
            return None
        pos = found[0]
        lemma = wn_lemma(tok, pos)
        if lemma is None or unattested_as(lemma, pos):
            return None  # WordNet does not know it as that part of speech ("a diamond hovers" as a noun)
        sense = source_sense(lemma, pos, self.cfg.physical_senses)
        if sense is not None and pos == "n" and (sense.lexname() == "noun.Tops" or sense.lexname() in ABSTRACT_LEXNAMES):
            return None
        return found

    def _choices_for(self, tok: Any, pos: str, vocab: Vocabulary,
                     rng: random.Random) -> list[tuple[str, str]]:
        """Replacements (word, origin) for a token, origins interleaved (first of each, then
        second of each, ...) so that a few negatives already mix WordNet relations with
        in-domain words. Antonyms and sibling attributes come in an order drawn from ``rng``
        (all colours are equally good); co-hyponyms and vocabulary words best first (the
        frequent "man" for "woman" before the rare "liberal")."""
        lemma = wn_lemma(tok, pos)
        if lemma is None:
            return []
        key = (lemma, pos)
        if key not in self._choices:
            self._choices[key] = self._candidates(lemma, pos, vocab)
        lists = []
        for origin in self.cfg.negative_sources:
            words = list(self._choices[key].get(origin, ()))
            if origin in ("antonym", "sibling-attribute"):
                rng.shuffle(words)
            lists.append([(w, origin) for w in words])
        out: list[tuple[str, str]] = []
        for rank in range(max(map(len, lists), default=0)):
            for choices in lists:
                if rank < len(choices) and all(choices[rank][0] != x for x, _ in out):
                    out.append(choices[rank])
        return out

    def _candidates(self, lemma: str, pos: str, vocab: Vocabulary) -> dict[str, tuple[str, ...]]:
        """Replacements for a lemma by origin, best first (cached per lemma)."""
        cfg = self.cfg
        k = cfg.max_candidates
        by_origin: dict[str, tuple[str, ...]] = {}
        sense = self.sense(lemma, pos, vocab)
        if pos in ("n", "v"):
            by_origin["cohyponym"] = cohyponyms(
                lemma, pos, cfg.min_sense_count, cfg.min_hypernym_depth, cfg.max_siblings,
                cfg.replacement_senses, cfg.physical_senses, cfg.blocklist,
                sense.name() if sense is not None else None)[:k]
        else:
            by_origin["antonym"] = antonyms(lemma, cfg.min_sense_count)[:k]
            by_origin["sibling-attribute"] = sibling_attributes(lemma, cfg.min_sense_count)
        if "vocabulary" in cfg.negative_sources:
            by_origin["vocabulary"] = tuple(self._from_vocabulary(lemma, pos, vocab)[:k * 4])
        person = pos == "n" and sense is not None and sense.lexname() == "noun.person"
        if person and "people" in cfg.negative_sources and lemma in PEOPLE:
            by_origin["people"] = tuple(w for w in PEOPLE if w != lemma)
        return {o: tuple(w for w in words if w != lemma and self._plausible(w, pos, sense, person)
                         and not self.refused(lemma, w, pos))[:k]
                for o, words in by_origin.items()}

    def refused(self, lemma: str | None, word: str, pos: str) -> bool:
        """With ``refuse_entailed``, a replacement that a picture of ``lemma`` may still fit
        (:func:`~.lexicon.near_equivalent`: boy -> man, resting -> sitting): the negative
        would push the image away from a right description."""
        return self.cfg.refuse_entailed and lemma is not None and near_equivalent(lemma, word, pos)

    def sense(self, lemma: str, pos: str, vocab: Vocabulary) -> Any | None:
        """The sense a caption word is taken in: WordNet's usual one (:func:`source_sense`),
        unless the data's own nouns say otherwise. When the usual sense's kind (its lexicographer
        file) is rare among the vocabulary's nouns and another of the word's first senses is of
        a kind common there, that one is taken: among coloured shapes, "star" is the plane
        figure, not the celestial body ("star" -> "planet" otherwise)."""
        default = source_sense(lemma, pos, self.cfg.physical_senses)
        if pos != "n" or default is None:
            return default
        counts = self._lexname_counts(vocab)
        own = vocab.counts["n"].get(lemma, 0)  # the word's own occurrences do not vote
        total = max(1, sum(counts.values()) - own)

        def share(s: Any) -> float:
            return (counts.get(s.lexname(), 0) - (own if s.lexname() == default.lexname() else 0)) / total

        if share(default) >= 0.02:
            return default
        best = max(word_senses(lemma, "n")[:6], key=share)
        return best if share(best) >= 0.10 else default

    def _lexname_counts(self, vocab: Vocabulary) -> Counter:
        """The vocabulary's noun occurrences per lexicographer file of their usual sense."""
        if self._shares is None:
            counts: Counter = Counter()
            for w, n in vocab.counts["n"].items():
                s = source_sense(w, "n", self.cfg.physical_senses)
                if s is not None:
                    counts[s.lexname()] += n
            self._shares = counts
        return self._shares

    def _plausible(self, word: str, pos: str, sense: Any, person: bool) -> bool:
        """A replacement a reader takes for the same kind of word: in the common-word list,
        mostly used as the same part of speech ("avocados" never replaces a verb), and for
        nouns, a thing of the same kind (a person noun for a person, only from :data:`PEOPLE`:
        "girl" -> "boy", not "wife"; no person for an animal: "stuffed animal" -> "man")."""
        if not is_common(word, self.cfg.min_zipf) or word in PLACEHOLDERS or word in FRAME_NOUNS or \
                (pos == "v" and word in SHOWING_VERBS):
            return False
        if pos in ("n", "v", "a") and dominant_pos(word) != pos:
            return False
        if pos == "n" and sense is not None:
            if person:
                return word in PEOPLE
            other = source_sense(word, "n", self.cfg.physical_senses)
            return other is not None and other.lexname() == sense.lexname()
        return True

    def _from_vocabulary(self, lemma: str, pos: str, vocab: Vocabulary) -> list[str]:
        """Vocabulary words of the same POS that are close in meaning to ``lemma``."""
        sense = self.sense(lemma, pos, vocab)
        if sense is None:
            return []
        avoid = wn_synonyms(lemma, pos) | {lemma}
        if pos == "a":
            is_colour = lemma in colour_words()
            return [w for w in vocab.words("a") if w not in avoid and (w in colour_words()) == is_colour
                    and self._common(w, "a")]
        if pos == "v":
            return [w for w in vocab.words("v") if w not in avoid and w not in ("be", "have", "do")
                    and self._common(w, "v") and first_sense(w, "v").lexname() == sense.lexname()]
        near = ancestors(sense, self.cfg.vocabulary_hops)
        near = {a for a in near if a.min_depth() >= self.cfg.min_hypernym_depth}
        above = ancestors(sense)
        out = []
        for w, (first, related) in self._noun_index(vocab).items():
            # Close in meaning, but neither a hypernym ("animal" for "dog") nor a hyponym.
            if w not in avoid and related & near and sense not in related and first not in above:
                out.append(w)
        return out

    def _noun_index(self, vocab: Vocabulary) -> dict[str, tuple[Any, frozenset[Any]]]:
        """Vocabulary noun (most frequent first) -> (its first sense, its first three attested
        senses and their hypernyms within ``vocabulary_hops``)."""
        if self._vocab_index is None:
            index = {}
            for w in vocab.words("n"):
                if not self._common(w, "n"):
                    continue
                # Attested senses only: "dog" as a person (count 0) must not bring it near "man".
                senses = [x for x in word_senses(w, "n")[:3]
                          if any(lemma_count(lem) >= self.cfg.min_sense_count
                                 for lem in x.lemmas() if lem.name().lower() == w)] or [word_senses(w, "n")[0]]
                related = set(senses).union(*(ancestors(s, self.cfg.vocabulary_hops) for s in senses))
                index[w] = (senses[0], frozenset(related))
            self._vocab_index = index
        return self._vocab_index

    def _common(self, word: str, pos: str) -> bool:
        return common_word(word, pos, self.cfg.min_sense_count, self.cfg.blocklist)

