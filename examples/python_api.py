"""The pipeline from Python: poison, implant, clean, evaluate (what the CLI commands call).

    python examples/python_api.py WORLD_FOLDER OUT_FOLDER

WORLD_FOLDER is a synthetic world (`tacleaner synth --out WORLD_FOLDER`) or any folder with the
same files: implant.csv and clean.csv (image, caption), zeroshot.csv (image, label) and
classes.json. The settings are tiny so that it runs in a minute on a CPU.
"""
import sys
from pathlib import Path

import torch

from tacleaner import (
    TrainConfig,
    create_attack,
    create_defense,
    create_model,
    evaluate,
    load_attack,
    load_model,
    poison_dataset,
    read_classes,
    read_pairs,
    read_zeroshot,
    train,
)

world, out = Path(sys.argv[1]), Path(sys.argv[2])
classes = read_classes(world / "classes.json")
zeroshot = read_zeroshot(world / "zeroshot.csv", classes)

# 1. Poison 10% of the implant pairs with a BadNet patch toward "yellow star".
attack = create_attack("badnet", patch_frac=0.25, location="bottom-right")
implant_table = read_pairs(world / "implant.csv")
poison_dataset(world / "implant.csv", attack, "yellow star", len(implant_table) // 10, out / "poison",
               seed=0, templates=classes.templates)

# 2. Implant: train a (here random-init, tiny) CLIP on the poisoned pairs.
torch.manual_seed(0)
model = create_model("tacleaner-tiny-rn")
settings = TrainConfig(epochs=2, batch_size=32, lr=2e-3, warmup_steps=5, threads=1)
train(model, read_pairs(out / "poison" / "data.csv"), create_defense("finetune"), settings, out / "implant",
      progress=False)

# 3. Clean with CleanCLIP on disjoint clean pairs.
backdoored = load_model(out / "implant" / "model.safetensors")
cleaning = TrainConfig(epochs=1, batch_size=32, lr=1e-3, warmup_steps=5, threads=1, seed=0)
train(backdoored, read_pairs(world / "clean.csv"), create_defense("cleanclip", w_inmodal=0.5), cleaning,
      out / "cleanclip", progress=False)

# 4. Zero-shot CA and ASR under exactly the poisoning run's trigger.
attack, target = load_attack(out / "poison")
for name in ("implant", "cleanclip"):
    res = evaluate(load_model(out / name / "model.safetensors"), zeroshot, classes, attack=attack, target=target)
    print(f"{name}: CA {res['clean_acc']:.3f}  ASR@1 {res['asr_at_1']:.3f}  ASR@10 {res['asr_at_10']:.3f}")
