"""A CleanCLIP training step on CPU: the authors' research code against tacleaner's `cleanclip`.

Side by side, in one process, on the same JPEG files and from the same random weights:
  theirs - the CleanCLIP research code (github.com/nishadsinghi/CleanCLIP), driven through its
           own functions: options from its `src/parser.py:parse_args` (the README's CleanCLIP
           fine-tuning flags: --inmodal --lr 1e-5 --num_warmup_steps 50 --epochs 10), the
           DataLoader from `src/data.py:get_train_dataloader` (`ImageCaptionDataset`: PIL
           decode, their Processor, AutoAugment on a second decode of the file, EDA captions
           made once at construction), the model from `pkgs/openai/model.py:build` +
           `pkgs/openai/clip.py:convert_models_to_fp32`, the scheduler from
           `src/scheduler.py:cosine_scheduler`, a `torch.cuda.amp.GradScaler()` as in
           `src/main.py`, and each timed pass is one call of `src/train.py:train` (which runs
           forward, `get_loss` with the in-modal term, `scaler.scale(loss).backward()`,
           `scaler.step(optimizer)` for every batch). Their AdamW parameter groups follow the
           name rule of `src/main.py:worker` (no decay for names containing bn/ln/bias/logit_scale).
  ours   - `create_defense("cleanclip")`, `PairDataset` + `objective.collate`, the sum of the
           `*_loss` entries of `objective.losses`, fused AdamW over `tacleaner.train.param_groups`
           (as benchmarks/bench_train.py).

Measured: median seconds per full step (data loading + forward + backward + optimizer; `--steps`
steps per repeat, `--repeats` repeats, the two sides interleaved and their order swapped every
repeat), forward+backward alone on one fixed batch, and the peak RSS of each side in a child
process of its own that builds only that side and runs a warm-up step and one full pass (VmHWM
from /proc/self/status: `getrusage(RUSAGE_SELF).ru_maxrss` would report the parent's peak, which
Linux carries into a child across fork + exec). Prints one JSON object.

Fairness notes:
* fp32 on CPU for both. The script hides CUDA (CUDA_VISIBLE_DEVICES=""), so their
  `torch.cuda.amp.autocast()` and `GradScaler()` disable themselves, exactly as on a CPU-only
  machine; the script checks this and says so in the JSON (`theirs_amp_enabled`: false).
* Their `clip.load(name, pretrained=False)` still downloads the OpenAI TorchScript checkpoint to
  read the architecture from its state dict, so it is not called: the script builds our open_clip
  model (random init, seed 0), passes its state dict to their `build(..., pretrained=False)`
  (which reads the architecture from the shapes, as `load` does), then `convert_models_to_fp32`
  and `load_state_dict` of the same tensors. Key match and bit-equality are reported, and the
  embeddings of both models on one batch are compared in eval mode before training. Expect a
  small text-embedding difference: open_clip's "RN50" uses nn.GELU in the text tower where the
  OpenAI layout (theirs) uses QuickGELU; the image towers should agree to float rounding.
* Nothing is fetched from the network at run time.

Their code's import path needs two packages that tacleaner's venv lacks:
* wandb (logging only; never called with their `--wandb` off): a no-op module is put into
  `sys.modules` inside this process when `import wandb` fails.
* pandas (`ImageCaptionDataset` reads its CSV with it): essential, so it is not stubbed; install
  it outside the project venv and put it on PYTHONPATH, e.g.
      /work/main/.venv/bin/python -m venv /tmp/cleanclip-venv
      /tmp/cleanclip-venv/bin/pip install --no-deps pandas pytz tzdata
      export PYTHONPATH=/tmp/cleanclip-venv/lib/python3.11/site-packages
  (--no-deps keeps the venv's own numpy.) nltk with WordNet data (their EDA) and ftfy/regex
  (their tokenizer) are already in the venv.

Their checkout (read-only; nothing in it is modified):
    git clone https://github.com/nishadsinghi/CleanCLIP /tmp/cleanclip

    PYTHONPATH=/tmp/cleanclip-venv/lib/python3.11/site-packages \\
      python benchmarks/bench_research.py --cleanclip /tmp/cleanclip \\
      [--model RN50] [--batch-size 32] [--steps 5] [--repeats 3] [--threads 2] [--smoke]

`--model` takes an open_clip name with the OpenAI state-dict layout (RN50, RN101, RN50x4,
ViT-B-32): their `build` infers the architecture from the weights, and their Processor fixes the
context length at 77, so tacleaner's tiny configs do not fit. `--smoke` = batch 2, 1 step, 1 repeat.
"""
from __future__ import annotations

