"""Positive subtexts: shorter captions that keep the essential semantics, as token index sets
over the spaCy parse of the caption.

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
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .lexicon import ABSTRACT_LEXNAMES, PEOPLE, PLACEHOLDERS, dominant_pos, source_sense, unattested_as
from .tokens import SHOWING_VERBS, adjectival, intraword, is_frame, nominal

# Subtrees under these dependencies are extra detail and are never kept inside a phrase.
_DETAIL_DEPS = frozenset({"conj", "cc", "preconj", "appos", "relcl", "acl", "advcl", "parataxis",
                          "prep", "punct", "mark", "dep", "meta"})


def _core(tok: Any, keep_conj: bool = False) -> list[int]:
    """``tok`` and its dependents, without the detail dependencies (clauses, PPs, lists)."""
    out = [tok.i]
    for c in tok.children:
        if c.dep_ == "punct" and intraword(c):
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
    amods = [c for c in noun.lefts if adjectival(c)]
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
        elif c.dep_ == "punct" and intraword(c):
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
        if c.dep_ in ("prep", "agent") and not (c.lower_ == "of" and nominal(head)):
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
    obj = next((c for c in prt.children if nominal(c)), None) if prt is not None else None
    if obj is not None:  # "walking up the hill": the parser hangs the object on the particle
        return out + _np(obj, adjectives)
    for dep in ("dobj", "attr", "acomp", "oprd", "xcomp"):
        c = next((k for k in kids if k.dep_ == dep), None)
        if c is None:
            continue
        if dep in ("dobj", "attr", "oprd") and (nominal(c) or c.pos_ in ("PRON", "NUM")):
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
    conjs = [c for c in subject.subtree if c.dep_ == "conj" and nominal(c.head)]
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


def _framed(noun: Any) -> Any | None:
    """What a frame noun shows: the object of its "of" (also under "close up"'s particle), or
    the object of a showing participle ("a purple picture showing a coat")."""
    for holder in [noun] + [c for c in noun.children if c.dep_ == "prt"]:
        obj = _of_object(holder)
        if obj is not None:
            return obj
    for c in noun.children:
        if c.dep_ in ("acl", "relcl") and c.lemma_.lower() in SHOWING_VERBS:
            obj = next((d for d in c.children if d.dep_ == "dobj" and nominal(d)), None)
            if obj is not None:
                return obj
    return None


def _of_object(noun: Any) -> Any | None:
    """The noun of ``noun``'s "of" phrase ("a group of people" -> people), if any."""
    of = next((c for c in noun.children if c.dep_ == "prep" and c.lower_ == "of"), None)
    obj = _prep_object(of) if of is not None else None
    return obj if obj is not None and nominal(obj) else None


def _follow(noun: Any, holds: Callable[[Any], bool], inner: Callable[[Any], Any | None]) -> Any:
    """Step from ``noun`` to ``inner(noun)`` while ``holds(noun)`` and there is one."""
    while holds(noun):
        nxt = inner(noun)
        if nxt is None:
            break
        noun = nxt
    return noun


def _unframe(noun: Any) -> Any:
    """"a photo of a red circle" -> circle (repeatedly, for "a close-up photo of ...")."""
    return _follow(noun, is_frame, _framed)


def _clause(sent: Any) -> _Clause | None:
    """Subject, relations and lead words of the main clause, or None if there is no subject."""
    root = sent.root
    kids = list(root.children)
    if nominal(root):
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
    shown = next((c for c in kids if c.dep_ == "dobj" and nominal(c)), None)
    if is_frame(subject) and root.lemma_.lower() in SHOWING_VERBS and shown is not None:
        return _noun_clause(_unframe(shown), [])  # "image may contain: person, on stage" -> person
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
        elif c.dep_ == "conj" and nominal(c):
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
    bare = [i for i in core if not adjectival(sent.doc[i])]
    first = _first_pp(root, "all") or []
    return [core + first, bare + first, core, bare]


def concrete_noun(tok: Any) -> bool:
    """A noun for something one can see: not a pronoun, a frame ("photo") or an abstract noun
    ("ways", "selection"). Words the small parser mis-tags ("dragonfly" as an adverb) count
    when WordNet knows them mostly as nouns."""
    if not tok.is_alpha or tok.pos_ == "PRON" or is_frame(tok):
        return False
    doc = tok.doc
    if any(0 <= j < len(doc) and intraword(doc[j]) for j in (tok.i - 1, tok.i + 1)):
        return False  # part of a hyphenated word ("snow-covered")
    low = tok.lower_
    if tok.pos_ in ("NOUN", "PROPN") and (low in PLACEHOLDERS or tok.lemma_.lower() in PEOPLE
                                          or low in ("people", "crowd", "family", "couple", "team")):
        return True  # people are what many pictures show, whatever WordNet files "people" under
    if not nominal(tok) and not (tok.pos_ in ("ADV", "ADJ", "X") and dominant_pos(low) == "n"):
        return False
    nxt = tok.doc[tok.i + 1] if tok.i + 1 < len(tok.doc) else None
    if low in _MANNER_NOUNS and nxt is not None and nxt.tag_ in ("VBN", "VBD"):
        return False  # "hand drawn vector illustration": "hand" says how, not what
    if unattested_as(tok.lemma_.lower(), "n"):
        return False  # "clings" read as a noun
    lemma = tok.lemma_.lower() if tok.pos_ in ("NOUN", "PROPN") else low
    sense = source_sense(lemma, "n") or source_sense(low, "n")
    return sense is not None and sense.lexname() not in ABSTRACT_LEXNAMES


# Nouns whose "of" phrase names what is shown: "a group of people", "the top of the mountain".
_OF_HEADS = frozenset({"group", "pair", "set", "bunch", "lot", "couple", "number", "variety", "selection",
                       "collection", "pile", "stack", "row", "line", "crowd", "herd", "flock", "team",
                       "top", "bottom", "side", "edge", "front", "back", "middle", "center", "centre",
                       "corner", "part", "piece", "inside", "outside", "interior", "exterior"})
# "hand drawn", "hand made": a noun that only modifies the participle after it.
_MANNER_NOUNS = frozenset({"hand", "machine", "home", "sun", "wind", "water"})


def depicted_object(doc: Any) -> Any | None:
    """The caption's depicted head object: the main clause's subject when it is a concrete
    noun, else the first concrete noun of the caption that is not a modifier ("someone is
    selling a sneaker" -> sneaker; "ways to care for a stray kitten" -> kitten). Every positive
    keeps it: a positive that drops what the image shows, aligned to that image, teaches the
    model something false."""
    sent = max(doc.sents, key=len)
    clause = _clause(sent)
    found = clause.subject if clause is not None and concrete_noun(clause.subject) else None
    if found is None:
        # A compound modifier ("tree" of "tree branch") is not the object when its head is a
        # concrete noun; when the parser made a verb the head ("a child clings"), it is.
        found = next((t for t in sent if concrete_noun(t) and t.dep_ != "poss"
                      and not (t.dep_ in ("compound", "nmod") and concrete_noun(t.head))), None)
    return None if found is None else _follow(found, lambda t: t.lower_ in _OF_HEADS, _of_object)


def positive_spans(doc: Any, max_positives: int) -> list[tuple[int, ...]]:
    """Token index tuples of the positive subtexts of a parsed caption (see module docstring)."""
    sent = max(doc.sents, key=len)
    content = tuple(t.i for t in doc if not t.is_punct or intraword(t))
    clause = _clause(sent)
    obj = depicted_object(doc)

    def collect(variants: list[list[int]], out: list[tuple[int, ...]]) -> None:
        for v in variants:
            span = tuple(sorted({i for i in v if not doc[i].is_punct or intraword(doc[i])}))
            has_noun = any(nominal(doc[i]) or doc[i].pos_ == "PRON" or (obj is not None and i == obj.i) for i in span)
            if span and has_noun and span != content and span not in out and (obj is None or obj.i in span):
                out.append(span)

    out: list[tuple[int, ...]] = []
    for variants in (_clause_variants(clause) if clause else [], _fallback_variants(sent)):
        collect(variants, out)
        if out:
            break  # the fallback is only for captions the clause rules do not fit
    if not out and obj is not None:  # no rule kept the object: its own noun phrase
        collect([_np(obj, "all"), _np(obj, "last"), _np(obj, "none")], out)
    return out[:max_positives]
