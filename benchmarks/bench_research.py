"""A CleanCLIP training step: the authors' research code against tacleaner's `cleanclip`, on CPU
(default) or one CUDA GPU (`--device cuda`, run by benchmarks/gpu_research.sh).

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

On CUDA (`--device cuda`): each side as it runs on a GPU. Theirs: `src/main.py`'s path for one
GPU (their parser's `--device gpu`, `cuda:0`, the fp32 model moved there), their `autocast()` and
`GradScaler()` enabled as their code has them (their forward pass runs before `with autocast()`,
so in fp32; only the loss and backward are inside), their DataLoader with `--num_workers` workers
(default 8) and pinned memory. Ours: train.py's bf16 autocast around the forward pass and losses,
batches moved by train.py's `_to` (non-blocking, from pinned memory), fused AdamW, the same
workers; once in NCHW (`ours`) and once channels-last (`ours_channels_last`, TrainConfig's
`channels_last`). The three sides interleave, the order turning every repeat; peak GPU memory
(`torch.cuda.max_memory_allocated`) and peak RSS per side each in a process of its own.

Fairness notes:
* Ours loads as `train.py` does: on CPU (no workers) its dataset would keep decoded images no
  larger than the model's input; these 500x375 photos are larger, so both sides decode every
  image every step, as in every epoch of a real run. On CUDA both decode in their workers.
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
import sys


def _device_from_argv() -> str:
    """``--device`` read before torch is imported: on CPU, CUDA must be hidden first."""
    for i, a in enumerate(sys.argv):
        if a == "--device" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
        if a.startswith("--device="):
            return a.split("=", 1)[1]
    return "cpu"


if _device_from_argv() == "cpu":
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
def _photo(root: Path, i: int, seed: int) -> tuple[str, str]:
    """Image ``i``: a 500x375 JPEG (gradients, coloured boxes, noise) and its caption, drawn from
    its own generator so that any number of processes make the same files."""
    rng = np.random.default_rng([seed, i])
    yy, xx = np.mgrid[0:375, 0:500]
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
    return name, caption


def make_data(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` 500x375 JPEG photos and a CSV ``image,caption`` with paths relative to it: the
    format both code bases read. Made in parallel on the machine's cores."""
    from concurrent.futures import ProcessPoolExecutor

    (root / "img").mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=max(1, min(16, os.cpu_count() or 1))) as pool:
        rows = list(pool.map(_photo, [root] * n, range(n), [seed] * n, chunksize=16))
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


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Theirs:
    def __init__(self, cleanclip: Path, csv_path: Path, state: dict, batch_size: int, workers: int,
                 device: torch.device) -> None:
        cc = self.cc = import_theirs(cleanclip)
        self.device = device
        argv = sys.argv
        try:  # their own parser, with the README's CleanCLIP fine-tuning flags
            sys.argv = ["src.main", "--name", "bench", "--train_data", str(csv_path),
                        "--device", "gpu" if device.type == "cuda" else "cpu", "--batch_size", str(batch_size),
                        "--num_workers", str(workers), "--inmodal",
                        "--lr", "1e-5", "--num_warmup_steps", "50", "--epochs", "10", "--complete_finetune"]
            o = cc.parse_args()
        finally:
            sys.argv = argv
        # what src/main.py's __main__ and worker set for a one-device run (their choices: cpu, gpu)
        o.num_devices, o.distributed, o.rank, o.master = 1, False, 0, True
        # their load(): build from a state dict (pretrained=False: random init), then fp32
        model = cc.build(dict(state), pretrained=False)
        cc.convert_models_to_fp32(model)
        res = model.load_state_dict(state, strict=False)
        if device.type == "cuda":  # src/main.py:worker: "cuda" + ":" + device_id, set_device, model.to
            o.device = f"cuda:{o.device_id}"
            torch.cuda.set_device(o.device_id)
            model.to(o.device)
        else:
            o.device = "cpu"
            model.float()
        self.options = o
        self.missing, self.unexpected = list(res.missing_keys), list(res.unexpected_keys)
        mine = model.state_dict()
        self.identical = not self.missing and not self.unexpected and all(
            mine[k].dtype == v.dtype and torch.equal(mine[k].cpu(), v) for k, v in state.items())
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
        if self.amp_enabled != (device.type == "cuda"):
            sys.exit(f"bench_research: their autocast/GradScaler are {'on' if self.amp_enabled else 'off'} "
                     f"on {device}; expected them on exactly when CUDA is used")
        b = next(iter(self.data["train"]))
        # the in-modal concatenation that src/train.py:train does before its forward
        self.fixed = {k: torch.cat([b[k][0], b[k][1]]).to(device) for k in ("input_ids", "attention_mask", "pixel_values")}
        self.epoch = 0

    def full(self) -> float:
        """One call of their train(): every batch of the loader, data loading included."""
        self.epoch += 1
        t = time.perf_counter()
        self.cc.train(self.epoch, self.model, self.data, self.optimizer, self.scheduler, self.scaler, self.options)
        sync(self.device)
        return time.perf_counter() - t

    def _fwdbwd(self) -> None:
        # as their train(): the forward pass outside autocast, the loss and backward inside it
        self.optimizer.zero_grad()
        outputs = self.model(**self.fixed)
        with self.cc.autocast():
            loss = self.cc.get_loss(self.model, outputs, self.criterion, self.options, None)[0]
            self.scaler.scale(loss).backward()

    def fwdbwd(self, n: int) -> float:
        sync(self.device)
        t = time.perf_counter()
        for _ in range(n):
            self._fwdbwd()
        sync(self.device)
        return time.perf_counter() - t

    def warm(self) -> None:
        self._fwdbwd()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    @torch.no_grad()
    def embed(self, images: torch.Tensor, texts: torch.Tensor):
        self.model.eval()
        out = self.model(input_ids=texts.to(self.device), attention_mask=None, pixel_values=images.to(self.device))
        self.model.train()
        return out.image_embeds.float().cpu(), out.text_embeds.float().cpu()


