"""How many negative subtexts a picture of the caption may still fit, before and after refusing
near-equivalent replacements (``SubtextConfig.refuse_entailed``).

A negative must contradict the image (docs/design.md, "Subtexts: negatives must be false of the
image"). For each caption file (one caption per line; default: the shared CC3M and Flickr8k
samples) subtexts are generated twice, with the refusal off ("before") and on ("after"), and
for each it prints: captions, coverage (captions with at least one positive and one negative),
negatives, and the share that :func:`tacleaner.text.quality.entailed` flags (the replacement is
a synonym, hypernym or similar-to of the replaced word in any WordNet sense: an upper bound).

    python research/entailment_rate.py [FILE ...] [--mode wordnet|random] [--examples N] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from tacleaner.text.quality import entailment_report
from tacleaner.text.subtexts import SubtextConfig, SubtextGenerator

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # beside the repository
SAMPLES = [SHARED / "cc3m_val_captions_sample.txt", SHARED / "flickr8k_captions_sample.txt"]


def read_captions(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def measure(captions: list[str], cfg: SubtextConfig) -> dict:
    """The entailment report of ``captions``' subtexts under ``cfg`` (the captions are their own
    vocabulary, as `tacleaner subtexts` does)."""
    return entailment_report(SubtextGenerator(cfg, vocabulary=captions).generate(captions))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, default=SAMPLES)
    parser.add_argument("--mode", default="wordnet", choices=["wordnet", "random"], help="negative mode")
    parser.add_argument("--examples", type=int, default=0, help="print up to N flagged negatives per run")
    parser.add_argument("--json", action="store_true", help="print the reports as JSON")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        print(f"not found: {', '.join(missing)}", file=sys.stderr)
        return 2
    base = SubtextConfig(negative_mode=args.mode)
    rows = []
    for path in args.files:
        captions = read_captions(path)
        for label, refuse in (("before", False), ("after", True)):
            report = measure(captions, replace(base, refuse_entailed=refuse))
            rows.append({"file": path.name, "run": label, **report})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'file':<34} {'run':<7} {'captions':>8} {'coverage':>8} {'negatives':>9} {'flagged':>7} {'share':>7}")
    for r in rows:
        print(f"{r['file']:<34} {r['run']:<7} {r['captions']:>8} {r['coverage']:>8.4f} {r['negatives']:>9} "
              f"{r['flagged']:>7} {r['flagged_share']:>7.2%}")
        for line in r["flagged_examples"][:args.examples]:
            print(f"    {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
