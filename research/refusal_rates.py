"""How often TA-Cleaner's refusal of near-equivalent replacements refuses, and a sample of its
decisions to read by eye.

The candidates are the negatives the generator makes with the refusal off (every swap it would
try) on each caption file (default: the shipped CC3M and Flickr8k samples, tests/data/). Each
is decided by :func:`tacleaner.text.lexicon.near_equivalent` (the shipped rule: synonyms and the
word's own hypernym / hyponym chain in its own senses, similar-tos, the hand-written table), and,
for comparison, by :func:`tacleaner.text.quality.entailed` (the same relations in *any* WordNet
sense, rare ones included). Printed per file: candidate negatives, the share each refuses; then,
with ``--sample N``, N distinct refused and N distinct accepted swaps (seeded), one example each,
as TSV rows to be labelled by eye (docs/research/data/refusal-eye.tsv holds the labelled ones).

    python research/refusal_rates.py [FILE ...] [--sample 25] [--json]
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import replace
from pathlib import Path

from tacleaner.text.lexicon import SPATIAL, near_equivalent
from tacleaner.text.quality import KIND_POS, entailed
from tacleaner.text.resources import wordnet
from tacleaner.text.subtexts import SubtextConfig, SubtextGenerator

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
SAMPLES = [DATA / "cc3m_val_captions_sample.txt", DATA / "flickr8k_captions_sample.txt"]


def base_form(word: str, pos: str) -> str:
    return wordnet().morphy(word.lower(), pos) or word.lower()


def candidates(captions: list[str]) -> list[dict]:
    """Every negative made with the refusal off, as (source, replacement) base forms with its
    part of speech, decided by both rules. Spatial swaps (left -> right) are fixed opposites,
    never refused: left out."""
    cfg = replace(SubtextConfig(), refuse_entailed=False)
    out = []
    for sub in SubtextGenerator(cfg, vocabulary=captions).generate(captions):
        for neg in sub.negatives:
            if neg.kind == "relation" and neg.source.lower() in SPATIAL:
                continue
            pos = KIND_POS[neg.kind]
            source, repl = base_form(neg.source, pos), base_form(neg.replacement, pos)
            out.append({"source": source, "replacement": repl, "pos": pos, "base": neg.base, "text": neg.text,
                        "refused": near_equivalent(source, repl, pos), "any_sense": entailed(source, repl, pos)})
    return out


def rates(rows: list[dict]) -> dict:
    n = len(rows)
    return {"candidates": n, "refused": sum(r["refused"] for r in rows),
            "refused_share": round(sum(r["refused"] for r in rows) / n, 4) if n else 0.0,
            "any_sense_share": round(sum(r["any_sense"] for r in rows) / n, 4) if n else 0.0}


def sample(rows: list[dict], refused: bool, n: int, rng: random.Random) -> list[dict]:
    """``n`` distinct (source, replacement, pos) swaps with this decision, one example each."""
    seen: dict[tuple, dict] = {}
    for r in rows:
        if r["refused"] == refused:
            seen.setdefault((r["source"], r["replacement"], r["pos"]), r)
    keys = sorted(seen)
    return [seen[k] for k in rng.sample(keys, min(n, len(keys)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, default=SAMPLES)
    parser.add_argument("--sample", type=int, default=0, help="distinct refused and accepted swaps per file")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        print(f"not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    report, picked = [], []
    for path in args.files:
        captions = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        rows = candidates(captions)
        report.append({"file": path.name, "captions": len(captions), **rates(rows)})
        rng = random.Random(0)
        for decision in (True, False):
            picked += [{"file": path.name, **r} for r in sample(rows, decision, args.sample, rng)]
    if args.json:
        print(json.dumps({"rates": report, "sample": picked}, indent=1))
        return 0
    for r in report:
        print(f"{r['file']}: {r['captions']} captions, {r['candidates']} candidate negatives; refused "
              f"{r['refused']} ({r['refused_share']:.1%}); any-sense check {r['any_sense_share']:.1%}")
    for r in picked:
        print("\t".join([r["file"], r["pos"], r["source"], r["replacement"], "refused" if r["refused"] else "accepted",
                         r["base"], r["text"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
