"""Inflecting a replacement word like the word it replaces, and the article before it."""
from __future__ import annotations

import functools
from collections import defaultdict

from .resources import wordnet

ARCHAIC_PLURALS = frozenset({"brethren", "kine", "pence", "hosen", "octopi"})


@functools.lru_cache(maxsize=2)
def _irregular(pos: str) -> dict[str, tuple[str, ...]]:
    """Base form -> inflected forms, from WordNet's exception lists (noun.exc, verb.exc)."""
    table: dict[str, list[str]] = defaultdict(list)
    for form, bases in wordnet()._exception_map[pos].items():
        for b in bases:
            table[b].append(form)
    return {b: tuple(sorted(f)) for b, f in table.items()}


def plural(noun: str) -> str:
    forms = [f for f in _irregular("n").get(noun, ()) if f not in ARCHAIC_PLURALS and f != noun]
    if forms:
        return forms[0]
    if noun.endswith("man") and noun not in ("human", "german", "shaman"):
        return noun[:-3] + "men"
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in tuple("aeiou"):
        return noun[:-1] + "ies"
    return noun + "s"


def verb_form(verb: str, tag: str) -> str | None:
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


def article(word: str) -> str:
    """"a" or "an" before ``word`` (by spelling, with the usual exceptions)."""
    w = word.lower()
    if w.startswith(("hour", "honest", "heir", "honor", "honour")):
        return "an"
    if w.startswith(("uni", "use", "usu", "uti", "eu", "one", "once", "ur")):
        return "a"
    return "an" if w[:1] in "aeiou" else "a"


def match_case(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    return word[:1].upper() + word[1:] if like[:1].isupper() else word
