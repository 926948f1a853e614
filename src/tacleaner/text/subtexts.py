"""Positive and negative subtexts of a caption, for TA-Cleaner's fine-grained text alignment.

A *positive subtext* is a shorter caption that keeps the essential semantics: "there are green
grapes, yellow lemons, oranges and kiwis on a blue table" -> "there are green grapes on a blue
table". A *negative subtext* is a counterfactual: a positive (or the caption) with exactly one
content word replaced by another word of the same category: "a red circle" -> "a blue circle".

The paper gives no algorithm, so what follows is a reconstruction; the tunable parts are fields
of :class:`SubtextConfig`.

Positives (from the spaCy dependency parse of the caption's longest sentence)
  * The *subject* is the head noun phrase of the main clause: the nominal subject of a verb
    root, the ``attr`` of "there is/are X", or the root itself when the caption is a noun
    phrase ("Men in camouflage pants racing ..."). A framing noun ("a photo of X") hands the
    role to X and the frame is dropped.
  * The *relation* is the verb phrase (verb with auxiliaries, negation, particle and its first
    complement: direct object, copular complement, open clausal complement or else the first
    prepositional phrase), or for noun roots a participle (``acl``) or the first prepositional
    phrase ("next to X", "in front of X"). A participle or prepositional phrase that the parser
    attached one level too low (to the noun inside the subject's own PP, or to the last of a
    list of coordinated nouns: "a, b and c on a table") is lifted back to the subject.
  * Always dropped: coordinated conjuncts (``conj``/``cc``), relative and adverbial clauses
    (``relcl``, ``acl`` off the subject, ``advcl``), appositions, parataxis, and every
    prepositional phrase except the relation's. An "of" phrase stays with its noun ("a group
    of people", "the left of X"): it is the noun's complement rather than extra detail.
    Determiners, numerals, possessives and compounds stay so that positives read naturally.
  * Variants, in this order, keeping the distinct ones that differ from the caption: subject +
    relation with all adjectives; with only the adjective next to each noun; the subject alone;
    with no adjectives; the subject with its second relation (its own PP when the first was
    the verb); subject + bare verb ("a man sits", not "a man holds"); the bare subject.
  * Grammar repairs that keep the subsequence property: "there is/are" stays in front of the
    variants, but is dropped when "there are a, b and c" shrinks to one singular noun; a list
    subject stays whole before a plural verb ("a lady and a man sit", not "a lady sit"); "a"/"an"
    is adjusted when the word after it changes. Trailing punctuation is removed.
  * Captions the clause rules do not fit (no subject found) fall back to pruning the root's
    subtree the same way. Each positive is an order-preserving subsequence of the caption.

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
  * Inflection is kept: the new word takes the source's form (NNS, VBG, VBZ, VBD, ...). Forms
    observed in the vocabulary with that tag come first; otherwise WordNet's exception lists
    (men, children, sitting, lying) and regular spelling rules are used, and a candidate whose
    form is uncertain (past forms of irregular verbs not seen in the vocabulary) is skipped
    rather than guessed: never "mans" or "runned". An "a"/"an" right before the replaced word
    is adjusted, the only other change a negative makes.

Results are cached per caption, and WordNet lookups per word, so repeated calls are cheap.
"""
from __future__ import annotations

import functools
import random
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .resources import spacy_pipeline, wordnet

KINDS = ("object", "attribute", "relation")
ORIGINS = ("cohyponym", "antonym", "sibling-attribute", "vocabulary")


@dataclass(frozen=True)
class Negative:
    """One counterfactual subtext: ``base`` with ``source`` replaced by ``replacement``."""

    text: str
    kind: str  # "object" (noun replaced), "attribute" (adjective), "relation" (verb or spatial word)
    source: str  # the replaced word as it appears
    replacement: str  # the new word as it appears
    origin: str  # "cohyponym", "antonym", "sibling-attribute" or "vocabulary"
    base: str = ""  # the positive (or caption) the negative was made from


@dataclass(frozen=True)
class Subtexts:
    """A caption with its positive subtexts and their negatives (m per positive, in order)."""

    caption: str
    positives: tuple[str, ...]
    negatives: tuple[Negative, ...]


@dataclass
class SubtextConfig:
    """Every reconstructed choice of the subtext rules (see the module docstring)."""

    spacy_model: str | None = None  # None = en_core_web_sm or its re-upload
    max_positives: int = 4
    negatives_per_positive: int = 2  # m
    negative_sources: tuple[str, ...] = ORIGINS  # allowed origins, in order of preference
    min_sense_count: int = 1  # WordNet lemma count a replacement needs (drops obscure words)
    seed: int = 0
    min_hypernym_depth: int = 4  # shared hypernyms shallower than this are too general
    max_candidates: int = 8  # most frequent replacements kept per word and origin
    vocabulary_hops: int = 3  # nouns from the vocabulary must share a hypernym this close
    replacement_senses: int = 1  # the replacement's sense must be among its first N senses
    physical_senses: int = 2  # a noun's first concrete sense among its first N is its sense
    max_siblings: int = 150  # noun hypernyms with more hyponyms are too general for co-hyponyms
    blocklist: frozenset[str] = field(default_factory=lambda: frozenset(
        {"whore", "prostitute", "harlot", "slut", "bitch", "bastard", "wench", "hussy"}))


# ---------------------------------------------------------------------------------------------
# Word lists that are about syntax rather than meaning.

# Root nouns that frame the real subject: "a photo of X" -> X.
_FRAME_NOUNS = frozenset({"photo", "photograph", "picture", "image", "drawing", "view", "shot",
                          "closeup", "close-up", "snapshot", "painting", "illustration"})
# Spatial words that act as the relation; they are swapped as "relation", not as nouns.
_SPATIAL = frozenset({"left", "right", "above", "below", "top", "bottom", "inside", "outside",
                      "up", "down", "front", "back", "over", "under", "beneath", "underneath"})
