"""Training throughput of the demo model, and what the data pipeline costs.

Measures, side by side in one process on the same batches:
  full   - a complete training step as `tacleaner train` runs it: images from the dataset
           (decoded once and kept, as train.py's in-process loading does: the epochs after the
           first), preprocessing, tokenisation (DataLoader + objective.collate), forward,
           backward, AdamW step;
  first  - the same on a fresh dataset, every image decoded from its PNG (a first epoch);
  fwdbwd - forward + backward alone on one pre-collated batch.
Reports the median pairs/s over repeats and the ratios full / fwdbwd and first / fwdbwd (1.0 =
free data pipeline).

    python benchmarks/bench_train.py [--model tacleaner-tiny-rn] [--batch-size 128] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from tacleaner.data.pairs import IMAGE_CACHE_BYTES, PairDataset, read_pairs
from tacleaner.data.synth import SynthConfig, generate
from tacleaner.defenses import create_defense
from tacleaner.models import create_model
from tacleaner.train import param_groups


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tacleaner-tiny-rn")
    ap.add_argument("--objective", default="finetune")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10, help="steps per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as d:
        n = args.batch_size * args.steps
        generate(Path(d) / "w", SynthConfig(pretrain=n, implant=0, clean=0, zeroshot_per_class=0), progress=False)
        table = read_pairs(Path(d) / "w" / "pretrain.csv")
        bundle = create_model(args.model)
        model = bundle.model.train()
        objective = create_defense(args.objective)
        objective.setup(bundle, table, seed=0)
        objective.on_epoch_start(0)
        opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-5, fused=True)  # as train.py

        def make_loader() -> DataLoader:  # as train.py: the cache only when loading in this process
            cache = IMAGE_CACHE_BYTES if args.workers == 0 else 0
            return DataLoader(PairDataset(table, cache_bytes=cache, cache_max_pixels=bundle.image_size ** 2),
                              batch_size=args.batch_size, shuffle=True,
                              drop_last=True, collate_fn=objective.collate, num_workers=args.workers)

        loader = make_loader()
        fixed = next(iter(loader))

        def full(fresh: bool = False) -> float:
            t = time.perf_counter()
            for batch in (make_loader() if fresh else loader):
                loss = sum(v for k, v in objective.losses(model, batch).items() if k.endswith("_loss"))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            return args.steps * args.batch_size / (time.perf_counter() - t)

        def fwdbwd() -> float:
            t = time.perf_counter()
            for _ in range(args.steps):
                loss = sum(v for k, v in objective.losses(model, fixed).items() if k.endswith("_loss"))
                model.zero_grad(set_to_none=True)
                loss.backward()
            return args.steps * args.batch_size / (time.perf_counter() - t)

        full(), fwdbwd()  # warm-up (and the cache filled)
        rates = {"full": [], "first": [], "fwdbwd": []}
        for _ in range(args.repeats):  # interleaved, so drift hits all alike
            rates["full"].append(full())
            rates["first"].append(full(fresh=True))
            rates["fwdbwd"].append(fwdbwd())
    med = {k: statistics.median(v) for k, v in rates.items()}
    result = {"model": args.model, "objective": args.objective, "batch_size": args.batch_size,
              "threads": torch.get_num_threads(), "full_pairs_per_s": round(med["full"], 1),
              "first_epoch_pairs_per_s": round(med["first"], 1), "fwdbwd_pairs_per_s": round(med["fwdbwd"], 1),
              "step_time_ratio_full_over_fwdbwd": round(med["fwdbwd"] / med["full"], 3),
              "step_time_ratio_first_epoch_over_fwdbwd": round(med["fwdbwd"] / med["first"], 3)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
