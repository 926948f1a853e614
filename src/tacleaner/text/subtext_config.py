"""The shapes of subtexts and every tunable choice of the rules that make them."""
from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("object", "attribute", "relation")
ORIGINS = ("cohyponym", "antonym", "sibling-attribute", "people", "vocabulary")
NEGATIVE_BASES = ("positives", "caption")  # what a negative is a one-word change of


@dataclass(frozen=True)
class Negative:
    """One counterfactual subtext: ``base`` with ``source`` replaced by ``replacement``."""

    text: str
    kind: str  # "object" (noun replaced), "attribute" (adjective), "relation" (verb or spatial word)
    source: str  # the replaced word as it appears
    replacement: str  # the new word as it appears
    origin: str  # "cohyponym", "antonym", "sibling-attribute", "people", "vocabulary" or "random"
    base: str = ""  # the positive (or caption) the negative was made from


@dataclass(frozen=True)
class Subtexts:
    """A caption with its positive subtexts and their negatives (m per positive, in order)."""

    caption: str
    positives: tuple[str, ...]
    negatives: tuple[Negative, ...]
    depicted: str = ""  # the depicted head object every positive keeps ("" when none was found)


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
    min_zipf: float = 3.3  # replacements come from the common-word list at this Zipf frequency or more
    negative_mode: str = "wordnet"  # a registered mode (negative_modes.py): "wordnet", the sources above; "random", the paper's random swaps
    # "positives": each positive's negatives (the caption's when they give none); "caption": the
    # whole caption with one word swapped (TA-Cleaner's negatives-only ablation aligns the caption)
    negatives_from: str = "positives"
    random_min_zipf: float = 4.0  # random-mode replacements: words at least this common
    n_process: int = 1  # spaCy processes parsing a batch of at least PARALLEL_FROM new captions (same output)
    # Refuse replacements a picture of the source may still fit: synonyms, hypernyms, hyponyms,
    # similar-tos between the words' own senses, and the shipped near-equivalents (lexicon.near_equivalent).
    refuse_entailed: bool = True
    blocklist: frozenset[str] = field(default_factory=lambda: frozenset(
        {"whore", "prostitute", "harlot", "slut", "bitch", "bastard", "wench", "hussy"}))
