"""Run under ``torchrun`` (or plain ``python``) by tests/test_distributed.py: trains the tiny ViT
a few steps with each objective named on the command line, through the one training loop, on
however many processes the launcher started. Augmentations that draw random numbers per batch
are switched off so that one process and several see the same inputs."""
import json
import os
import sys

import torch

from tacleaner.data.pairs import read_pairs
from tacleaner.defenses import create_defense
from tacleaner.models import create_model
from tacleaner.train import TrainConfig, train

NO_RANDOM_AUG = {"finetune": {}, "cleanclip": {"aug_images": False},
                 # every sample drawn: batches then hold equivalent positives, which masking must
                 # find across ranks (the gathered positive ids) as in one process
                 "tacleaner": {"aug_images": False, "k": 1.0, "m": 2, "prefetch_from": 0},
                 "par": {"noise_p": 0.0, "erase_p": 0.0},
                 "invert": {"places": "best", "probe_images": 16, "steps": 2, "patch_steps": 3, "patch_grid": 2,
                            "classes": os.environ.get("DDP_TEST_CLASSES")}}
# the combination masks by exact truth (the data's scenes.jsonl): the matrix over the global
# batch's images must come out the same on every rank as in one process
NO_RANDOM_AUG["tacleaner+par"] = {**NO_RANDOM_AUG["tacleaner"], **NO_RANDOM_AUG["par"], "mask": "truth"}


def main(data: str, out: str, batch_size: int, objectives: list[str]) -> None:
    for name in objectives:
        torch.manual_seed(0)
        bundle = create_model("tacleaner-tiny-vit")
        train(bundle, read_pairs(data), create_defense(name, **NO_RANDOM_AUG[name]),
              TrainConfig(epochs=2, batch_size=batch_size, lr=1e-3, warmup_steps=2, log_every=1, threads=1,
                          max_steps=4, device="cpu", eps=float(os.environ.get("DDP_TEST_EPS", "1e-6"))),
              f"{out}/{name}", progress=False)
    print(json.dumps({"done": objectives}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:])