# ----------------------------------------------------------------------------- our side
class Ours:
    """The `cleanclip` objective's step as `tacleaner.train.train` runs it: batches moved with
    train.py's own `_to` (non-blocking, channels-last when asked), the forward pass and losses
    under train.py's autocast (bf16 on CUDA, none on CPU), fused AdamW, the logit-scale clamp."""

    def __init__(self, model_name: str, csv_path: Path, state: dict | None, batch_size: int, workers: int,
                 device: torch.device, channels_last: bool = False) -> None:
        from torch.utils.data import DataLoader

        from tacleaner.data.pairs import IMAGE_CACHE_BYTES, PairDataset, read_pairs
        from tacleaner.defenses import create_defense
        from tacleaner.environment import autocast_for, resolve_precision
        from tacleaner.models import create_model
        from tacleaner.train import MAX_LOGIT_SCALE, _to, param_groups

        self.device, self._to, self.max_logit_scale = device, _to, MAX_LOGIT_SCALE
        self.image_format = torch.channels_last if channels_last else None
        torch.manual_seed(0)
        self.bundle = create_model(model_name)
        if state is not None:
            self.bundle.model.load_state_dict(state)
        self.model = self.bundle.model.to(device).train()
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.autocast = autocast_for(resolve_precision("auto", device), device)
        table = read_pairs(csv_path)
        self.objective = create_defense("cleanclip")
        self.objective.setup(self.bundle, table, seed=0)
        self.objective.on_epoch_start(0)
        self.optimizer = torch.optim.AdamW(param_groups(self.model, 0.1), lr=1e-5, fused=True)  # as train.py
        cache = IMAGE_CACHE_BYTES if workers == 0 else 0  # as train.py: decoded images kept when loading in process
        dataset = PairDataset(table, cache_bytes=cache, cache_max_pixels=self.bundle.image_size ** 2)
        self.loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True,
                                 collate_fn=self.objective.collate, num_workers=workers,
                                 pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0))
        self.cpu_fixed = next(iter(self.loader))
        self.fixed = self._move(self.cpu_fixed)

    def _move(self, batch: dict) -> dict:
        return {k: self._to(v, self.device, self.image_format) for k, v in batch.items()}

    def _loss(self, batch) -> torch.Tensor:
        with self.autocast:
            losses = self.objective.losses(self.model, batch)
        return sum(v for k, v in losses.items() if k.endswith("_loss"))

    def _step(self, batch) -> None:
        loss = self._loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0, self.max_logit_scale)

    def full(self) -> float:
        t = time.perf_counter()
        for batch in self.loader:
            self._step(self._move(batch))
        sync(self.device)
        return time.perf_counter() - t

    def fwdbwd(self, n: int) -> float:
        sync(self.device)
        t = time.perf_counter()
        for _ in range(n):
            loss = self._loss(self.fixed)
            self.model.zero_grad(set_to_none=True)
            loss.backward()
        sync(self.device)
        return time.perf_counter() - t

    def warm(self) -> None:
        self._step(self.fixed)

    @torch.no_grad()
    def embed(self, images: torch.Tensor, texts: torch.Tensor):
        self.model.eval()
        images, texts = images.to(self.device), texts.to(self.device)
        out = self.model.encode_image(images, normalize=True), self.model.encode_text(texts, normalize=True)
        self.model.train()
        return out[0].float().cpu(), out[1].float().cpu()


