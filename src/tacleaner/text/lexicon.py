"""WordNet look-ups for subtexts: senses, frequencies, co-hyponyms, antonyms, colours and
attribute values, spatial opposites. Cached per word: they do not depend on the caption or the
vocabulary. Counts are SemCor sense-tagged frequencies as WordNet 3.0 ships them (cntlist.rev).
"""
from __future__ import annotations

import functools
from typing import Any

from .inflection import verb_form
from .resources import wordnet


def ordered(items: list[Any]) -> list[Any]:
    """WordNet relations in a fixed order. NLTK returns some of them (``attributes``, for one)
    in set order, which changes with Python's hash seed from one process to the next; sorted
    by name, the same caption gets the same subtexts in every process."""
    return sorted(items, key=lambda x: x.name() if hasattr(x, "name") else str(x))

# Spatial words that act as the relation; they are swapped as "relation", not as nouns.
SPATIAL = frozenset({"left", "right", "above", "below", "top", "bottom", "inside", "outside",
                      "up", "down", "front", "back", "over", "under", "beneath", "underneath"})
# Preposition swaps WordNet has no antonym for.
PREP_SWAPS = {"over": "under", "under": "over", "beneath": "above", "underneath": "above"}
SENSITIVE_DOMAINS = frozenset({"disparagement.n.01", "ethnic_slur.n.01", "obscenity.n.01",
                                "vulgarism.n.01"})
# Lexicographer files of things one cannot see (for choosing a caption noun's sense).
ABSTRACT_LEXNAMES = frozenset({"noun.group", "noun.cognition", "noun.communication", "noun.act",
                                "noun.event", "noun.state", "noun.attribute", "noun.relation",
                                "noun.time", "noun.quantity", "noun.process", "noun.feeling",
                                "noun.motive", "noun.possession"})


def single_word(name: str) -> bool:
    return name.isalpha() and name.islower()


def offensive(synset: Any, name: str, blocklist: frozenset[str]) -> bool:
    return name in blocklist or any(d.name() in SENSITIVE_DOMAINS for d in synset.usage_domains())


@functools.lru_cache(maxsize=None)
def wn_synonyms(lemma: str, pos: str) -> frozenset[str]:
    """Every lemma sharing a synset with ``lemma`` (adjective satellites count as "a")."""
    wn = wordnet()
    return frozenset(n.lower() for s in wn.synsets(lemma, pos) for n in s.lemma_names())


@functools.lru_cache(maxsize=None)
def first_sense(lemma: str, pos: str) -> Any | None:
    senses = word_senses(lemma, pos)
    return senses[0] if senses else None


def wn_lemma(tok: Any, pos: str) -> str | None:
    """The WordNet base form of a token (spaCy's lemma, else WordNet's morphology). A verb
    lemma must give back the token's form: spaCy reads "staring" as "star" ("starring")."""
    if pos == "v" and tok.tag_ in ("VBG", "VBZ", "VBD", "VBN"):
        forms = [tok.lemma_.lower()] + wordnet()._morphy(tok.lower_, "v")
        for cand in dict.fromkeys(forms):
            if first_sense(cand, pos) is not None and verb_form(cand, tok.tag_) in (tok.lower_, None):
                return cand
    for cand in ((tok.lower_,) if pos == "a" else (tok.lemma_.lower(), tok.lower_)):
        if first_sense(cand, pos) is not None:
            return cand
    return wordnet().morphy(tok.lower_, pos)


@functools.lru_cache(maxsize=1)
def sense_stats() -> dict[str, tuple[int, int]]:
    """Sense key -> (SemCor count, sense number of the word), read once from cntlist.rev
    (NLTK's ``Lemma.count`` searches the file on every call, and ranking a word's senses
    through ``synsets`` loads every one of them)."""
    stats = {}
    with wordnet().open("cntlist.rev") as f:
        for line in f:
            key, number, count = line.split()
            stats[key] = (int(count), int(number))
    return stats


