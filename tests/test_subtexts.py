"""Positive and negative subtexts, with the real spaCy pipeline and real WordNet (no mocks)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from tacleaner.data.synth import make_pair
from tacleaner.text.inflection import plural, verb_form
from tacleaner.text.lexicon import antonyms, cohyponyms, colours, spatial_swaps
from tacleaner.text.quality import caption_words, is_subsequence, one_word_swap
from tacleaner.text.subtexts import KINDS, ORIGINS, SubtextConfig, SubtextGenerator, quality_report

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FLICKR = DATA / "flickr8k_captions_sample.txt"
GRAPES = "there are green grapes, yellow lemons, oranges and kiwis on a blue table"


@pytest.fixture(scope="module")
def flickr() -> list[str]:
    if not FLICKR.is_file():
        pytest.skip(f"{FLICKR} not found: the shared data folder is not checked out next to the repo")
    return [line.strip() for line in FLICKR.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def synth() -> list[str]:
    return [make_pair(0, "pretrain", i, 8)[1] for i in range(200)]


@pytest.fixture(scope="module")
def flickr_out(flickr):
    return SubtextGenerator(vocabulary=flickr).generate(flickr)


@pytest.fixture(scope="module")
def synth_out(synth):
    return SubtextGenerator(vocabulary=synth).generate(synth)


@pytest.fixture(scope="module")
def plain():
    """A generator without vocabulary: WordNet replacements only."""
    return SubtextGenerator()


def _norm(text: str) -> list[str]:
    return [w for w in caption_words(text) if re.match(r"\w", w)]


@pytest.mark.parametrize("which", ["flickr_out", "synth_out"])
def test_positives_are_order_preserving_reductions(which, request):
    for s in request.getfixturevalue(which):
        assert len(set(s.positives)) == len(s.positives), s
        for p in s.positives:
            assert is_subsequence(caption_words(p), caption_words(s.caption)), (s.caption, p)
            assert _norm(p) != _norm(s.caption), (s.caption, p)
            assert len(_norm(p)) < len(_norm(s.caption))
            assert not re.search(r"[.,;:!?]$", p), p  # trailing punctuation is stripped


@pytest.mark.parametrize("which", ["flickr_out", "synth_out"])
def test_negatives_replace_one_word_of_the_same_pos(which, request):
    for s in request.getfixturevalue(which):
        bases = set(s.positives) | {re.sub(r"\s*[.!?]+$", "", s.caption.strip())}
        for neg in s.negatives:
            assert neg.kind in KINDS and neg.origin in ORIGINS, neg
            assert neg.base in bases, (s.caption, neg)
            assert one_word_swap(neg), neg
            assert neg.replacement.lower() != neg.source.lower()
            assert neg.text not in s.positives


def test_quality_and_coverage(flickr_out, synth_out):
    for out in (flickr_out, synth_out):
        q = quality_report(out)
        assert q["coverage"] >= 0.95, q
        assert q["positive_subsequence"] == 1.0, q
        assert q["negative_one_word"] == 1.0, q
        assert set(q["by_kind"]) == set(KINDS), q  # every kind occurs
    assert quality_report(synth_out)["captions"] == 200


def test_grapes_example_keeps_the_first_item_and_its_relation(plain):
    (s,) = plain.generate([GRAPES])
    assert "there are green grapes on a blue table" in s.positives
    assert all("lemons" not in p and "kiwis" not in p for p in s.positives)


def test_noun_rooted_captions_keep_their_relation(plain):
    men, circle = plain.generate(["Men in camouflage pants racing toward each other .",
                                  "A large red circle next to a small blue square"])
    assert any("racing toward each other" in p and "pants" not in p for p in men.positives), men
    assert any("next to a" in p for p in circle.positives), circle


def test_articles_and_plurals_are_kept(plain):
    captions = ["Two men are running across the fields .", "The children play with toys .",
                "a small orange circle sits on a dark background", "An elephant walks in the mud ."]
    for s in plain.generate(captions):
        for text in (*s.positives, *(n.text for n in s.negatives)):
            assert not re.search(r"\ban [b-df-hj-np-tv-z]", text, re.I), text
            assert not re.search(r"\ba [aeio]", text, re.I), text
        for neg in s.negatives:
            if neg.source in ("men", "children", "toys", "fields"):
                assert neg.replacement not in ("mans", "childs") and neg.replacement.endswith(("s", "en")), neg
            if neg.source in ("running", "sits", "walks"):
                assert neg.replacement.endswith(neg.source[-3:] if neg.source.endswith("ing") else "s"), neg


def test_inflection_rules():
    assert [plural(w) for w in ("man", "child", "box", "baby", "wolf", "dog", "woman")] == \
        ["men", "children", "boxes", "babies", "wolves", "dogs", "women"]
    assert verb_form("run", "VBG") == "running" and verb_form("sit", "VBG") == "sitting"
    assert verb_form("lie", "VBG") == "lying" and verb_form("make", "VBG") == "making"
    assert verb_form("carry", "VBZ") == "carries" and verb_form("walk", "VBD") == "walked"
    assert verb_form("stop", "VBD") == "stopped"
    assert verb_form("run", "VBD") is None  # irregular: never "runned"


def test_colours_are_replaced_by_colours(plain):
    (s,) = plain.generate(["a red circle floats above a blue square on a gray background"])
    swaps = [n for n in s.negatives if n.source in ("red", "blue", "gray")]
    assert swaps
    for n in swaps:
        assert n.kind == "attribute" and n.origin in ("sibling-attribute", "vocabulary")
        assert n.replacement in colours() and n.replacement not in ("red", "blue", "gray")


def test_relations_and_sizes_use_antonyms(plain):
    assert spatial_swaps("above") == ("below",) and spatial_swaps("left") == ("right",)
    assert {"large", "big"} <= set(antonyms("small"))
    (s,) = plain.generate(["a small star floats above a circle"])
    swaps = {(n.source, n.replacement) for n in s.negatives if n.origin == "antonym"}
    assert swaps and swaps <= {("small", "large"), ("small", "big"), ("above", "below")}, s


def test_obscure_and_wrong_sense_replacements_are_filtered():
    assert "ravisher" not in cohyponyms("girl", "n")
    assert "aerobe" not in cohyponyms("person", "n")
    assert "series" not in cohyponyms("people", "n")
    assert "head" not in cohyponyms("dog", "n")  # a head of cattle is not what "dog" means
    assert "woman" in cohyponyms("man", "n")


def test_deterministic_for_a_seed_and_cached(flickr):
    captions = flickr[:60]
    a = SubtextGenerator(SubtextConfig(seed=1), vocabulary=flickr).generate(captions)
    b = SubtextGenerator(SubtextConfig(seed=1), vocabulary=flickr).generate(list(reversed(captions)))
    assert a == list(reversed(b))  # same seed: same subtexts, whatever the batch order
    gen = SubtextGenerator(SubtextConfig(seed=2), vocabulary=flickr)
    c = gen.generate(captions)
    assert c != a  # another seed draws other negatives somewhere
    assert all(x is y for x, y in zip(gen.generate(captions), c))  # second call: from the cache


def test_config_knobs(plain):
    cfg = SubtextConfig(max_positives=1, negatives_per_positive=1, negative_sources=("antonym",))
    (s,) = SubtextGenerator(cfg).generate(["a small dog runs on the grass"])
    assert len(s.positives) == 1 and len(s.negatives) <= 1
    assert all(n.origin == "antonym" for n in s.negatives)
    with pytest.raises(ValueError, match="unknown negative sources"):
        SubtextGenerator(SubtextConfig(negative_sources=("thesaurus",)))


def test_cli_prints_json_in_input_order(tmp_path, capsys):
    import json

    from tacleaner.cli import main

    captions = ["A black dog runs across the green grass .", "two red circles above a blue square",
                "A little girl in a pink dress is climbing the stairs ."]
    path = tmp_path / "caps.txt"
    path.write_text("\n".join(captions) + "\n\n")
    assert main(["subtexts", "--captions", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["caption"] for o in out] == captions
    for o in out:
        assert o["positives"] and o["negatives"]
        assert [d["text"] for d in o["negative_details"]] == o["negatives"]
        assert {d["kind"] for d in o["negative_details"]} <= {"object", "attribute", "relation"}
    assert main(["subtexts", "--captions", str(path)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(captions[0]) and "\n  + " in text and "\n  - " in text
    assert main(["subtexts", "--captions", str(tmp_path / "missing.txt")]) == 2


def test_same_subtexts_in_every_process(tmp_path):
    """Python randomises set order per process (the hash seed); WordNet relations that NLTK
    returns in set order must not change which negatives a caption gets."""
    import os
    import subprocess
    import sys

    captions = tmp_path / "c.txt"
    captions.write_text("home on the muddy shores\nSeveral young people .\na small red circle above a blue star\n")
    outs = []
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-m", "tacleaner", "subtexts", "--captions", str(captions), "--json"],
                              capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        outs.append(proc.stdout)
    assert outs[0] == outs[1] == outs[2]
