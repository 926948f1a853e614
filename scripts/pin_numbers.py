"""Pin the numbers before a refactor, check them after: SHA-256 of the weights a 2-epoch run of
every defense writes, on a small synthetic world with a BadNet-backdoored tiny model.

    python scripts/pin_numbers.py --out before.json            # on the old commit
    python scripts/pin_numbers.py --against before.json        # on the new one, same machine

Floating point differs between CPU models and thread counts, so a table is only comparable with
one made on the same machine with the same ``--threads``; the check exits 1 naming every run
whose weights changed. The world, the backdoor and each cleaning run are seeded.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import torch

from tacleaner.attacks import create_attack, poison_dataset
from tacleaner.data.pairs import read_pairs
from tacleaner.data.synth import SynthConfig, generate
from tacleaner.data.zeroshot import read_classes
from tacleaner.defenses import create_defense
from tacleaner.models import create_model, load_model
from tacleaner.models.checkpoint import weights_sha256
from tacleaner.train import TrainConfig, train

DEFENSES = ("finetune", "cleanclip", "tacleaner", "par", "invert", "tacleaner+invert")


def pin(root: Path, threads: int) -> dict[str, str]:
    world = root / "world"
    generate(world, SynthConfig(seed=3, pretrain=192, implant=160, clean=96, zeroshot_per_class=2), progress=False)
    attack = create_attack("badnet", patch_frac=0.25, location="bottom-right")
    templates = read_classes(world / "classes.json").templates
    poison_dataset(world / "implant.csv", attack, "yellow star", 16, root / "poison", seed=0, templates=templates)
    torch.manual_seed(0)
    implant = TrainConfig(epochs=3, batch_size=32, lr=2e-3, warmup_steps=5, threads=threads, seed=0)
    train(create_model("tacleaner-tiny-rn"), read_pairs(root / "poison" / "data.csv"), create_defense("finetune"),
          implant, root / "implant", progress=False)
    hashes = {"implant": weights_sha256(root / "implant" / "model.safetensors")}
    clean = read_pairs(world / "clean.csv")
    for name in DEFENSES:
        model = load_model(root / "implant" / "model.safetensors")
        settings = TrainConfig(epochs=2, batch_size=32, lr=1e-3, warmup_steps=5, threads=threads, seed=0)
        params = {"classes": str(world / "classes.json")} if "invert" in name else {}
        train(model, clean, create_defense(name, **params), settings, root / name, progress=False)
        hashes[name] = weights_sha256(root / name / "model.safetensors")
        print(f"{name:18s} {hashes[name]}", flush=True)
    return hashes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the table of hashes here")
    parser.add_argument("--against", type=Path, help="compare with a table written earlier on this machine")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        table = {"threads": args.threads, "torch": torch.__version__, "weights_sha256": pin(Path(tmp), args.threads)}
    if args.out:
        args.out.write_text(json.dumps(table, indent=2) + "\n")
    if args.against:
        before = json.loads(args.against.read_text())
        if before.get("threads") != table["threads"]:
            print(f"error: {args.against} was made with --threads {before.get('threads')}", file=sys.stderr)
            return 2
        changed = [k for k, v in before["weights_sha256"].items() if table["weights_sha256"].get(k) != v]
        for name in changed:
            print(f"changed: {name}", file=sys.stderr)
        print("weights unchanged" if not changed else f"{len(changed)} run(s) changed")
        return 1 if changed else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