def lemma_count(lemma: Any) -> int:
    return sense_stats().get(lemma.key(), (0, 0))[0]


@functools.lru_cache(maxsize=None)
def word_senses(word: str, pos: str) -> tuple[Any, ...]:
    return tuple(wordnet().synsets(word, pos))


def usable(lemma: Any, synset: Any, pos: str, min_count: int, first_senses: int,
            blocklist: frozenset[str]) -> bool:
    """A replacement lemma that is common, single-word, and means ``synset`` first (so that
    "dog" does not become "head", a head of cattle being the second sense of "head")."""
    name = lemma.name()
    if not single_word(name) or name in blocklist:
        return False
    count, number = sense_stats().get(lemma.key(), (0, 0))
    if count < min_count:
        return False
    if not number:  # a sense never seen in SemCor: rank it the slow way
        number = 1 + word_senses(name, pos).index(synset) if synset in word_senses(name, pos) else 99
    return number <= first_senses and not offensive(synset, name, blocklist)


@functools.lru_cache(maxsize=None)
def source_sense(lemma: str, pos: str, physical_senses: int = 2) -> Any | None:
    """The sense of a caption word that replacements are drawn for: its first (most frequent)
    WordNet sense, except that a noun whose first sense is abstract takes the first concrete
    sense among its first ``physical_senses`` (captions describe what is seen: "table" is
    furniture here, not an array of numbers)."""
    senses = word_senses(lemma, pos)
    if not senses:
        return None
    if pos == "n":
        for s in senses[:physical_senses]:
            if s.lexname() not in ABSTRACT_LEXNAMES:
                return s
    return senses[0]


@functools.lru_cache(maxsize=None)
def cohyponyms(lemma: str, pos: str, min_count: int = 1, min_depth: int = 4, max_siblings: int = 150,
               first_senses: int = 1, physical_senses: int = 2,
               blocklist: frozenset[str] = frozenset(), sense_name: str | None = None) -> tuple[str, ...]:
    """Siblings of ``lemma``'s sense (see :func:`source_sense`) under a shared hypernym, in the
    same lexicographer file. For verbs, a top-level hypernym is too general; for nouns, a
    hypernym shallower than ``min_depth``, with more than
    ``max_siblings`` hyponyms ("herb") or among WordNet's top categories (noun.Tops: "artifact",
    "organism") is too general to give the same kind of thing. Ordered by the shared hypernym,
    most specific first ("dog": canine before domestic animal), then by frequency. ``sense_name``
    names another sense to use (the data's own, see ``NegativeMaker.sense``)."""
    sense = wordnet().synset(sense_name) if sense_name else source_sense(lemma, pos, physical_senses)
    if sense is None or (pos == "v" and not clear_first_sense(lemma, "v")):
        return ()
    avoid = wn_synonyms(lemma, pos) | {lemma}
    found: dict[str, tuple[int, int]] = {}
    for h in ordered(sense.hypernyms() + sense.instance_hypernyms()):
        siblings = ordered(h.hyponyms())
        if pos == "v" and h.min_depth() < 1:
            continue  # a top verb ("put", "move", "make") gathers unrelated acts: clap -> install
        if pos == "n" and (h.min_depth() < min_depth or len(siblings) > max_siblings
                           or h.lexname() == "noun.Tops"):
            continue
        for sib in siblings:
            if sib == sense or sib.lexname() != sense.lexname():
                continue
            for lem in sib.lemmas():
                name = lem.name()
                if name not in avoid and usable(lem, sib, pos, min_count, first_senses, blocklist):
                    found[name] = max(found.get(name, (0, 0)), (h.min_depth(), lemma_count(lem)))
    return tuple(sorted(found, key=lambda n: (-found[n][0], -found[n][1], n)))


