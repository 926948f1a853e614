"""Throughput and quality of subtext generation (TA-Cleaner's positives and negatives).

For the Flickr8k and CC3M caption samples and for synthetic captions, times ``generate`` on a
fresh generator (cold: nothing cached in the generator; the spaCy pipeline and WordNet are
loaded once beforehand, and that load time is reported separately), takes the median
captions/s of ``--repeats`` runs, and prints the quality and plausibility reports as JSON, for
both negative modes. Then scores the hand-labelled cases (``benchmarks/data/subtext_cases.yaml``:
the depicted object every positive must keep, known-bad replacements, words never replaced).

    python benchmarks/bench_subtexts.py [--synthetic 2000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from tacleaner.data.synth import make_pair
from tacleaner.text.quality import labelled_report, plausibility_report
from tacleaner.text.resources import spacy_pipeline, wordnet
from tacleaner.text.subtexts import SubtextConfig, SubtextGenerator, quality_report

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SAMPLES = {"flickr8k-sample": SHARED / "flickr8k_captions_sample.txt", "cc3m-sample": SHARED / "cc3m_val_captions_sample.txt"}
CASES = Path(__file__).resolve().parent / "data" / "subtext_cases.yaml"


def bench(name: str, captions: list[str], repeats: int, mode: str) -> dict:
    rates, out = [], []
    for _ in range(repeats):
        gen = SubtextGenerator(SubtextConfig(negative_mode=mode), vocabulary=captions)  # vocabulary parse included
        t = time.perf_counter()
        out = gen.generate(captions)
        rates.append(len(captions) / (time.perf_counter() - t))
    return {"set": name, "mode": mode, "captions": len(captions),
            "captions_per_s_median": round(statistics.median(rates), 1),
            "captions_per_s_runs": [round(r, 1) for r in rates], "quality": quality_report(out),
            "plausibility": plausibility_report(out)}


def labelled(mode: str) -> dict:
    import yaml

    cases = yaml.safe_load(CASES.read_text(encoding="utf-8"))
    captions = [c["caption"] for c in cases]
    out = SubtextGenerator(SubtextConfig(negative_mode=mode), vocabulary=captions).generate(captions)
    return {"set": "labelled-cases", "mode": mode, **labelled_report(cases, out)}


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
    for name, path in SAMPLES.items():
        if path.is_file():
            sets.append((name, [x.strip() for x in path.read_text().splitlines() if x.strip()]))
        else:
            print(json.dumps({"skipped": str(path)}))
    sets.append(("synthetic", [make_pair(0, "pretrain", i, 8)[1] for i in range(args.synthetic)]))
    for mode in ("wordnet", "random"):
        for name, captions in sets:
            print(json.dumps(bench(name, captions, args.repeats, mode)))
        print(json.dumps(labelled(mode)))


if __name__ == "__main__":
    main()