# ----------------------------------------------------------------------------- driver
SIDES = ("theirs", "ours", "ours_channels_last")  # the last on CUDA only


def build_side(side: str, args, workdir: Path, state: dict):
    device = torch.device(args.device)
    if side.startswith("ours"):
        return Ours(args.model, workdir / CSV, state, args.batch_size, args.workers, device,
                    channels_last=side == "ours_channels_last")
    return Theirs(Path(args.cleanclip), workdir / CSV, state, args.batch_size, args.workers, device)


def child(args) -> None:
    """Only one side in this process: warm-up, one full pass; print its peak RSS (and, on CUDA,
    the peak of the GPU memory its tensors took)."""
    workdir = Path(args.workdir)
    state = torch.load(workdir / WEIGHTS, map_location="cpu", weights_only=True)
    s = build_side(args.child, args, workdir, state)
    del state
    gc.collect()
    s.warm()
    s.full()
    out = {"peak_rss_mb": round(peak_rss_mb(), 1)}
    if args.device == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    print(json.dumps(out))


def memory_of(side: str, args, workdir: Path) -> dict | str:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--workdir", str(workdir),
           "--cleanclip", args.cleanclip, "--model", args.model, "--batch-size", str(args.batch_size),
           "--steps", str(args.steps), "--threads", str(args.threads), "--workers", str(args.workers),
           "--device", args.device]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return f"child failed ({p.returncode}): {p.stderr.strip()[-500:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cleanclip", required=True,
                    help="their checkout: git clone https://github.com/nishadsinghi/CleanCLIP")
    ap.add_argument("--model", default="RN50", help="open_clip name with the OpenAI layout (RN50, ViT-B-32, ...)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                    help="cuda: their fp16 autocast + GradScaler, ours bf16 (NCHW and channels-last)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="steps per repeat (the CSV holds batch-size x steps pairs)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=None,
                    help="DataLoader workers, both sides (default: 0 on CPU, 8 on CUDA: their --num_workers default)")
    ap.add_argument("--no-memory", action="store_true", help="leave out the per-side peak memory (child processes)")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--smoke", action="store_true", help="batch 2, 1 step, 1 repeat")
    ap.add_argument("--child", choices=list(SIDES), help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.workers is None:
        args.workers = 8 if args.device == "cuda" else 0
    if args.smoke:
        args.batch_size, args.steps, args.repeats = 2, 1, 1
    if not (Path(args.cleanclip) / "src" / "train.py").is_file():
        sys.exit(f"bench_research: {args.cleanclip} is not a CleanCLIP checkout (no src/train.py); "
                 "git clone https://github.com/nishadsinghi/CleanCLIP")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_research: --device cuda, but torch sees no CUDA device")
    logging.getLogger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*(torch\.cuda\.amp|CUDA is not available|pin_memory).*")
    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.cuda.amp.* in their code
    torch.set_num_threads(args.threads)
    if args.child:
        child(args)
        return
    device = torch.device(args.device)
    names = SIDES if device.type == "cuda" else SIDES[:2]

    with tempfile.TemporaryDirectory(prefix="bench_research_") as d:
        workdir = Path(d)
        make_data(workdir, args.batch_size * args.steps)
        torch.manual_seed(0)
        from tacleaner.models import create_model
        state = {k: v.detach().clone() for k, v in create_model(args.model).model.state_dict().items()}  # random, seed 0
        torch.save(state, workdir / WEIGHTS)
        sides = {n: build_side(n, args, workdir, state) for n in names}
        ours, theirs = sides["ours"], sides["theirs"]

        # same weights, same inputs: compare the embeddings before any step changes the weights
        k = min(2, args.batch_size)
        images, texts = ours.cpu_fixed["images"][:k], ours.cpu_fixed["texts"][:k]
        their_tokens = theirs.processor.process_text([ours.objective.captions[int(i)] for i in ours.cpu_fixed["index"][:k]])
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

        for s in sides.values():
            s.warm()
        full = {n: [] for n in sides}
        fb = {n: [] for n in sides}
        for r in range(args.repeats):  # interleaved; the order turns every repeat
            order = list(names[r % len(names):]) + list(names[:r % len(names)])
            for n in order:
                full[n].append(sides[n].full() / args.steps)
            for n in order:
                fb[n].append(sides[n].fwdbwd(args.steps) / args.steps)
        del sides, ours, theirs
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        memory = {n: ("not measured (--no-memory)" if args.no_memory else memory_of(n, args, workdir)) for n in names}

    precision = ("fp32 on CPU (their torch.cuda.amp autocast and GradScaler disabled: no CUDA)" if device.type == "cpu"
                 else "theirs: fp16 autocast around the loss and backward (their forward pass runs outside it, "
                      "in fp32) + GradScaler; ours: bf16 autocast around forward and loss")
    out = {"model": args.model, "device": torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu",
           "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
           "threads": torch.get_num_threads(), "workers": args.workers, "torch": torch.__version__,
           "precision": precision, "theirs_amp_enabled": device.type == "cuda", "weights": weights}
    for n in names:
        step, fwdbwd = statistics.median(full[n]), statistics.median(fb[n])
        mem = memory[n]
        out[n] = {"full_step_s": round(step, 4), "full_pairs_per_s": round(args.batch_size / step, 2),
                  "fwdbwd_s": round(fwdbwd, 4), "fwdbwd_pairs_per_s": round(args.batch_size / fwdbwd, 2),
                  "full_over_fwdbwd": round(step / fwdbwd, 3),
                  "full_step_s_each_repeat": [round(x, 4) for x in full[n]],
                  "peak_rss_mb": mem.get("peak_rss_mb") if isinstance(mem, dict) else mem}
        if device.type == "cuda" and isinstance(mem, dict):
            out[n]["peak_gpu_mb"] = mem.get("peak_gpu_mb")

    def ratio(n: str, key: str) -> float:
        return round(out[n][key] / out["theirs"][key], 3)

    def mem_ratio(n: str, key: str) -> float | None:
        a, b = out[n].get(key), out["theirs"].get(key)
        return round(a / b, 3) if isinstance(a, float) and isinstance(b, float) else None

    for n in names[1:]:
        out[f"{n}_over_theirs"] = {"full_pairs_per_s": ratio(n, "full_pairs_per_s"),
                                   "fwdbwd_pairs_per_s": ratio(n, "fwdbwd_pairs_per_s"),
                                   "peak_rss": mem_ratio(n, "peak_rss_mb"),
                                   **({"peak_gpu": mem_ratio(n, "peak_gpu_mb")} if device.type == "cuda" else {})}
    text = json.dumps(out, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