@functools.lru_cache(maxsize=None)
def ancestors(synset: Any, hops: int = 99) -> frozenset[Any]:
    """Hypernyms of ``synset`` up to ``hops`` levels (both ordinary and instance links)."""
    seen: set[Any] = set()
    level = [synset]
    for _ in range(hops):
        level = [h for s in level for h in ordered(s.hypernyms() + s.instance_hypernyms())]
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
        for s in ordered(wn.synset(root).hyponyms()):
            out.update(n for n in s.lemma_names() if single_word(n) and word_senses(n, "a"))
    return frozenset(out)


@functools.lru_cache(maxsize=None)
def colours(min_count: int = 5) -> frozenset[str]:
    """The common colours among :func:`colour_words` (adjective lemma count >= ``min_count``),
    the ones a colour is replaced by: red, blue, ..., not salmon or pastel."""
    def count(word: str) -> int:
        return max((lemma_count(lem) for s in word_senses(word, "a")[:1] for lem in s.lemmas()
                    if lem.name() == word), default=0)
    return frozenset(w for w in colour_words() if count(w) >= min_count)


def adjective_head(sense: Any) -> Any:
    """The head of an adjective cluster ("tiny" -> small.a.01): antonyms live there."""
    if sense.pos() == "s":
        heads = ordered(sense.similar_tos())
        if heads:
            return heads[0]
    return sense


@functools.lru_cache(maxsize=None)
def antonyms(lemma: str, min_count: int = 1) -> tuple[str, ...]:
    """Antonyms of an adjective's first sense, through its cluster head for satellites.
    Colours have none here (their cluster head's antonym is "achromatic")."""
    sense = first_sense(lemma, "a")
    if sense is None or lemma in colour_words():
        return ()
    out: list[str] = []
    for s in (sense, adjective_head(sense)):
        for lem in s.lemmas():
            for ant in ordered(lem.antonyms()):
                name = ant.name()
                if single_word(name) and name != lemma and name not in out and lemma_count(ant) >= min_count:
                    out.append(name)
    return tuple(out)


@functools.lru_cache(maxsize=None)
def sibling_attributes(lemma: str, min_count: int = 1) -> tuple[str, ...]:
    """Another value of the same attribute: another colour for a colour, or the other adjectives
    WordNet lists for the attribute noun of the adjective's cluster (size: large, small)."""
    if lemma in colour_words():
        return tuple(sorted(colours() - wn_synonyms(lemma, "a") - {lemma}))
    sense = first_sense(lemma, "a")
    if sense is None:
        return ()
    avoid = wn_synonyms(lemma, "a") | {lemma}
    out: list[str] = []
    for attr in ordered(adjective_head(sense).attributes()):
        for value in ordered(attr.attributes()):
            for lem in value.lemmas():
                name = lem.name()
                if single_word(name) and name not in avoid and name not in out and lemma_count(lem) >= min_count:
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
                for ant in ordered(lem.antonyms()):
                    if ant.name() in SPATIAL and ant.name() not in out:
                        out.append(ant.name())
    if not out and word in PREP_SWAPS:
        out.append(PREP_SWAPS[word])
    return tuple(out)


@functools.lru_cache(maxsize=None)
def common_word(word: str, pos: str, min_count: int, blocklist: frozenset[str]) -> bool:
    """A single-word lemma whose first sense is frequent enough and inoffensive."""
    if not single_word(word) or word in blocklist:
        return False
    sense = first_sense(word, pos)
    if sense is None:
        return False
    lem = next((x for x in sense.lemmas() if x.name().lower() == word), None)
    return lem is not None and lemma_count(lem) >= min_count and not offensive(sense, word, blocklist)


# ---------------------------------------------------------------------------------------------
# Plausibility: how common a word is, which part of speech it mostly is, fixed phrases.

COMMON_WORDS_FILE = "common_words.tsv"