# Preposition swaps WordNet has no antonym for.
_PREP_SWAPS = {"over": "under", "under": "over", "beneath": "above", "underneath": "above"}
# Subtrees under these dependencies are extra detail and are never kept inside a phrase.
_DETAIL_DEPS = frozenset({"conj", "cc", "preconj", "appos", "relcl", "acl", "advcl", "parataxis",
                          "prep", "punct", "mark", "dep", "meta"})
# Adjectives and nouns that carry no swappable content.
_NON_CONTENT = frozenset({"other", "each", "about", "such", "same", "own", "many", "several", "few",
                          "much", "more", "most", "various", "certain", "thing", "something",
                          "one", "ones", "lot", "kind", "type", "sort", "way", "part"})
_SENSITIVE_DOMAINS = frozenset({"disparagement.n.01", "ethnic_slur.n.01", "obscenity.n.01",
                                "vulgarism.n.01"})
# Lexicographer files of things one cannot see (for choosing a caption noun's sense).
_ABSTRACT_LEXNAMES = frozenset({"noun.group", "noun.cognition", "noun.communication", "noun.act",
                                "noun.event", "noun.state", "noun.attribute", "noun.relation",
                                "noun.time", "noun.quantity", "noun.process", "noun.feeling",
                                "noun.motive", "noun.possession"})
_ARCHAIC_PLURALS = frozenset({"brethren", "kine", "pence", "hosen", "octopi"})


# ---------------------------------------------------------------------------------------------
# Positives: index sets over the parsed caption.

def _intraword(tok: Any) -> bool:
    """A hyphen or slash inside a word ("tri-colored"): kept with its neighbours."""
    doc = tok.doc
    return (0 < tok.i < len(doc) - 1 and tok.text in ("-", "/", "'")
            and not doc[tok.i - 1].whitespace_ and not tok.whitespace_)


def _nominal(tok: Any) -> bool:
    """A noun, or a word the small parser mis-tagged in a noun's place ("a small pink cross"
    with "cross" as an adjective, lowercase words as proper nouns)."""
    if tok.pos_ in ("NOUN", "PROPN"):
        return True
    scope = tok.subtree if tok.dep_ == "ROOT" else tok.children
    return tok.pos_ == "ADJ" and any(c.dep_ == "det" for c in scope)


def _adjectival(tok: Any) -> bool:
    """An adjective modifier, or a colour word the tagger took for a noun ("a cyan diamond")."""
    return tok.dep_ == "amod" or (tok.dep_ in ("compound", "nmod") and tok.lower_ in colour_words())


def _core(tok: Any, keep_conj: bool = False) -> list[int]:
    """``tok`` and its dependents, without the detail dependencies (clauses, PPs, lists)."""
    out = [tok.i]
    for c in tok.children:
        if c.dep_ == "punct" and _intraword(c):
            out.append(c.i)
        elif c.dep_ not in _DETAIL_DEPS or (keep_conj and c.dep_ in ("conj", "cc")):
            out += _core(c, keep_conj)
    return out


def _prep_object(prep: Any) -> Any | None:
    return next((c for c in prep.children if c.dep_ in ("pobj", "pcomp")), None)


def _np(noun: Any, adjectives: str) -> list[int]:
    """The noun phrase of ``noun``: determiners, numerals, possessives, compounds, the "of"
    complement, and its adjectives: ``"all"``, ``"last"`` (the one next to the noun) or ``"none"``."""
    out = [noun.i]
    amods = [c for c in noun.lefts if _adjectival(c)]
    for c in noun.children:
        if c in amods:
            if adjectives == "all":
                out += _core(c, keep_conj=True)  # "black and white" is one colour description
            elif adjectives == "last" and c is amods[-1]:
                out += _core(c)
        elif c.dep_ in ("det", "predet", "nummod", "poss", "compound", "case", "quantmod", "nmod"):
            out += _core(c)
        elif c.dep_ == "prep" and c.lower_ == "of" and c.i > noun.i:
            out += _pp(c, adjectives)
        elif c.dep_ == "punct" and _intraword(c):
            out.append(c.i)
    return out


def _pp(prep: Any, adjectives: str) -> list[int]:
    """A prepositional phrase with a reduced object ("to the left of a square")."""
    obj = _prep_object(prep)
    if obj is None:
        return [prep.i]
    if obj.pos_ in ("NOUN", "PROPN", "PRON", "NUM", "ADJ"):
        return [prep.i] + _np(obj, adjectives)
    if obj.pos_ in ("VERB", "AUX"):
        return [prep.i] + _vp(obj, adjectives)
    return [prep.i] + _core(obj)


def _adverbial_pp(adv: Any, adjectives: str) -> list[int] | None:
    """"next to X", "close to X": an adverb heading a PP acts as one preposition."""
    prep = next((c for c in adv.children if c.dep_ == "prep"), None)
    return [adv.i] + _pp(prep, adjectives) if prep is not None else None


def _first_pp(head: Any, adjectives: str, after: int = -1) -> list[int] | None:
    """The first prepositional relation among ``head``'s dependents (not its "of" complement)."""
    for c in head.children:
        if c.i <= after:
            continue
        if c.dep_ in ("prep", "agent") and not (c.lower_ == "of" and _nominal(head)):
            if _prep_object(c) is not None:
                return _pp(c, adjectives)
        if c.dep_ == "advmod":
            pp = _adverbial_pp(c, adjectives)
            if pp:
                return pp
    return None


def _verb_group(verb: Any) -> list[int]:
    """A verb with its auxiliaries, negation and particle ("is not looking up")."""
    out = [verb.i]
    for c in verb.children:
        if c.dep_ in ("aux", "auxpass", "neg", "prt") and not (c.dep_ == "aux" and c.i > verb.i):
            out += [c.i] if c.dep_ == "prt" else _core(c)
    return out


