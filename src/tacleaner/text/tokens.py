"""Token-level predicates and rendering over a spaCy parse, shared by the rules that shorten a
caption (:mod:`.positives`) and the rules that swap one of its words (:mod:`.negatives`).

Each predicate repairs a slip the small English parser makes on short lowercase captions
(a hyphen split off a word, a determined adjective that is really a noun, a colour word tagged
as a noun), so that both kinds of subtext see the same words the same way.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .inflection import article, match_case
from .lexicon import colour_words

# Root nouns that frame the real subject: "a photo of X" -> X.
FRAME_NOUNS = frozenset({"photo", "photograph", "picture", "image", "drawing", "view", "shot",
                         "closeup", "close-up", "close", "snapshot", "painting", "illustration", "portrait",
                         "sketch", "render", "footage", "photography", "selfie"})
# Verbs by which a frame shows its content: "a picture showing a coat", "image may contain: X".
SHOWING_VERBS = frozenset({"show", "depict", "feature", "contain", "include", "display", "capture"})


def intraword(tok: Any) -> bool:
    """A hyphen or slash inside a word ("tri-colored"): kept with its neighbours."""
    doc = tok.doc
    return (0 < tok.i < len(doc) - 1 and tok.text in ("-", "/", "'")
            and not doc[tok.i - 1].whitespace_ and not tok.whitespace_)


def nominal(tok: Any) -> bool:
    """A noun, or a word the small parser mis-tagged in a noun's place ("a small pink cross"
    with "cross" as an adjective, lowercase words as proper nouns)."""
    if tok.pos_ in ("NOUN", "PROPN"):
        return True
    scope = tok.subtree if tok.dep_ == "ROOT" else tok.children
    return tok.pos_ == "ADJ" and any(c.dep_ == "det" for c in scope)


def adjectival(tok: Any) -> bool:
    """An adjective modifier, or a colour word the tagger took for a noun ("a cyan diamond")."""
    return tok.dep_ == "amod" or (tok.dep_ in ("compound", "nmod") and tok.lower_ in colour_words())


def is_frame(noun: Any) -> bool:
    """A frame noun, or "up" of "close - up" / "close up"."""
    return noun.lower_ in FRAME_NOUNS or (noun.lower_ == "up" and any(c.lower_ == "close" for c in noun.children))


def frame_word(tok: Any) -> bool:
    """Words that say how the caption was made rather than what it shows: a frame noun, and the
    showing verb and auxiliaries of "image may contain: ..."."""
    if is_frame(tok) or (tok.lower_ == "close" and tok.head.lower_ == "up"):
        return True
    verb = tok if tok.pos_ in ("VERB", "AUX") and tok.dep_ != "aux" else tok.head
    return (verb.lemma_.lower() in SHOWING_VERBS and (tok is verb or tok.dep_ == "aux")
            and any(c.dep_ in ("nsubj", "nsubjpass") and is_frame(c) for c in verb.children))


def render(doc: Any, span: Iterable[int], replace: dict[int, str] | None = None) -> str:
    """The text of the tokens ``span`` with original spacing between neighbours, ``replace``d
    words, and "a"/"an" adjusted where the word after the article changed."""
    replace = dict(replace or {})
    idx = sorted(span)
    for k, i in enumerate(idx[:-1]):
        nxt = idx[k + 1]
        if doc[i].lower_ in ("a", "an") and (nxt != i + 1 or nxt in replace):
            replace[i] = match_case(article(replace.get(nxt, doc[nxt].text)), doc[i].text)
    parts = []
    for k, i in enumerate(idx):
        parts.append(replace.get(i, doc[i].text))
        if k + 1 < len(idx):
            parts.append(doc[i].whitespace_ if idx[k + 1] == i + 1 else " ")
    return "".join(parts).strip()
