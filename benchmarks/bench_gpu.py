"""The GPU path, checked and timed on one device (run by benchmarks/gpu_check.sh).

1. `tacleaner train` and `evaluate` through the library on the device (bf16 autocast on CUDA):
   the tiny model one epoch on a small embedded world, then zero-shot CA: the path runs.
2. RN50 at 224 px, batch 128, bf16 autocast, fused AdamW: pairs/s of a finetune and a cleanclip
   step, (a) the GPU step alone on a pre-collated batch and (b) the full step with the batch
   collated in the training process (decoding, preprocessing, cleanclip's AutoAugment; what
   DataLoader workers take off the critical path), each in NCHW and channels-last memory
   format. Random weights, the world's images upscaled.
3. Zero-shot evaluation of RN50 on 500x375 JPEG photos with DataLoader workers: images/s
   (clean + triggered counted).
Objectives that need spaCy (cleanclip's EDA, tacleaner) can be timed only where it is installed.

    python benchmarks/bench_gpu.py [--device cuda] [--steps 20] [--images 1024] [--small] [--skip-eval]
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_eval import photos  # noqa: E402

from tacleaner.attacks import create_attack  # noqa: E402
from tacleaner.data.pairs import PairDataset, read_pairs  # noqa: E402
from tacleaner.data.synth import SynthConfig, generate  # noqa: E402
from tacleaner.data.zeroshot import read_classes, read_zeroshot  # noqa: E402
from tacleaner.defenses import create_defense  # noqa: E402
from tacleaner.environment import autocast_for, resolve_precision  # noqa: E402
from tacleaner.evaluate import evaluate  # noqa: E402
from tacleaner.models import create_model  # noqa: E402
from tacleaner.train import TrainConfig, param_groups, train  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_rates(model_name: str, objective_name: str, table, device, batch: int, steps: int,
               channels_last: bool = False) -> dict:
    bundle = create_model(model_name)
    model = bundle.model.to(device).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    objective = create_defense(objective_name)
    objective.setup(bundle, table, seed=0)
    objective.on_epoch_start(0)
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-5, fused=True)
    loader = DataLoader(PairDataset(table), batch_size=batch, shuffle=True, drop_last=True,
                        collate_fn=objective.collate, generator=torch.Generator().manual_seed(0))
    autocast = autocast_for(resolve_precision("auto", device), device)  # as train.py: bf16 on CUDA

    def step(b) -> None:
        b = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in b.items()}
        b = {k: v.contiguous(memory_format=fmt) if torch.is_tensor(v) and v.ndim == 4 else v for k, v in b.items()}
        with autocast:
            loss = sum(v for k, v in objective.losses(model, b).items() if k.endswith("_loss"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    fixed = next(iter(loader))
    for _ in range(3):
        step(fixed)
    sync(device)
    gpu = []
    for _ in range(steps):
        t = time.perf_counter()
        step(fixed)
        sync(device)
        gpu.append(batch / (time.perf_counter() - t))
    full, it = [], iter(loader)
    for _ in range(max(3, steps // 4)):
        t = time.perf_counter()
        step(next(it))
        sync(device)
        full.append(batch / (time.perf_counter() - t))
    return {"step_alone_pairs_per_s": round(statistics.median(gpu), 1),
            "full_step_in_process_pairs_per_s": round(statistics.median(full), 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--objectives", nargs="+", default=["finetune", "cleanclip"],
                    help="objectives to time (cleanclip needs spaCy and WordNet on the device)")
    ap.add_argument("--small", action="store_true", help="a CPU smoke version of the same script")
    ap.add_argument("--skip-eval", action="store_true", help="leave out the evaluation throughput (part 3)")
    ap.add_argument("--out")
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    device = torch.device(args.device)
    out: dict = {"device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
                 "torch": torch.__version__}
    rn50 = "tacleaner-tiny-rn" if args.small else "RN50"

    def save() -> None:
        print(json.dumps(out, indent=1), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(out, indent=1))

    with tempfile.TemporaryDirectory() as d:
        root = Path(d) / "w"
        generate(root, SynthConfig(pretrain=1024, implant=0, clean=1024, zeroshot_per_class=4), progress=False)
        table = read_pairs(root / "pretrain.csv")
        t = time.perf_counter()
        torch.manual_seed(0)
        bundle = train(create_model("tacleaner-tiny-rn"), table, create_defense("finetune"),
                       TrainConfig(epochs=1, batch_size=128, lr=2e-3, warmup_steps=2, device=args.device),
                       Path(d) / "run", progress=False)
        classes = read_classes(root / "classes.json")
        res = evaluate(bundle, read_zeroshot(root / "zeroshot.csv", classes), classes, device=device,
                       attack=create_attack("badnet", patch_frac=0.25, location="bottom-right"), target="yellow star")
        out["path_check"] = {"train_and_evaluate_seconds": round(time.perf_counter() - t, 1),
                             "clean_acc": round(res["clean_acc"], 4), "asr_at_1": round(res["asr_at_1"], 4)}
        save()
        clean = read_pairs(root / "clean.csv")
        for name in args.objectives:
            for cl in (False, True):  # NCHW, then channels-last (TrainConfig.channels_last)
                key = f"{rn50}_{name}_batch{args.batch_size}" + ("_channels_last" if cl else "")
                try:
                    out[key] = step_rates(rn50, name, clean, device, args.batch_size, args.steps, channels_last=cl)
                except Exception as e:  # noqa: BLE001  (report and go on: the other figures still count)
                    out[key] = {"error": f"{type(e).__name__}: {e}"[:300]}
                save()
        if args.skip_eval:
            return
        data, pclasses = photos(Path(d) / "photos", 64 if args.small else args.images)
        bundle = create_model(rn50)
        evaluate(bundle, data, pclasses, device=device, batch_size=256, num_workers=args.workers,
                 attack=create_attack("badnet"), target="thing 0")  # warm-up
        rates = []
        for _ in range(2):
            r = evaluate(bundle, data, pclasses, device=device, batch_size=256, num_workers=args.workers,
                         attack=create_attack("badnet"), target="thing 0")
            rates.append(r["images_per_s"])
        out[f"{rn50}_evaluation"] = {"images": len(data), "workers": args.workers,
                                     "images_per_s_clean_plus_triggered": rates}
        save()


if __name__ == "__main__":
    main()