import os

os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch: CPU only, their amp disables itself

import argparse  # noqa: E402
import csv  # noqa: E402
import gc  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

WEIGHTS = "weights.pt"
CSV = "pairs.csv"
_COLORS = ["red", "blue", "green", "yellow", "black", "white", "brown", "orange"]
_THINGS = ["dog", "car", "house", "tree", "boat", "chair", "bird", "bicycle", "horse", "table"]
_PLACES = ["street", "beach", "garden", "kitchen", "field", "river", "market", "mountain"]


# ----------------------------------------------------------------------------- data and weights
def make_data(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` 500x375 JPEG photos (gradients, blocks and noise) and a CSV ``image,caption`` with
    paths relative to it: the format both code bases read."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:375, 0:500]
    rows = []
    for i in range(n):
        c = rng.integers(0, 256, 3)
        base = np.stack([xx * 255 // 499, yy * 255 // 374, np.full_like(xx, c[2])], -1).astype(np.int64)
        for _ in range(4):  # a few coloured boxes
            x0, y0 = rng.integers(0, 400), rng.integers(0, 300)
            base[y0:y0 + rng.integers(20, 120), x0:x0 + rng.integers(20, 150)] = rng.integers(0, 256, 3)
        img = np.clip(base + rng.integers(-30, 30, base.shape), 0, 255).astype(np.uint8)
        name = f"img/{i}.jpg"
        Image.fromarray(img).save(root / name, quality=90)
        caption = (f"a {_COLORS[rng.integers(len(_COLORS))]} {_THINGS[rng.integers(len(_THINGS))]} "
                   f"next to the {_PLACES[rng.integers(len(_PLACES))]} on a sunny day")
        rows.append((name, caption))
    path = root / CSV
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows(rows)
    return path


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM of /proc/self/status (the peak of this process image
    alone). ru_maxrss is the fallback off Linux; on Linux it is no good here, because a child
    keeps its parent's peak across fork + exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ----------------------------------------------------------------------------- their side
def import_theirs(cleanclip: Path) -> types.SimpleNamespace:
    """Their modules, imported from the checkout at ``cleanclip`` (top-level packages src, pkgs,
    utils, backdoor), with a no-op ``wandb`` when it is not installed."""
    if importlib.util.find_spec("wandb") is None:
        stub = types.ModuleType("wandb")
        for fn in ("init", "log", "save", "finish", "watch"):
            setattr(stub, fn, lambda *a, **k: None)
        stub.run = types.SimpleNamespace(name=None)
        sys.modules["wandb"] = stub
    if importlib.util.find_spec("pandas") is None:
        sys.exit("bench_research: their src/data.py needs pandas; see this script's docstring "
                 "(install it into a separate venv and set PYTHONPATH)")
    sys.path.insert(0, str(cleanclip))
    from pkgs.openai.clip import Processor, convert_models_to_fp32
    from pkgs.openai.model import build
    from src import train as train_mod
    from src.data import get_train_dataloader
    from src.parser import parse_args
    from src.scheduler import cosine_scheduler

    for mod in (train_mod, build):
        src = Path(getattr(mod, "__file__", None) or sys.modules[mod.__module__].__file__).resolve()
        if not src.is_relative_to(cleanclip.resolve()):
            sys.exit(f"bench_research: {src} is not under {cleanclip} (a module name clash)")
    return types.SimpleNamespace(Processor=Processor, convert_models_to_fp32=convert_models_to_fp32, build=build,
                                 train=train_mod.train, get_loss=train_mod.get_loss, autocast=train_mod.autocast,
                                 get_train_dataloader=get_train_dataloader, parse_args=parse_args,
                                 cosine_scheduler=cosine_scheduler)


class Theirs:
    def __init__(self, cleanclip: Path, csv_path: Path, state: dict, batch_size: int, workers: int) -> None:
        cc = self.cc = import_theirs(cleanclip)
        argv = sys.argv
        try:  # their own parser, with the README's CleanCLIP fine-tuning flags
            sys.argv = ["src.main", "--name", "bench", "--train_data", str(csv_path), "--device", "cpu",
                        "--batch_size", str(batch_size), "--num_workers", str(workers), "--inmodal",
                        "--lr", "1e-5", "--num_warmup_steps", "50", "--epochs", "10", "--complete_finetune"]
            o = cc.parse_args()
        finally:
            sys.argv = argv
        # what src/main.py sets for a CPU run
        o.device, o.num_devices, o.distributed, o.rank, o.master = "cpu", 1, False, 0, True
        self.options = o
        # their load(): build from a state dict (pretrained=False: random init), then fp32
        model = cc.build(dict(state), pretrained=False)
        cc.convert_models_to_fp32(model)
        model.float()  # src/main.py on CPU
        res = model.load_state_dict(state, strict=False)
        self.missing, self.unexpected = list(res.missing_keys), list(res.unexpected_keys)
        mine = model.state_dict()
        self.identical = not self.missing and not self.unexpected and all(
            mine[k].dtype == v.dtype and torch.equal(mine[k], v) for k, v in state.items())
        self.model = model.train()
        self.processor = cc.Processor(model)
        self.data = {"train": cc.get_train_dataloader(o, self.processor)}
        no_decay = ("bn", "ln", "bias", "logit_scale")  # src/main.py worker(): the name rule
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in named if any(k in n for k in no_decay)], "weight_decay": 0},
                  {"params": [p for n, p in named if not any(k in n for k in no_decay)], "weight_decay": o.weight_decay}]
        self.optimizer = torch.optim.AdamW(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps)
        self.scheduler = cc.cosine_scheduler(self.optimizer, o.lr, o.num_warmup_steps,
                                             self.data["train"].num_batches * o.epochs)
        self.scaler = torch.cuda.amp.GradScaler()  # as src/main.py
        self.criterion = torch.nn.CrossEntropyLoss()
        with cc.autocast():
            autocast_on = torch.is_autocast_enabled("cuda") or torch.is_autocast_enabled("cpu")
        self.amp_enabled = bool(self.scaler.is_enabled() or autocast_on)
        if self.amp_enabled:
            sys.exit("bench_research: their autocast/GradScaler are enabled; this benchmark is fp32 on CPU")
        b = next(iter(self.data["train"]))
        # the in-modal concatenation that src/train.py:train does before its forward
        self.fixed = {k: torch.cat([b[k][0], b[k][1]]) for k in ("input_ids", "attention_mask", "pixel_values")}
        self.epoch = 0

    def full(self) -> float:
        """One call of their train(): every batch of the loader, data loading included."""
        self.epoch += 1
        t = time.perf_counter()
        self.cc.train(self.epoch, self.model, self.data, self.optimizer, self.scheduler, self.scaler, self.options)
        return time.perf_counter() - t

    def _fwdbwd(self) -> None:
        self.optimizer.zero_grad()
        outputs = self.model(**self.fixed)
        with self.cc.autocast():
            loss = self.cc.get_loss(self.model, outputs, self.criterion, self.options, None)[0]
            self.scaler.scale(loss).backward()

    def fwdbwd(self, n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            self._fwdbwd()
        return time.perf_counter() - t

    def warm(self) -> None:
        self._fwdbwd()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    @torch.no_grad()
    def embed(self, images: torch.Tensor, texts: torch.Tensor):
        self.model.eval()
        out = self.model(input_ids=texts, attention_mask=None, pixel_values=images)
        self.model.train()
        return out.image_embeds, out.text_embeds


# ----------------------------------------------------------------------------- our side
class Ours:
    def __init__(self, model_name: str, csv_path: Path, state: dict | None, batch_size: int, workers: int) -> None:
        from torch.utils.data import DataLoader

        from tacleaner.data.pairs import PairDataset, read_pairs
        from tacleaner.defenses import create_defense
        from tacleaner.models import create_model
        from tacleaner.train import param_groups

        torch.manual_seed(0)
        self.bundle = create_model(model_name)
        if state is not None:
            self.bundle.model.load_state_dict(state)
        self.model = self.bundle.model.train()
        table = read_pairs(csv_path)
        self.objective = create_defense("cleanclip")
        self.objective.setup(self.bundle, table, seed=0)
        self.objective.on_epoch_start(0)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, 0.1), lr=1e-5, fused=True)  # as train.py
        self.loader = DataLoader(PairDataset(table), batch_size=batch_size, shuffle=True, drop_last=True,
                                 collate_fn=self.objective.collate, num_workers=workers,
                                 generator=torch.Generator().manual_seed(0))
        self.fixed = next(iter(self.loader))

    def _loss(self, batch) -> torch.Tensor:
        return sum(v for k, v in self.objective.losses(self.model, batch).items() if k.endswith("_loss"))

    def full(self) -> float:
        t = time.perf_counter()
        for batch in self.loader:
            loss = self._loss(batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return time.perf_counter() - t

    def fwdbwd(self, n: int) -> float:
        t = time.perf_counter()
        for _ in range(n):
            loss = self._loss(self.fixed)
            self.model.zero_grad(set_to_none=True)
            loss.backward()
        return time.perf_counter() - t

    def warm(self) -> None:
        self.fwdbwd(1)
        self.optimizer.step()

    @torch.no_grad()
    def embed(self, images: torch.Tensor, texts: torch.Tensor):
        self.model.eval()
        out = self.model.encode_image(images, normalize=True), self.model.encode_text(texts, normalize=True)
        self.model.train()
        return out


# ----------------------------------------------------------------------------- driver
def build_side(side: str, args, workdir: Path, state: dict):
    if side == "ours":
        return Ours(args.model, workdir / CSV, state, args.batch_size, args.workers)
    return Theirs(Path(args.cleanclip), workdir / CSV, state, args.batch_size, args.workers)


def child(args) -> None:
    """Only one side in this process: warm-up, one full pass; print its peak RSS."""
    workdir = Path(args.workdir)
    state = torch.load(workdir / WEIGHTS, map_location="cpu", weights_only=True)
    s = build_side(args.child, args, workdir, state)
    del state
    gc.collect()
    s.warm()
    s.full()
    print(json.dumps({"peak_rss_mb": round(peak_rss_mb(), 1)}))


def rss_of(side: str, args, workdir: Path) -> float | str:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--workdir", str(workdir),
           "--cleanclip", args.cleanclip, "--model", args.model, "--batch-size", str(args.batch_size),
           "--steps", str(args.steps), "--threads", str(args.threads), "--workers", str(args.workers)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return f"child failed ({p.returncode}): {p.stderr.strip()[-500:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])["peak_rss_mb"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cleanclip", required=True,
                    help="their checkout: git clone https://github.com/nishadsinghi/CleanCLIP")
    ap.add_argument("--model", default="RN50", help="open_clip name with the OpenAI layout (RN50, ViT-B-32, ...)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="steps per repeat (the CSV holds batch-size x steps pairs)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers, both sides")
    ap.add_argument("--smoke", action="store_true", help="batch 2, 1 step, 1 repeat")
    ap.add_argument("--child", choices=["ours", "theirs"], help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.smoke:
        args.batch_size, args.steps, args.repeats = 2, 1, 1
    if not (Path(args.cleanclip) / "src" / "train.py").is_file():
        sys.exit(f"bench_research: {args.cleanclip} is not a CleanCLIP checkout (no src/train.py); "
                 "git clone https://github.com/nishadsinghi/CleanCLIP")
    logging.getLogger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*(torch\.cuda\.amp|CUDA is not available|pin_memory).*")
    torch.set_num_threads(args.threads)
    if args.child:
        child(args)
        return

    with tempfile.TemporaryDirectory(prefix="bench_research_") as d:
        workdir = Path(d)
        make_data(workdir, args.batch_size * args.steps)
        ours = Ours(args.model, workdir / CSV, None, args.batch_size, args.workers)  # random init, seed 0
        state = {k: v.detach().clone() for k, v in ours.model.state_dict().items()}
        torch.save(state, workdir / WEIGHTS)
        theirs = Theirs(Path(args.cleanclip), workdir / CSV, state, args.batch_size, args.workers)

        # same weights, same inputs: compare the embeddings before any step changes the weights
        k = min(2, args.batch_size)
        images, texts = ours.fixed["images"][:k], ours.fixed["texts"][:k]
        their_tokens = theirs.processor.process_text([ours.objective.captions[int(i)] for i in ours.fixed["index"][:k]])
        oi, ot = ours.embed(images, texts)
        ti, tt = theirs.embed(images, texts)
        weights = {"keys_matched": not theirs.missing and not theirs.unexpected,
                   "missing_in_theirs": theirs.missing, "unexpected_in_theirs": theirs.unexpected,
                   "parameters_identical": theirs.identical,
                   "token_ids_equal": bool(torch.equal(their_tokens["input_ids"], texts.long())),
                   "image_embed_max_abs_diff": float((oi - ti).abs().max()),
                   "text_embed_max_abs_diff": float((ot - tt).abs().max())}
        del state
        gc.collect()

        sides = {"theirs": theirs, "ours": ours}
        for s in sides.values():
            s.warm()
        full = {n: [] for n in sides}
        fb = {n: [] for n in sides}
        for r in range(args.repeats):  # interleaved; the order swaps every repeat
            order = ["theirs", "ours"] if r % 2 == 0 else ["ours", "theirs"]
            for n in order:
                full[n].append(sides[n].full() / args.steps)
            for n in order:
                fb[n].append(sides[n].fwdbwd(args.steps) / args.steps)
        del sides, ours, theirs
        gc.collect()
        rss = {n: rss_of(n, args, workdir) for n in ("theirs", "ours")}

    out = {"model": args.model, "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
           "threads": torch.get_num_threads(), "workers": args.workers, "torch": torch.__version__,
           "precision": "fp32 on CPU (their torch.cuda.amp autocast and GradScaler disabled: no CUDA)",
           "theirs_amp_enabled": False, "weights": weights}
    for n in ("theirs", "ours"):
        step, fwdbwd = statistics.median(full[n]), statistics.median(fb[n])
        out[n] = {"full_step_s": round(step, 3), "full_pairs_per_s": round(args.batch_size / step, 2),
                  "fwdbwd_s": round(fwdbwd, 3), "fwdbwd_pairs_per_s": round(args.batch_size / fwdbwd, 2),
                  "full_step_s_each_repeat": [round(x, 3) for x in full[n]], "peak_rss_mb": rss[n]}
    out["ours_over_theirs"] = {
        "full_pairs_per_s": round(out["ours"]["full_pairs_per_s"] / out["theirs"]["full_pairs_per_s"], 3),
        "fwdbwd_pairs_per_s": round(out["ours"]["fwdbwd_pairs_per_s"] / out["theirs"]["fwdbwd_pairs_per_s"], 3),
        "peak_rss": (round(rss["ours"] / rss["theirs"], 3)
                     if all(isinstance(v, float) for v in rss.values()) else None)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
