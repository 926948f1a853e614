"""TA-Cleaner's subtexts off the critical path: parsed ahead in a background process or by
several spaCy processes, and exactly the same as parsed inline."""
import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from tacleaner.data.pairs import read_pairs
from tacleaner.defenses import create_defense
from tacleaner.models import load_model
from tacleaner.text.subtexts import PARALLEL_FROM, SubtextConfig, SubtextGenerator
from tacleaner.train import TrainConfig, train

# The repo's own labelled captions (web, product and Flickr-style), so the test needs no ../shared.
CASES = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "subtext_cases.yaml"


def test_prefetched_subtexts_train_the_same_weights(world, trained_checkpoint, tmp_path):
    runs = {}
    for name, prefetch_from in (("inline", 0), ("prefetched", 1)):
        out = tmp_path / name
        defense = create_defense("tacleaner", k=1.0, prefetch_from=prefetch_from, parse_processes=1)
        torch.manual_seed(0)
        train(load_model(trained_checkpoint), read_pairs(world / "clean.csv"), defense,
              TrainConfig(epochs=3, batch_size=16, threads=1, log_every=1), out, progress=False)
        assert defense.subtexts.prefetcher is None  # closed with the run
        runs[name] = out
    a, b = (load_file(runs[n] / "model.safetensors") for n in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    la, lb = ([json.loads(x)["ta_loss"] for x in (runs[n] / "metrics.jsonl").read_text().splitlines()
               if "ta_loss" in x and "summary" not in x] for n in runs)
    assert la == lb and len(la) > 5


def test_parallel_parse_gives_the_same_subtexts():
    captions = [case["caption"] for case in yaml.safe_load(CASES.read_text())]
    many = [f"{c} {i}" for i in range(PARALLEL_FROM // len(captions) + 1) for c in captions][:PARALLEL_FROM]
    one = SubtextGenerator(SubtextConfig(), vocabulary=captions).generate(many)
    two = SubtextGenerator(SubtextConfig(n_process=2), vocabulary=captions).generate(many)
    assert one == two