def _vp(verb: Any, adjectives: str) -> list[int]:
    """A verb group with its first complement: object, copular complement, open clausal
    complement, or else its first prepositional phrase."""
    out = _verb_group(verb)
    kids = list(verb.children)
    prt = next((k for k in kids if k.dep_ == "prt"), None)
    obj = next((c for c in prt.children if _nominal(c)), None) if prt is not None else None
    if obj is not None:  # "walking up the hill": the parser hangs the object on the particle
        return out + _np(obj, adjectives)
    for dep in ("dobj", "attr", "acomp", "oprd", "xcomp"):
        c = next((k for k in kids if k.dep_ == dep), None)
        if c is None:
            continue
        if dep in ("dobj", "attr", "oprd") and (_nominal(c) or c.pos_ in ("PRON", "NUM")):
            return out + _np(c, adjectives)
        if dep == "xcomp" and c.pos_ in ("VERB", "AUX"):
            return out + _vp(c, adjectives)
        return out + _core(c)
    pp = _first_pp(verb, adjectives)
    return out + pp if pp else out


def _lifted(subject: Any, deps: tuple[str, ...]) -> Any | None:
    """A dependent of type ``deps`` of the subject, or one the parser attached one level too
    low: under the noun of the subject's own PP ("Men in pants racing"), or under the last noun
    of a list ("a, b and c on X")."""
    for c in subject.children:
        if c.dep_ in deps and c.lower_ != "of":
            return c
    holders = [_prep_object(p) for p in subject.children if p.dep_ == "prep"]
    conjs = [c for c in subject.subtree if c.dep_ == "conj" and _nominal(c.head)]
    if conjs:
        holders.append(conjs[-1])
    for h in holders:
        if h is None:
            continue
        for c in h.children:
            if c.dep_ in deps and (c.dep_ == "prep" or c.tag_ in ("VBG", "VBN")):
                return c
    return None


@dataclass
class _Clause:
    """The parts of a caption that positives are built from."""

    lead: list[int]  # "there are" (kept in front of every variant)
    subject: Any  # head noun of the subject
    relations: list[Any]  # functions adjectives -> indices, best first
    verb: Any | None  # the relation's verb, for the "subject + verb" variant
    keep_list: bool = False  # keep "X and Y" before the verb: it agrees with both ("are")


def _noun_clause(subject: Any, lead: list[int], extra_head: Any | None = None) -> _Clause:
    """Relations of a subject noun: its participle, its own PP, or a PP of ``extra_head``
    (the verb of "there is X on Y")."""
    rels, verb = [], None
    participle = _lifted(subject, ("acl", "xcomp"))
    if participle is not None and participle.pos_ in ("VERB", "AUX"):
        rels.append(lambda adj, v=participle: _vp(v, adj))
        verb = participle
    if _first_pp(subject, "all") is not None:
        rels.append(lambda adj, s=subject: _first_pp(s, adj))
    if extra_head is not None and _first_pp(extra_head, "all", after=subject.i) is not None:
        rels.append(lambda adj, h=extra_head, s=subject: _first_pp(h, adj, after=s.i))
    if not rels:
        last = _lifted(subject, ("prep",))  # "a red cross, a blue star and a green circle on X"
        if last is not None and _prep_object(last) is not None:
            rels.append(lambda adj, p=last: _pp(p, adj))
    return _Clause(lead, subject, rels, verb)


def _unframe(noun: Any) -> Any:
    """"a photo of a red circle" -> circle (repeatedly, for "a close-up photo of ...")."""
    while noun.lower_ in _FRAME_NOUNS:
        of = next((c for c in noun.children if c.dep_ == "prep" and c.lower_ == "of"), None)
        obj = _prep_object(of) if of is not None else None
        if obj is None or not _nominal(obj):
            break
        noun = obj
    return noun


def _clause(sent: Any) -> _Clause | None:
    """Subject, relations and lead words of the main clause, or None if there is no subject."""
    root = sent.root
    kids = list(root.children)
    if _nominal(root):
        subject = _unframe(root)  # "a picture of X above Y": the PP hangs on the frame
        return _noun_clause(subject, [], extra_head=root if subject is not root else None)
    if root.pos_ not in ("VERB", "AUX"):
        return None
    expl = next((c for c in kids if c.dep_ == "expl"), None)
    if expl is not None:  # "there is/are X ..."
        subject = next((c for c in kids if c.dep_ in ("attr", "nsubj", "dobj") and c.i > root.i), None)
        if subject is None:
            return None
        lead = [expl.i, root.i] + [c.i for c in kids if c.dep_ == "neg"]
        if root.tag_ == "VBP" and subject.tag_ in ("NN", "NNP"):
            lead = []  # "there are a, b and c" reduced to one noun: "a on Y" reads better
        return _noun_clause(subject, lead, extra_head=root)
    subject = next((c for c in kids if c.dep_ in ("nsubj", "nsubjpass")), None)
    if subject is None:
        return None
    subject = _unframe(subject)
    rels = [lambda adj, v=root: _vp(v, adj)]
    if _first_pp(subject, "all") is not None:
        rels.append(lambda adj, s=subject: _first_pp(s, adj))
    plural_verb = root.tag_ == "VBP" or any(c.dep_ == "aux" and c.tag_ == "VBP" for c in kids) \
        or root.lower_ in ("are", "were") or any(c.lower_ in ("are", "were") for c in kids if c.dep_ == "aux")
    singular = subject.tag_ in ("NN", "NNP") and any(c.dep_ == "conj" for c in subject.children)
    return _Clause([], subject, rels, root, keep_list=plural_verb and singular)


