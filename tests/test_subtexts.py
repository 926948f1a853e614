"""Positive and negative subtexts, with the real spaCy pipeline and real WordNet (no mocks)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tacleaner.data.synth import make_pair
from tacleaner.text.inflection import plural, verb_form
from tacleaner.text.lexicon import antonyms, cohyponyms, colours, spatial_swaps
from tacleaner.text.quality import caption_words, is_subsequence, one_word_swap
from tacleaner.text.subtexts import KINDS, ORIGINS, SubtextConfig, SubtextGenerator, quality_report

GRAPES = "there are green grapes, yellow lemons, oranges and kiwis on a blue table"


@pytest.fixture(scope="module")
def flickr(shared_captions) -> list[str]:
    return shared_captions("flickr8k_captions_sample.txt")


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

    from tacleaner_cli import main

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


# -- plausibility: what the image shows, common same-kind replacements, the paper's random mode ----

CASES_FILE = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "subtext_cases.yaml"


@pytest.fixture(scope="module")
def cases() -> list[dict]:
    import yaml

    return yaml.safe_load(CASES_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def cc3m(shared_captions) -> list[str]:
    return shared_captions("cc3m_val_captions_sample.txt")


@pytest.mark.parametrize("mode", ["wordnet", "random"])
def test_labelled_cases(cases, mode):
    """Hand-labelled captions (the tracker's bad cases among them): positives keep the depicted
    object, no negative uses a known-bad replacement or replaces a frame / placeholder word."""
    from tacleaner.text.quality import labelled_report

    captions = [c["caption"] for c in cases]
    out = SubtextGenerator(SubtextConfig(negative_mode=mode), vocabulary=captions).generate(captions)
    report = labelled_report(cases, out)
    assert report["positives_keep_object"] == 1.0, report["failures"]
    assert report["negatives_with_bad_replacement"] == 0, report["failures"]
    assert report["negatives_replacing_kept_words"] == 0, report["failures"]
    assert report["depicted_object_found"] >= 0.9, report
    assert report["negatives"] >= len(cases) * 2


@pytest.mark.parametrize("mode", ["wordnet", "random"])
def test_real_captions_keep_the_object_and_use_common_words(flickr, cc3m, mode):
    """On the shared Flickr8k and CC3M samples: every positive keeps the caption's depicted head
    object, and every replacement is a word of the shipped common-word list."""
    from tacleaner.text.lexicon import SPATIAL, is_common
    from tacleaner.text.quality import plausibility_report

    for captions in (flickr, cc3m):
        out = SubtextGenerator(SubtextConfig(negative_mode=mode), vocabulary=captions).generate(captions)
        report = plausibility_report(out)
        assert report["positives_keep_depicted"] == 1.0 and report["replacements_common"] == 1.0, report
        assert report["depicted_found"] >= 0.95, report
        rare = [n.replacement for s in out for n in s.negatives
                if not (is_common(n.replacement) or n.replacement.lower() in SPATIAL)]
        assert not rare, rare[:10]
        quality = quality_report(out)
        assert quality["coverage"] >= 0.95 and quality["negative_one_word"] == 1.0, quality


def test_reported_bad_cases_are_fixed(cases):
    gen = SubtextGenerator(vocabulary=[c["caption"] for c in cases])
    by_caption = dict(zip([c["caption"] for c in cases], gen.generate([c["caption"] for c in cases])))
    boot = by_caption["a close up of a boot"]
    assert boot.positives == ("a boot",) and boot.depicted == "boot"
    assert all("close" not in n.text for n in boot.negatives)
    assert by_caption["someone is selling a sneaker"].positives == ("a sneaker",)
    assert "a coat" in by_caption["a purple picture showing a coat"].positives
    kitten = by_caption["ways to care for a stray kitten"]
    assert kitten.depicted == "kitten" and all("kitten" in p for p in kitten.positives)
    assert by_caption["dragonfly perched under a hanging basket of flowers"].depicted == "dragonfly"
    contain = by_caption["image may contain : person , on stage , playing a musical instrument"]
    assert all(n.source not in ("contain", "image", "may") for n in contain.negatives)
    girls = by_caption["little girls playing on the beach"]
    assert not {"wives", "stepchildren", "orphans"} & {n.replacement for n in girls.negatives}
    assert {n.replacement for n in girls.negatives if n.source == "girls"} <= {
        "men", "women", "boys", "children", "babies", "kids", "ladies", "guys", "teenagers"}


def test_random_mode_is_the_papers_one_word_swap(cases):
    """negative_mode="random": one noun, verb or adjective of the positive replaced by a random
    common word of the same part of speech, inflected alike; seeded per caption."""
    from tacleaner.text.lexicon import dominant_pos, random_pool

    captions = [c["caption"] for c in cases]
    cfg = SubtextConfig(negative_mode="random", negatives_per_positive=1, seed=3)
    out = SubtextGenerator(cfg).generate(captions)
    again = SubtextGenerator(SubtextConfig(negative_mode="random", negatives_per_positive=1, seed=3)).generate(captions)
    other = SubtextGenerator(SubtextConfig(negative_mode="random", negatives_per_positive=1, seed=4)).generate(captions)
    assert out == again and out != other
    pools = {p: set(random_pool(p, cfg.random_min_zipf)) for p in "nva"}
    kinds = set()
    for s in out:
        assert len(s.negatives) <= max(1, len(s.positives))
        for n in s.negatives:
            assert n.origin == "random" and one_word_swap(n), n
            pos = {"object": "n", "attribute": "a", "relation": "v"}[n.kind]
            from tacleaner.text.resources import wordnet

            bases = set(wordnet()._morphy(n.replacement.lower(), pos)) | {n.replacement.lower()}
            assert any(b in pools[pos] and dominant_pos(b) == pos for b in bases), n
            kinds.add(n.kind)
    assert kinds == set(KINDS)


def test_tacleaner_takes_the_random_mode(world, tiny):
    from tacleaner.data.pairs import PairDataset, read_pairs
    from tacleaner.defenses import create_defense
    from tacleaner.errors import TacleanerError

    objective = create_defense("tacleaner", negative_mode="random", m=1, k=0.5)
    table = read_pairs(world / "clean.csv")
    objective.setup(tiny, table, seed=0)
    objective.on_epoch_start(0)
    assert objective.subtexts.selected and objective.subtexts.neg_tokens is not None
    ds = PairDataset(table)
    batch = objective.collate([ds[i] for i in range(16)])
    losses = objective.losses(tiny.model, batch)
    assert float(losses["ta_loss"].detach()) > 0
    with pytest.raises(TacleanerError, match="negative_mode"):
        create_defense("tacleaner", negative_mode="thesaurus")


def test_negatives_from_the_caption_swap_one_word_of_all_of_it(plain):
    """negatives_from="caption": each negative is the whole caption, punctuation included,
    with exactly one word swapped; by default they are made from the shorter positives."""
    captions = ["A black dog runs across the green grass .", "two red circles above a blue square",
                "A little girl in a pink dress is climbing the stairs ."]
    whole = SubtextGenerator(SubtextConfig(negatives_from="caption")).generate(captions)
    for s in whole:
        assert s.negatives, s.caption
        for n in s.negatives:
            assert n.base == s.caption and one_word_swap(n), n
            assert len(caption_words(n.text)) == len(caption_words(s.caption)), n
    default = plain.generate(captions)
    assert all(n.base in s.positives for s in default for n in s.negatives)
    with pytest.raises(ValueError, match="negatives_from"):
        SubtextGenerator(SubtextConfig(negatives_from="sentence"))


def test_negatives_only_ablation_uses_whole_caption_negatives(world, tiny):
    """TA-Cleaner with use_positives=False aligns the caption against the caption with one word
    swapped (never a sub-caption's negative): its tokens are exactly those texts."""
    from tacleaner.data.pairs import read_pairs
    from tacleaner.defenses import create_defense

    table = read_pairs(world / "clean.csv")
    objective = create_defense("tacleaner", use_positives=False, k=0.5, m=2, prefetch_from=0)
    objective.setup(tiny, table, seed=0)
    objective.on_epoch_start(0)
    assert objective.subtexts.selected
    tokens = objective.tokenizer
    for i, row in objective.subtexts.selected.items():
        caption = table.captions[i]
        (sub,) = objective.subtexts.generator.generate([caption])
        assert sub.negatives and all(n.base == caption.strip() and one_word_swap(n) for n in sub.negatives), sub
        assert torch.equal(objective.subtexts.pos_tokens[row], tokens([caption])[0])
        allowed = {tuple(t.tolist()) for t in tokens([n.text for n in sub.negatives] + [caption])}  # + padding
        for j in range(objective.m):
            assert tuple(objective.subtexts.neg_tokens[row * objective.m + j].tolist()) in allowed
    assert objective.subtexts.generator.cfg.negatives_from == "caption"
    full = create_defense("tacleaner", k=0.5, m=2, prefetch_from=0)
    full.setup(tiny, table, seed=0)
    assert full.subtexts.generator.cfg.negatives_from == "positives"
    assert full.subtexts.generator.cfg.refuse_entailed and full.subtexts.mask_false_negatives
    before = create_defense("tacleaner", k=0.5, m=2, prefetch_from=0, refuse_entailed=False, mask_false_negatives=False)
    before.setup(tiny, table, seed=0)  # TA-Cleaner before both fixes, for the ablation grid
    assert not before.subtexts.generator.cfg.refuse_entailed and not before.subtexts.mask_false_negatives


# The embedded world's CC3M-like alt-text forms (tacleaner.data.synth._web_caption): every
# positive keeps the shape the image shows.
WEB_FORMS = [
    ("close - up of small pink square on gray background", "square"),
    ("image may contain : pink star , gray background", "star"),
    ("image may contain : small cyan square , green triangle , large purple cross , light background",
     "square triangle cross"),
    ("vector illustration of a blue triangle", "triangle"),
    ("how to draw a red square", "square"),
    ("pink star isolated on a light background", "star"),
    ("i found this yellow diamond on a gray background", "diamond"),
    ("blue triangle on dark background , stock image", "triangle"),
    ("illustration of a small pink star and an orange square", "star square"),
    ("small yellow circle lies on gray background", "circle"),
]


@pytest.mark.parametrize("caption,shapes", WEB_FORMS)
def test_web_alt_text_positives_keep_a_shape(plain, caption, shapes):
    (s,) = plain.generate([caption])
    assert s.positives, caption
    for p in s.positives:
        assert set(p.split()) & set(shapes.split()), (caption, p)


def test_world_captions_rarely_lose_their_shape(plain):
    """Over 1,000 captions of the web-style world, positives without any shape word (the small
    parser's mis-tags: "cyan cross" read as a verb, "square lies" with "lies" as the noun) stay
    rare; the README gives the rate."""
    from tacleaner.data.synth import SHAPES

    caps = [make_pair(5, "clean", i, 8)[1] for i in range(1000)]
    out = plain.generate(caps)
    positives = [p for s in out for p in s.positives]
    lost = [p for p in positives if not set(p.split()) & set(SHAPES)]
    assert sum(not s.positives for s in out) <= 5
    assert len(lost) <= 0.02 * len(positives), lost[:10]
