"""When two subtexts say the same thing: the key TA-Cleaner compares positives by.

Two selected samples whose positives are "A red circle." and "red circles" describe images that
both fit either text; one must not be pushed away from the other's positive as if it were a
negative (docs/design.md, "Subtexts: negatives must be false of the image"). Comparing exact strings
misses such pairs, so texts are compared by a key: lowercase, punctuation dropped, the articles
a/an/the dropped, and simple plurals folded ("circles" -> "circle", "boxes" -> "box",
"berries" -> "berry", "men" -> "man"; "movies" -> "movy" is a known miss). Pure string rules,
no parser and no WordNet: the key is made for every selected sample at every epoch start, in
every training process.
"""
from __future__ import annotations

import re

ARTICLES = frozenset({"a", "an", "the"})
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?")
# Irregular plurals common in captions; the "-men" words ("firemen") fold by rule.
_IRREGULAR = {"children": "child", "people": "person", "feet": "foot", "teeth": "tooth", "mice": "mouse",
              "geese": "goose", "oxen": "ox", "wolves": "wolf", "leaves": "leaf", "knives": "knife",
              "wives": "wife", "lives": "life", "shelves": "shelf", "halves": "half", "calves": "calf"}
# Words ending in "s" that are not plurals of a shorter word ("glass", "bus", "this").
_NOT_PLURAL_ENDINGS = ("ss", "us", "is", "ous", "ics")


def fold_plural(word: str) -> str:
    """The singular of a regular (or common irregular) English plural, else ``word``: close
    enough for comparing texts, not a lemmatiser ("dress" and "bus" stay, "buses" -> "bus")."""
    if word.endswith("'s"):  # a possessive: "dog's" compares as "dog"
        word = word[:-2]
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if word.endswith("men"):
        return word[:-3] + "man"
    if len(word) <= 3 or not word.endswith("s") or word.endswith(_NOT_PLURAL_ENDINGS):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes", "zzes")):
        return word[:-2]
    return word[:-1]  # "houses" -> "house", "circles" -> "circle"


def subtext_key(text: str) -> str:
    """The form two texts are compared in: "A red circle." and "red circles" both give
    "red circle" (see the module docstring)."""
    words = _WORD.findall(text.lower())
    return " ".join(fold_plural(w) for w in words if w not in ARTICLES)