def _np_list(noun: Any, adjectives: str) -> list[int]:
    """A noun phrase with its coordinated nouns ("a lady and a man"), each reduced."""
    out = _np(noun, adjectives)
    for c in noun.children:
        if c.dep_ == "cc":
            out.append(c.i)
        elif c.dep_ == "conj" and _nominal(c):
            out += _np_list(c, adjectives)
    return out


def _bare_verb_ok(verb: Any) -> bool:
    """"a man sits" and "a man holding" read well; "a man holds" (object dropped) does not."""
    if verb.lemma_ in ("be", "have", "do"):
        return False  # "the man is"
    return verb.tag_ in ("VBG", "VBN") or not any(c.dep_ == "dobj" for c in verb.children)


def _clause_variants(clause: _Clause) -> list[list[int]]:
    """Positive candidates, best first (see the module docstring)."""
    lead, s, rels = clause.lead, clause.subject, clause.relations
    first = rels[0] if rels else (lambda adj: [])
    subj = _np_list if clause.keep_list else _np  # the subject that goes before the verb
    variants = [
        lead + subj(s, "all") + first("all"),
        lead + subj(s, "last") + first("last"),
        lead + _np(s, "all"),
        lead + subj(s, "none") + first("none"),
    ]
    variants += [lead + _np(s, "all") + rel("all") for rel in rels[1:]]
    if clause.verb is not None and _bare_verb_ok(clause.verb):
        variants.append(lead + subj(s, "all") + _verb_group(clause.verb))
    variants.append(lead + _np(s, "none"))
    return variants


def _fallback_variants(sent: Any) -> list[list[int]]:
    """Captions without a usable subject: prune the root's subtree the same way."""
    root = sent.root
    core = _core(root)
    bare = [i for i in core if not _adjectival(sent.doc[i])]
    first = _first_pp(root, "all") or []
    return [core + first, bare + first, core, bare]


def positive_spans(doc: Any, max_positives: int) -> list[tuple[int, ...]]:
    """Token index tuples of the positive subtexts of a parsed caption (see module docstring)."""
    sent = max(doc.sents, key=len)
    content = tuple(t.i for t in doc if not t.is_punct or _intraword(t))
    clause = _clause(sent)
    out: list[tuple[int, ...]] = []
    for variants in (_clause_variants(clause) if clause else [], _fallback_variants(sent)):
        for v in variants:
            span = tuple(sorted({i for i in v if not doc[i].is_punct or _intraword(doc[i])}))
            has_noun = any(_nominal(doc[i]) or doc[i].pos_ == "PRON" for i in span)
            if span and has_noun and span != content and span not in out:
                out.append(span)
            if len(out) == max_positives:
                return out
        if out:
            break  # the fallback is only for captions the clause rules do not fit
    return out


def render(doc: Any, span: Iterable[int], replace: dict[int, str] | None = None) -> str:
    """The text of the tokens ``span`` with original spacing between neighbours, ``replace``d
    words, and "a"/"an" adjusted where the word after the article changed."""
    replace = dict(replace or {})
    idx = sorted(span)
    for k, i in enumerate(idx[:-1]):
        nxt = idx[k + 1]
        if doc[i].lower_ in ("a", "an") and (nxt != i + 1 or nxt in replace):
            replace[i] = _match_case(_article(replace.get(nxt, doc[nxt].text)), doc[i].text)
    parts = []
    for k, i in enumerate(idx):
        parts.append(replace.get(i, doc[i].text))
        if k + 1 < len(idx):
            parts.append(doc[i].whitespace_ if idx[k + 1] == i + 1 else " ")
    return "".join(parts).strip()


# ---------------------------------------------------------------------------------------------
# WordNet look-ups (cached per word: they do not depend on the caption or the vocabulary).

def _single_word(name: str) -> bool:
    return name.isalpha() and name.islower()


def _offensive(synset: Any, name: str, blocklist: frozenset[str]) -> bool:
    return name in blocklist or any(d.name() in _SENSITIVE_DOMAINS for d in synset.usage_domains())


@functools.lru_cache(maxsize=None)
def _synonyms(lemma: str, pos: str) -> frozenset[str]:
    """Every lemma sharing a synset with ``lemma`` (adjective satellites count as "a")."""
    wn = wordnet()
    return frozenset(n.lower() for s in wn.synsets(lemma, pos) for n in s.lemma_names())


@functools.lru_cache(maxsize=None)
def _first_sense(lemma: str, pos: str) -> Any | None:
    senses = _senses(lemma, pos)
    return senses[0] if senses else None


def _wn_lemma(tok: Any, pos: str) -> str | None:
    """The WordNet base form of a token (spaCy's lemma, else WordNet's morphology). A verb
    lemma must give back the token's form: spaCy reads "staring" as "star" ("starring")."""
    if pos == "v" and tok.tag_ in ("VBG", "VBZ", "VBD", "VBN"):
        forms = [tok.lemma_.lower()] + wordnet()._morphy(tok.lower_, "v")
        for cand in dict.fromkeys(forms):
            if _first_sense(cand, pos) is not None and _verb_form(cand, tok.tag_) in (tok.lower_, None):
                return cand
    for cand in ((tok.lower_,) if pos == "a" else (tok.lemma_.lower(), tok.lower_)):
        if _first_sense(cand, pos) is not None:
            return cand
    return wordnet().morphy(tok.lower_, pos)


@functools.lru_cache(maxsize=1)
def _sense_stats() -> dict[str, tuple[int, int]]:
    """Sense key -> (SemCor count, sense number of the word), read once from cntlist.rev
    (NLTK's ``Lemma.count`` searches the file on every call, and ranking a word's senses
    through ``synsets`` loads every one of them)."""
    stats = {}
    with wordnet().open("cntlist.rev") as f:
        for line in f:
            key, number, count = line.split()
            stats[key] = (int(count), int(number))
    return stats


