"""Throughput and quality of subtext generation (TA-Cleaner's positives and negatives).

For the Flickr8k caption sample and for synthetic captions, times ``generate`` on a fresh
generator (cold: nothing cached in the generator; the spaCy pipeline and WordNet are loaded
once beforehand, and that load time is reported separately), takes the median captions/s of
``--repeats`` runs, and prints the quality report as JSON.

    python benchmarks/bench_subtexts.py [--synthetic 2000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from tacleaner.data.synth import make_pair
from tacleaner.text.resources import spacy_pipeline, wordnet
from tacleaner.text.subtexts import SubtextConfig, SubtextGenerator, quality_report

FLICKR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flickr8k_captions_sample.txt"


def bench(name: str, captions: list[str], repeats: int) -> dict:
    rates, out = [], []
    for _ in range(repeats):
        gen = SubtextGenerator(SubtextConfig(), vocabulary=captions)  # vocabulary parse included
        t = time.perf_counter()
        out = gen.generate(captions)
        rates.append(len(captions) / (time.perf_counter() - t))
    return {"set": name, "captions": len(captions), "captions_per_s_median": round(statistics.median(rates), 1),
            "captions_per_s_runs": [round(r, 1) for r in rates], "quality": quality_report(out)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--synthetic", type=int, default=2000, help="number of synthetic captions")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    t = time.perf_counter()
    spacy_pipeline()
    wordnet()
    print(json.dumps({"resource_load_s": round(time.perf_counter() - t, 2)}))
    sets = []
    if FLICKR.is_file():
        sets.append(("flickr8k-sample", [x.strip() for x in FLICKR.read_text().splitlines() if x.strip()]))
    else:
        print(json.dumps({"skipped": str(FLICKR)}))
    sets.append(("synthetic", [make_pair(0, "pretrain", i, 8)[1] for i in range(args.synthetic)]))
    for name, captions in sets:
        print(json.dumps(bench(name, captions, args.repeats)))


if __name__ == "__main__":
    main()
