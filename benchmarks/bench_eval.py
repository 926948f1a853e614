"""Zero-shot evaluation throughput (images/s) on CPU, and what decoding each image once saves.

Measures, side by side in one process on the same files, interleaved:
  once  - `tacleaner.evaluate.evaluate` with a BadNet trigger: every file decoded once, its clean
          and triggered versions encoded (the path `tacleaner evaluate` and `tacleaner run` take);
  twice - the same images in two passes, a clean pass and a triggered pass, each decoding the
          files (the evaluation before this benchmark), classified with the same classifier.
Models: the demo's tiny model on the embedded world's 32 px PNG test split (960 images, 48
classes), and RN50 (random weights, 224 px) on 500x375 JPEG photos. Reports median images/s
(clean + triggered images counted) over repeats and the ratio once / twice.

    python benchmarks/bench_eval.py [--repeats 3] [--threads 2] [--rn50-images 48]
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from tacleaner.attacks import create_attack
from tacleaner.data.pairs import load_image
from tacleaner.data.synth import SynthConfig, generate
from tacleaner.data.zeroshot import Classes, LabelledImages, read_classes, read_zeroshot
from tacleaner.evaluate import build_classifier, evaluate
from tacleaner.models import create_model


class _OnePass(Dataset):
    def __init__(self, paths, preprocess, attack, frame):
        self.paths, self.preprocess, self.attack, self.frame = paths, preprocess, attack, frame

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        image = load_image(self.paths[i])
        return self.preprocess(image if self.attack is None else self.attack.apply(image, i, self.frame))


@torch.no_grad()
def two_passes(bundle, data: LabelledImages, classes: Classes, attack, batch_size: int) -> None:
    """The old evaluation: a clean pass, then a triggered pass, each decoding every file."""
    model = bundle.model.eval()
    w = build_classifier(bundle, classes, torch.device("cpu"))
    for a in (None, attack):
        for x in DataLoader(_OnePass(data.images, bundle.preprocess, a, bundle.image_size), batch_size=batch_size):
            model.encode_image(x, normalize=True) @ w


def photos(root: Path, n: int) -> tuple[LabelledImages, Classes]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    names = [f"thing {c}" for c in range(10)]
    images, labels = [], []
    for i in range(n):
        yy, xx = np.mgrid[0:375, 0:500]
        base = np.stack([xx * 255 // 499, yy * 255 // 374, np.full_like(xx, 25 * (i % 10))], -1)
        path = root / f"{i}.jpg"
        Image.fromarray(np.clip(base + rng.integers(0, 40, base.shape), 0, 255).astype(np.uint8)).save(path, quality=90)
        images.append(path)
        labels.append(i % 10)
    return LabelledImages(images, labels), Classes(names, ["a photo of a {}.", "a picture of a {}."])


def measure(bundle, data, classes, attack, target, batch_size, repeats) -> dict:
    once, twice = [], []
    n = 2 * len(data)  # clean + triggered images
    for _ in range(repeats):
        t = time.perf_counter()
        evaluate(bundle, data, classes, attack=attack, target=target, batch_size=batch_size, num_workers=0)
        once.append(n / (time.perf_counter() - t))
        t = time.perf_counter()
        two_passes(bundle, data, classes, attack, batch_size)
        twice.append(n / (time.perf_counter() - t))
    a, b = statistics.median(once), statistics.median(twice)
    return {"images": len(data), "once_images_per_s": round(a, 1), "twice_images_per_s": round(b, 1),
            "once_over_twice": round(a / b, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rn50-images", type=int, default=48)
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    attack = create_attack("badnet", patch_frac=0.25, location="random")
    out = {"threads": args.threads, "repeats": args.repeats}
    with tempfile.TemporaryDirectory() as d:
        generate(Path(d) / "w", SynthConfig(pretrain=0, implant=0, clean=0, zeroshot_per_class=20), progress=False)
        classes = read_classes(Path(d) / "w" / "classes.json")
        data = read_zeroshot(Path(d) / "w" / "zeroshot.csv", classes)
        out["tacleaner-tiny-rn"] = measure(create_model("tacleaner-tiny-rn"), data, classes, attack, "yellow star",
                                           256, args.repeats)
        print(json.dumps({"tacleaner-tiny-rn": out["tacleaner-tiny-rn"]}), flush=True)
        data, classes = photos(Path(d) / "photos", args.rn50_images)
        out["RN50"] = measure(create_model("RN50"), data, classes, attack, "thing 0", 16, args.repeats)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