def _count(lemma: Any) -> int:
    return _sense_stats().get(lemma.key(), (0, 0))[0]


@functools.lru_cache(maxsize=None)
def _senses(word: str, pos: str) -> tuple[Any, ...]:
    return tuple(wordnet().synsets(word, pos))


def _usable(lemma: Any, synset: Any, pos: str, min_count: int, first_senses: int,
            blocklist: frozenset[str]) -> bool:
    """A replacement lemma that is common, single-word, and means ``synset`` first (so that
    "dog" does not become "head", a head of cattle being the second sense of "head")."""
    name = lemma.name()
    if not _single_word(name) or name in blocklist:
        return False
    count, number = _sense_stats().get(lemma.key(), (0, 0))
    if count < min_count:
        return False
    if not number:  # a sense never seen in SemCor: rank it the slow way
        number = 1 + _senses(name, pos).index(synset) if synset in _senses(name, pos) else 99
    return number <= first_senses and not _offensive(synset, name, blocklist)


@functools.lru_cache(maxsize=None)
def source_sense(lemma: str, pos: str, physical_senses: int = 2) -> Any | None:
    """The sense of a caption word that replacements are drawn for: its first (most frequent)
    WordNet sense, except that a noun whose first sense is abstract takes the first concrete
    sense among its first ``physical_senses`` (captions describe what is seen: "table" is
    furniture here, not an array of numbers)."""
    senses = _senses(lemma, pos)
    if not senses:
        return None
    if pos == "n":
        for s in senses[:physical_senses]:
            if s.lexname() not in _ABSTRACT_LEXNAMES:
                return s
    return senses[0]