@functools.lru_cache(maxsize=1)
def common_words() -> dict[str, float]:
    """Word -> Zipf frequency for the shipped list of common English words (17,539 words:
    wordfreq 3.1.1's English top 60,000 with Zipf >= 3.3, known to WordNet; see
    ``scripts/make_common_words.py``). Replacement words must come from it."""
    from importlib import resources

    text = resources.files("tacleaner.text").joinpath("data", COMMON_WORDS_FILE).read_text(encoding="utf-8")
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            word, zipf = line.split("\t")
            out[word] = float(zipf)
    return out


def is_common(word: str, min_zipf: float = 0.0) -> bool:
    """``word`` is in the common-word list (at Zipf >= ``min_zipf``)."""
    return common_words().get(word.lower(), -1.0) >= max(min_zipf, 0.0)


@functools.lru_cache(maxsize=None)
def pos_counts(word: str) -> dict[str, int]:
    """SemCor occurrences of ``word`` (a base form) per WordNet part of speech (satellite
    adjectives counted as "a"), plus one per sense so that unattested words still count."""
    out = {"n": 0, "v": 0, "a": 0, "r": 0}
    for pos in out:
        for s in word_senses(word, pos):
            out[pos] += 1 + sum(lemma_count(lem) for lem in s.lemmas() if lem.name().lower() == word)
    return out


def dominant_pos(word: str) -> str | None:
    """The part of speech ``word`` is mostly used as: "avocado" is a noun, so it never replaces
    a verb, and "liberal" is mostly an adjective, so it never replaces a person noun."""
    counts = pos_counts(word)
    best = max(counts, key=lambda p: counts[p])
    return best if counts[best] else None


NEAR_EQUIVALENTS_FILE = "near_equivalents.tsv"


@functools.lru_cache(maxsize=1)
def near_equivalent_table() -> dict[tuple[str, str], frozenset[str]]:
    """(part of speech, base form) -> its near-equivalents from the shipped table (both ways
    round: a listed word gets the first word too); the file's header says what is listed and
    why (boy - man, rest - sit, little - young)."""
    from collections import defaultdict
    from importlib import resources

    text = resources.files("tacleaner.text").joinpath("data", NEAR_EQUIVALENTS_FILE).read_text(encoding="utf-8")
    table: dict[tuple[str, str], set[str]] = defaultdict(set)
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        pos, word, others = line.split("\t")
        for other in others.split():
            table[(pos, word)].add(other)
            table[(pos, other)].add(word)
    return {key: frozenset(words) for key, words in table.items()}


# A word's own senses: its first ones in WordNet (ordered by how often SemCor uses them). Rarer
# senses make words that name different things look related (car <- bus through "bus" as an
# old car; man <- horse through the chessman and the knight; hold <- throw through "throw a
# party"), and refusing on them lost good negatives.
OWN_SENSES = 2


def own_senses(word: str, pos: str, n: int = OWN_SENSES) -> frozenset[Any]:
    """The first ``n`` WordNet senses of ``word`` and of each of its base forms as ``pos``
    (adjective satellites included)."""
    wn = wordnet()
    return frozenset(s for base in dict.fromkeys([word, *wn._morphy(word, pos)]) for s in word_senses(base, pos)[:n])


@functools.lru_cache(maxsize=None)
def near_equivalent(source: str, replacement: str, pos: str) -> bool:
    """Whether a picture described with ``source`` may as well be described with
    ``replacement``, so that swapping them makes no counterfactual. Between the words' own
    senses (:func:`own_senses`): a synonym (a shared synset); a word on the other's own
    hypernym / hyponym chain, at any depth (dog -> puppy, stare -> look); for adjectives and
    verbs a similar-to or also-see either way round (muddy -> wet). Co-hyponyms (dog -> cat,
    sit -> stand) are not refused: they contradict the picture. And whatever WordNet says, a
    pair of the shipped hand-written table (:func:`near_equivalent_table`: boy -> man,
    rest -> sit, pond -> lagoon, boat -> ship), which lists what pictures are described with
    interchangeably."""
    source, replacement = source.lower(), replacement.lower()
    if source == replacement or replacement in near_equivalent_table().get((pos, source), ()):
        return True
    mine, theirs = own_senses(source, pos), own_senses(replacement, pos)
    if mine & theirs:
        return True
    if any(theirs & ancestors(s) for s in mine) or any(mine & ancestors(t) for t in theirs):
        return True
    if pos in ("a", "v"):
        def near(s: Any) -> set[Any]:
            return set(s.similar_tos()) | set(s.also_sees())
        return any(theirs & near(s) for s in mine) or any(mine & near(t) for t in theirs)
    return False