@functools.lru_cache(maxsize=None)
def cohyponyms(lemma: str, pos: str, min_count: int = 1, min_depth: int = 4, max_siblings: int = 150,
               first_senses: int = 1, physical_senses: int = 2,
               blocklist: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """Siblings of ``lemma``'s sense (see :func:`source_sense`) under a shared hypernym, in the
    same lexicographer file. For nouns, a hypernym shallower than ``min_depth``, with more than
    ``max_siblings`` hyponyms ("herb") or among WordNet's top categories (noun.Tops: "artifact",
    "organism") is too general to give the same kind of thing. Ordered by the shared hypernym,
    most specific first ("dog": canine before domestic animal), then by frequency."""
    sense = source_sense(lemma, pos, physical_senses)
    if sense is None:
        return ()
    avoid = _synonyms(lemma, pos) | {lemma}
    found: dict[str, tuple[int, int]] = {}
    for h in sense.hypernyms() + sense.instance_hypernyms():
        siblings = h.hyponyms()
        if pos == "n" and (h.min_depth() < min_depth or len(siblings) > max_siblings
                           or h.lexname() == "noun.Tops"):
            continue
        for sib in siblings:
            if sib == sense or sib.lexname() != sense.lexname():
                continue
            for lem in sib.lemmas():
                name = lem.name()
                if name not in avoid and _usable(lem, sib, pos, min_count, first_senses, blocklist):
                    found[name] = max(found.get(name, (0, 0)), (h.min_depth(), _count(lem)))
    return tuple(sorted(found, key=lambda n: (-found[n][0], -found[n][1], n)))


@functools.lru_cache(maxsize=None)
def _ancestors(synset: Any, hops: int = 99) -> frozenset[Any]:
    """Hypernyms of ``synset`` up to ``hops`` levels (both ordinary and instance links)."""
    seen: set[Any] = set()
    level = [synset]
    for _ in range(hops):
        level = [h for s in level for h in s.hypernyms() + s.instance_hypernyms()]
        if not level:
            break
        seen.update(level)
    return frozenset(seen)


@functools.lru_cache(maxsize=1)
def colour_words() -> frozenset[str]:
    """Colour words that are also adjectives: the direct hyponyms of chromatic_color.n.01 and
    achromatic_color.n.01 (red, blue, ..., white, black, gray, and rarer ones like salmon)."""
    wn = wordnet()
    out = set()
    for root in ("chromatic_color.n.01", "achromatic_color.n.01"):
        for s in wn.synset(root).hyponyms():
            out.update(n for n in s.lemma_names() if _single_word(n) and _senses(n, "a"))
    return frozenset(out)


@functools.lru_cache(maxsize=None)
def colours(min_count: int = 5) -> frozenset[str]:
    """The common colours among :func:`colour_words` (adjective lemma count >= ``min_count``),
    the ones a colour is replaced by: red, blue, ..., not salmon or pastel."""
    def count(word: str) -> int:
        return max((_count(lem) for s in _senses(word, "a")[:1] for lem in s.lemmas()
                    if lem.name() == word), default=0)
    return frozenset(w for w in colour_words() if count(w) >= min_count)


def _adjective_head(sense: Any) -> Any:
    """The head of an adjective cluster ("tiny" -> small.a.01): antonyms live there."""
    if sense.pos() == "s":
        heads = sense.similar_tos()
        if heads:
            return heads[0]
    return sense


@functools.lru_cache(maxsize=None)
def antonyms(lemma: str, min_count: int = 1) -> tuple[str, ...]:
    """Antonyms of an adjective's first sense, through its cluster head for satellites.
    Colours have none here (their cluster head's antonym is "achromatic")."""
    sense = _first_sense(lemma, "a")
    if sense is None or lemma in colour_words():
        return ()
    out: list[str] = []
    for s in (sense, _adjective_head(sense)):
        for lem in s.lemmas():
            for ant in lem.antonyms():
                name = ant.name()
                if _single_word(name) and name != lemma and name not in out and _count(ant) >= min_count:
                    out.append(name)
    return tuple(out)


@functools.lru_cache(maxsize=None)
def sibling_attributes(lemma: str, min_count: int = 1) -> tuple[str, ...]:
    """Another value of the same attribute: another colour for a colour, or the other adjectives
    WordNet lists for the attribute noun of the adjective's cluster (size: large, small)."""
    if lemma in colour_words():
        return tuple(sorted(colours() - _synonyms(lemma, "a") - {lemma}))
    sense = _first_sense(lemma, "a")
    if sense is None:
        return ()
    avoid = _synonyms(lemma, "a") | {lemma}
    out: list[str] = []
    for attr in _adjective_head(sense).attributes():
        for value in attr.attributes():
            for lem in value.lemmas():
                name = lem.name()
                if _single_word(name) and name not in avoid and name not in out and _count(lem) >= min_count:
                    out.append(name)
    return tuple(out)


@functools.lru_cache(maxsize=None)
def spatial_swaps(word: str) -> tuple[str, ...]:
    """Opposite spatial words: WordNet antonyms that are spatial too (left -> right), else a
    small table for prepositions WordNet lacks (over -> under)."""
    wn = wordnet()
    out: list[str] = []
    for pos in ("r", "a", "n"):
        for s in wn.synsets(word, pos)[:2]:
            for lem in s.lemmas():
                if lem.name() != word:
                    continue
                for ant in lem.antonyms():
                    if ant.name() in _SPATIAL and ant.name() not in out:
                        out.append(ant.name())
    if not out and word in _PREP_SWAPS:
        out.append(_PREP_SWAPS[word])
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Inflection.

@functools.lru_cache(maxsize=2)
def _irregular(pos: str) -> dict[str, tuple[str, ...]]:
    """Base form -> inflected forms, from WordNet's exception lists (noun.exc, verb.exc)."""
    table: dict[str, list[str]] = defaultdict(list)
    for form, bases in wordnet()._exception_map[pos].items():
        for b in bases:
            table[b].append(form)
    return {b: tuple(sorted(f)) for b, f in table.items()}


def _plural(noun: str) -> str:
    forms = [f for f in _irregular("n").get(noun, ()) if f not in _ARCHAIC_PLURALS and f != noun]
    if forms:
        return forms[0]
    if noun.endswith("man") and noun not in ("human", "german", "shaman"):
        return noun[:-3] + "men"
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in tuple("aeiou"):
        return noun[:-1] + "ies"
    return noun + "s"


def _verb_form(verb: str, tag: str) -> str | None:
    """``verb`` in the form ``tag``; None when the form is uncertain (irregular past forms)."""
    if tag in ("VB", "VBP"):
        return verb
    irregular = _irregular("v").get(verb, ())
    if tag == "VBG":
        ing = [f for f in irregular if f.endswith("ing")]
        if ing:
            return ing[0]
        if verb.endswith("ie"):
            return verb[:-2] + "ying"
        if verb.endswith("e") and not verb.endswith(("ee", "ye", "oe")) and len(verb) > 2:
            return verb[:-1] + "ing"
        return verb + "ing"
    if tag == "VBZ":
        if verb.endswith(("s", "x", "z", "ch", "sh", "o")):
            return verb + "es"
        if verb.endswith("y") and verb[-2:-1] not in tuple("aeiou"):
            return verb[:-1] + "ies"
        return verb + "s"
    if tag in ("VBD", "VBN"):
        past = [f for f in irregular if not f.endswith("ing")]
        if past:  # "stopped" is safe; "ran"/"run", "wrote"/"written" are not told apart here
            return past[0] if all(f.endswith("ed") for f in past) and len(past) == 1 else None
        if verb.endswith("e"):
            return verb + "d"
        if verb.endswith("y") and verb[-2:-1] not in tuple("aeiou"):
            return verb[:-1] + "ied"
        return verb + "ed"
    return None


def _article(word: str) -> str:
    """"a" or "an" before ``word`` (by spelling, with the usual exceptions)."""
    w = word.lower()
    if w.startswith(("hour", "honest", "heir", "honor", "honour")):
        return "an"
    if w.startswith(("uni", "use", "usu", "uti", "eu", "one", "once", "ur")):
        return "a"
    return "an" if w[:1] in "aeiou" else "a"


def _match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word[:1].upper() + word[1:] if like[:1].isupper() else word


# ---------------------------------------------------------------------------------------------
# The generator.

_POS = {"NOUN": "n", "VERB": "v", "ADJ": "a"}


class _Vocabulary:
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
class _Slot:
    """A replaceable word of a base text and its replacements (lemma, origin), best first."""

    index: int
    kind: str  # "object", "attribute" or "relation"
    pos: str  # WordNet part of speech: "n", "a", "v" ("r" for spatial words)
    tag: str  # the form the replacement takes (NNS, VBG, ...)
    choices: list[tuple[str, str]]


def _word_class(tok: Any) -> tuple[str, str] | None:
    """(WordNet POS, tag to inflect to) of a content word, repairing the small model's usual
    slips on short lowercase captions: a colour word before its noun is an adjective even when
    tagged as a noun ("an orange cross"), lowercase proper nouns and determined adjectives
    ("a small pink cross") are common nouns."""
    low = tok.lower_
    if low in colour_words() and tok.i < tok.head.i and tok.dep_ in ("amod", "compound", "nmod", "npadvmod"):
        return "a", "JJ"
    if low in _SPATIAL or tok.dep_ == "compound":
        return None  # noun modifiers ("construction workers") are part of the head's meaning
    if tok.pos_ == "NOUN" or (tok.pos_ == "PROPN" and tok.text.islower()) or (tok.pos_ == "ADJ" and _nominal(tok)):
        return "n", "NNS" if tok.tag_ in ("NNS", "NNPS") else "NN"
    if tok.pos_ == "ADJ" and tok.tag_ == "JJ":
        return "a", "JJ"
    if tok.pos_ == "VERB" and tok.tag_.startswith("VB") and tok.lemma_ not in ("be", "have", "do"):
        return "v", tok.tag_
    return None


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
        self._vocab_texts = list(vocabulary)
        self._vocab: _Vocabulary | None = None
        self._nlp: Any = None
        self._cache: dict[str, Subtexts] = {}
        self._choices: dict[tuple[str, str], dict[str, tuple[str, ...]]] = {}
        self._vocab_index: dict[str, tuple[Any, frozenset[Any]]] | None = None

    # -- public -------------------------------------------------------------------------------

    def generate(self, captions: list[str]) -> list[Subtexts]:
        """Subtexts for each caption, in order. New captions are parsed in one batch."""
        todo = list(dict.fromkeys(c for c in captions if c not in self._cache))
        if todo:
            nlp = self._pipeline()
            vocab = self._vocabulary()
            for caption, doc in zip(todo, nlp.pipe(todo, batch_size=256)):
                self._cache[caption] = self._subtexts(caption, doc, vocab)
        return [self._cache[c] for c in captions]

    # -- resources ----------------------------------------------------------------------------

    def _pipeline(self) -> Any:
        if self._nlp is None:
            self._nlp = spacy_pipeline(self.cfg.spacy_model)
        return self._nlp

    def _vocabulary(self) -> _Vocabulary:
        if self._vocab is None:
            # Tags and lemmas suffice here, so the parser is skipped (about twice as fast).
            docs = self._pipeline().pipe(dict.fromkeys(self._vocab_texts), batch_size=512,
                                         disable=["parser"])
            self._vocab = _Vocabulary(docs)
        return self._vocab

    # -- one caption --------------------------------------------------------------------------

    def _subtexts(self, caption: str, doc: Any, vocab: _Vocabulary) -> Subtexts:
        rng = random.Random(f"{self.cfg.seed}\x00{caption}")  # str seeds are hashed stably
        spans = positive_spans(doc, self.cfg.max_positives)
        whole = tuple(t.i for t in doc if not t.is_punct or _intraword(t))
        in_caption = {t.lower_ for t in doc} | {t.lemma_.lower() for t in doc}
        negatives: list[Negative] = []
        for span in spans:
            negatives += self._negatives(doc, span, in_caption, vocab, rng)
        if not negatives:  # no positive, or none with a replaceable word: use the caption
            negatives = self._negatives(doc, whole, in_caption, vocab, rng)
        return Subtexts(caption, tuple(render(doc, s) for s in spans), tuple(negatives))

    def _negatives(self, doc: Any, span: tuple[int, ...], in_caption: set[str],
                   vocab: _Vocabulary, rng: random.Random) -> list[Negative]:
        """Up to m negatives of one base text, alternating kinds, no two alike."""
        base = render(doc, span)
        slots = [s for s in (self._slot(doc[i], in_caption, vocab, rng) for i in span) if s is not None]
        rng.shuffle(slots)
        by_kind: dict[str, list[_Slot]] = defaultdict(list)
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
                    if len(out) == self.cfg.negatives_per_positive:
                        return out
                    if attempt >= len(slot.choices):
                        continue
                    neg = self._apply(doc, span, slot, slot.choices[attempt], base, vocab)
                    if neg is not None and neg.text.lower() not in seen:
                        seen.add(neg.text.lower())
                        out.append(neg)
                        break  # next kind
        return out

    def _apply(self, doc: Any, span: tuple[int, ...], slot: _Slot, choice: tuple[str, str],
               base: str, vocab: _Vocabulary) -> Negative | None:
        tok = doc[slot.index]
        word = self._inflect(choice[0], slot.pos, slot.tag, vocab)
        if word is None:
            return None
        word = _match_case(word, tok.text)
        text = render(doc, span, {slot.index: word})  # also fixes "a"/"an" before the word
        return Negative(text, slot.kind, tok.text, word, choice[1], base)

    @staticmethod
    def _inflect(lemma: str, pos: str, tag: str, vocab: _Vocabulary) -> str | None:
        """``lemma`` in the form ``tag``: as observed in the vocabulary, else by rule."""
        if tag in ("NN", "JJ", "VB", "VBP"):
            return lemma
        seen = vocab.form(lemma, tag)
        if seen:
            return seen
        if pos == "n":
            return _plural(lemma)
        return _verb_form(lemma, tag)

    # -- candidate words ----------------------------------------------------------------------

    def _slot(self, tok: Any, in_caption: set[str], vocab: _Vocabulary,
              rng: random.Random) -> _Slot | None:
        """The token's kind and replacement choices, or None if it is not a content word."""
        low, doc = tok.lower_, tok.doc
        if not tok.is_alpha or low in _NON_CONTENT:
            return None
        if any(0 <= j < len(doc) and _intraword(doc[j]) for j in (tok.i - 1, tok.i + 1)):
            return None  # part of a hyphenated word ("light-colored")
        if low in _SPATIAL and (tok.pos_ in ("ADP", "ADV", "PART") or tok.dep_ in ("pobj", "prt")):
            if "antonym" not in self.cfg.negative_sources:
                return None
            slot = _Slot(tok.i, "relation", "r", "", [(w, "antonym") for w in spatial_swaps(low)])
        else:
            word_class = _word_class(tok)
            if word_class is None:
                return None
            pos, tag = word_class
            kind = {"n": "object", "a": "attribute", "v": "relation"}[pos]
            slot = _Slot(tok.i, kind, pos, tag, self._choices_for(tok, pos, vocab, rng))
        slot.choices = [(w, o) for w, o in slot.choices if w not in in_caption]
        return slot if slot.choices else None

    def _choices_for(self, tok: Any, pos: str, vocab: _Vocabulary,
                     rng: random.Random) -> list[tuple[str, str]]:
        """Replacements (word, origin) for a token, origins interleaved (first of each, then
        second of each, ...) so that a few negatives already mix WordNet relations with
        in-domain words. Antonyms and sibling attributes come in an order drawn from ``rng``
        (all colours are equally good); co-hyponyms and vocabulary words best first (the
        frequent "man" for "woman" before the rare "liberal")."""
        lemma = _wn_lemma(tok, pos)
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

    def _candidates(self, lemma: str, pos: str, vocab: _Vocabulary) -> dict[str, tuple[str, ...]]:
        """Replacements for a lemma by origin, best first (cached per lemma)."""
        cfg = self.cfg
        k = cfg.max_candidates
        by_origin: dict[str, tuple[str, ...]] = {}
        if pos in ("n", "v"):
            by_origin["cohyponym"] = cohyponyms(
                lemma, pos, cfg.min_sense_count, cfg.min_hypernym_depth, cfg.max_siblings,
                cfg.replacement_senses, cfg.physical_senses, cfg.blocklist)[:k]
        else:
            by_origin["antonym"] = antonyms(lemma, cfg.min_sense_count)[:k]
            by_origin["sibling-attribute"] = sibling_attributes(lemma, cfg.min_sense_count)
        if "vocabulary" in cfg.negative_sources:
            by_origin["vocabulary"] = tuple(self._from_vocabulary(lemma, pos, vocab)[:k])
        return {o: tuple(w for w in words if w != lemma) for o, words in by_origin.items()}

    def _from_vocabulary(self, lemma: str, pos: str, vocab: _Vocabulary) -> list[str]:
        """Vocabulary words of the same POS that are close in meaning to ``lemma``."""
        sense = source_sense(lemma, pos, self.cfg.physical_senses)
        if sense is None:
            return []
        avoid = _synonyms(lemma, pos) | {lemma}
        if pos == "a":
            is_colour = lemma in colour_words()
            return [w for w in vocab.words("a") if w not in avoid and (w in colour_words()) == is_colour
                    and self._common(w, "a")]
        if pos == "v":
            return [w for w in vocab.words("v") if w not in avoid and w not in ("be", "have", "do")
                    and self._common(w, "v") and _first_sense(w, "v").lexname() == sense.lexname()]
        near = _ancestors(sense, self.cfg.vocabulary_hops)
        near = {a for a in near if a.min_depth() >= self.cfg.min_hypernym_depth}
        above = _ancestors(sense)
        out = []
        for w, (first, related) in self._noun_index(vocab).items():
            # Close in meaning, but neither a hypernym ("animal" for "dog") nor a hyponym.
            if w not in avoid and related & near and sense not in related and first not in above:
                out.append(w)
        return out

    def _noun_index(self, vocab: _Vocabulary) -> dict[str, tuple[Any, frozenset[Any]]]:
        """Vocabulary noun (most frequent first) -> (its first sense, its first three attested
        senses and their hypernyms within ``vocabulary_hops``)."""
        if self._vocab_index is None:
            index = {}
            for w in vocab.words("n"):
                if not self._common(w, "n"):
                    continue
                # Attested senses only: "dog" as a person (count 0) must not bring it near "man".
                senses = [x for x in _senses(w, "n")[:3]
                          if any(_count(lem) >= self.cfg.min_sense_count
                                 for lem in x.lemmas() if lem.name().lower() == w)] or [_senses(w, "n")[0]]
                related = set(senses).union(*(_ancestors(s, self.cfg.vocabulary_hops) for s in senses))
                index[w] = (senses[0], frozenset(related))
            self._vocab_index = index
        return self._vocab_index

    def _common(self, word: str, pos: str) -> bool:
        return _common_word(word, pos, self.cfg.min_sense_count, self.cfg.blocklist)


@functools.lru_cache(maxsize=None)
def _common_word(word: str, pos: str, min_count: int, blocklist: frozenset[str]) -> bool:
    """A single-word lemma whose first sense is frequent enough and inoffensive."""
    if not _single_word(word) or word in blocklist:
        return False
    sense = _first_sense(word, pos)
    if sense is None:
        return False
    lem = next((x for x in sense.lemmas() if x.name().lower() == word), None)
    return lem is not None and _count(lem) >= min_count and not _offensive(sense, word, blocklist)


# ---------------------------------------------------------------------------------------------
# Quality.

_WORD = re.compile(r"\w+(?:[-']\w+)*|[^\w\s]")


def _words(text: str) -> list[str]:
    """Lowercase words and punctuation marks, "an" read as "a" (articles follow the next word)."""
    return ["a" if w == "an" else w for w in _WORD.findall(text.lower())]


def _is_subsequence(part: list[str], whole: list[str]) -> bool:
    it = iter(whole)
    return all(any(w == x for x in it) for w in part)


def _one_word_swap(neg: Negative) -> bool:
    """``neg.text`` differs from ``neg.base`` in exactly the recorded word (a/an aside), and
    source and replacement have the same coarse part of speech in WordNet."""
    a, b = _words(neg.base), _words(neg.text)
    if len(a) != len(b):
        return False
    diff = [k for k, (x, y) in enumerate(zip(a, b)) if x != y]
    if len(diff) != 1:
        return False
    k = diff[0]
    if (a[k], b[k]) != (neg.source.lower(), neg.replacement.lower()):
        return False
    pos = {"object": ("n",), "attribute": ("a",), "relation": ("v",)}.get(neg.kind, ())
    if neg.kind == "relation" and a[k] in _SPATIAL:
        return b[k] in _SPATIAL
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
        "positive_subsequence": share(sum(_is_subsequence(_words(p), _words(c)) for c, p in positives),
                                      len(positives)),
        "negatives": len(negatives),
        "negative_one_word": share(sum(_one_word_swap(neg) for neg in negatives), len(negatives)),
        "by_kind": dict(sorted(Counter(neg.kind for neg in negatives).items())),
        "by_origin": dict(sorted(Counter(neg.origin for neg in negatives).items())),
    }