# Nouns for people that captions use for what a picture shows; a person noun among them is
# replaced by another of them (girl -> boy), never by a kinship or status word WordNet files
# under the same hypernym (girl -> wife, stepchild, orphan; woman -> liberal).
PEOPLE = ("man", "woman", "boy", "girl", "child", "baby", "kid", "lady", "guy", "teenager", "player",
          "worker", "student", "soldier", "dancer", "singer", "musician", "chef", "doctor", "nurse",
          "farmer", "rider", "runner", "swimmer", "skier", "surfer", "climber", "tourist", "couple",
          "family", "crowd", "bride", "groom", "businessman", "actor", "athlete", "artist", "fan")
# Placeholders for named people and things (CC3M replaced names by such words): they say who
# is there no more than a pronoun does, so they are never replaced.
PLACEHOLDERS = frozenset({"person", "people", "someone", "somebody", "everyone", "anyone", "persons",
                          "organization", "organisation"})


@functools.lru_cache(maxsize=None)
def fixed_phrase(first: str, second: str) -> bool:
    """Two neighbouring words that WordNet knows as one expression ("close up", "ice cream",
    "stuffed animal"?): neither is replaced alone."""
    return bool(wordnet().synsets(f"{first}_{second}")) or bool(wordnet().synsets(f"{first}{second}"))


@functools.lru_cache(maxsize=None)
def clear_first_sense(word: str, pos: str, share: float = 0.5, minimum: int = 5) -> bool:
    """Whether WordNet's first sense of ``word`` is what the word usually means: at least
    ``share`` of its sense-tagged occurrences, and ``minimum`` of them. Without it, siblings of
    the first sense are a guess ("clap" is first "put forcibly", whose siblings include
    "install"; the applause sense is third)."""
    counts = [sum(lemma_count(lem) for lem in s.lemmas() if lem.name().lower() == word)
              for s in word_senses(word, pos)]
    total = sum(counts)
    return bool(counts) and counts[0] >= minimum and counts[0] >= share * total


def unattested_as(word: str, pos: str) -> bool:
    """``word`` (a base form) is all but never used as ``pos``: a parser tag to distrust ("a
    child clings" read as a noun: "cling" is a verb 19 times in SemCor, a noun once)."""
    counts = pos_counts(word)
    return counts[pos] <= 1 and max(counts.values()) >= 10


@functools.lru_cache(maxsize=None)
def random_pool(pos: str, min_zipf: float, blocklist: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """Base forms of the common-word list (Zipf >= ``min_zipf``) that are mostly ``pos`` (and,
    for nouns, name something one can see, not a named instance): the words the paper-style
    random negatives draw from ("a blue table" -> "a bad table", "... were bananas")."""
    wn = wordnet()
    out = []
    for word, zipf in common_words().items():
        if zipf < min_zipf or word in blocklist or len(word) < 3:
            continue
        senses = word_senses(word, pos)
        if not senses or wn.morphy(word, pos) != word or dominant_pos(word) != pos \
                or offensive(senses[0], word, blocklist):
            continue
        if pos == "n" and (senses[0].instance_hypernyms() or senses[0].lexname() in ABSTRACT_LEXNAMES
                           or senses[0].lexname() == "noun.Tops"):
            continue  # names ("kenya") and things one cannot see ("absence")
        out.append(word)
    return tuple(sorted(out))
