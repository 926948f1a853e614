"""The shared training loop: schedule, parameter groups, resume, skipped images."""
import json
import math

import pytest
import torch

from tacleaner.data.pairs import read_pairs
from tacleaner.defenses import DEFENSES, create_defense
from tacleaner.defenses.finetune import Finetune
from tacleaner.errors import TacleanerError
from tacleaner.models import create_model, load_model
from tacleaner.train import TrainConfig, is_complete, lr_lambda, param_groups, train

FAST = dict(batch_size=32, lr=1e-3, warmup_steps=2, log_every=1)


def test_warmup_then_cosine():
    f = lr_lambda(warmup=4, total=12)
    assert [f(s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert f(4) == 1.0
    assert f(8) == pytest.approx(0.5)  # half-way through the 8 cosine steps
    assert f(12) == pytest.approx(0.0, abs=1e-12) and f(100) == pytest.approx(0.0, abs=1e-12)


def test_no_decay_on_gains_biases_embeddings_and_logit_scale(tiny):
    no_decay, decay = param_groups(tiny.model, 0.1)
    names = {id(p): n for n, p in tiny.model.named_parameters()}
    nd = {names[id(p)] for p in no_decay["params"]}
    d = {names[id(p)] for p in decay["params"]}
    assert "logit_scale" in nd and "token_embedding.weight" in nd and "positional_embedding" in nd
    assert "visual.bn1.weight" in nd and "ln_final.bias" in nd
    assert "visual.conv1.weight" in d and "transformer.resblocks.0.attn.in_proj_weight" in d
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(nd) + len(d) == len(list(tiny.model.parameters()))


class InterruptAt(Finetune):
    """The plain objective, interrupted (as by Ctrl-C) when epoch ``stop`` starts."""

    stop: int = 1

    def on_epoch_start(self, epoch):
        if epoch == self.stop:
            raise KeyboardInterrupt


def test_resume_reproduces_an_uninterrupted_run(world, tmp_path):
    table = read_pairs(world / "pretrain.csv")
    cfg = TrainConfig(epochs=2, **FAST)
    torch.manual_seed(0)
    straight = create_model("tacleaner-tiny-rn")
    train(straight, table, create_defense("finetune"), cfg, tmp_path / "a", progress=False)
    torch.manual_seed(0)
    first = create_model("tacleaner-tiny-rn")
    with pytest.raises(KeyboardInterrupt):
        train(first, table, InterruptAt(), cfg, tmp_path / "b", progress=False)
    assert not is_complete(tmp_path / "b") and (tmp_path / "b" / "train_state.pt").is_file()
    with pytest.raises(TacleanerError, match="pass --resume"):
        train(first, table, create_defense("finetune"), cfg, tmp_path / "b", progress=False)
    torch.manual_seed(123)  # a fresh process would not share our RNG state
    resumed = create_model("tacleaner-tiny-rn")
    train(resumed, table, create_defense("finetune"), cfg, tmp_path / "b", resume=True, progress=False)
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert is_complete(tmp_path / "b")
    for run in ("a", "b"):  # the resume state goes once the run is complete; --resume returns it as is
        assert not (tmp_path / run / "train_state.pt").exists(), run
    again = create_model("tacleaner-tiny-rn")
    train(again, table, create_defense("finetune"), cfg, tmp_path / "b", resume=True, progress=False)
    assert all(torch.equal(b[k], again.model.state_dict()[k]) for k in b)
    rows = [json.loads(line) for line in open(tmp_path / "b" / "metrics.jsonl")]
    assert [r["epoch"] for r in rows if r.get("summary")] == [1, 2]
    step_rows = [r for r in rows if not r.get("summary")]
    assert all(k in step_rows[0] for k in ("loss", "clip_loss", "lr", "logit_scale", "pairs_per_s"))
    assert (tmp_path / "b" / "config.yaml").is_file() and (tmp_path / "b" / "log.txt").is_file()
    assert torch.equal(load_model(tmp_path / "b" / "model.safetensors").model.state_dict()["logit_scale"],
                       b["logit_scale"])


def test_save_every_resumes_mid_epoch_to_the_same_weights(world, tmp_path, interrupted_at_step):
    """``save_every`` checkpoints within the epoch; a run stopped at its 5th step (of 6 per
    epoch) resumes after the 4th, skipping the batches it had, with the augmentations and the
    epoch's running sums of an uninterrupted run: the same weights and metrics, bit for bit."""
    table = read_pairs(world / "clean.csv")  # 96 pairs: 6 steps of 16 per epoch
    cfg = TrainConfig(epochs=2, batch_size=16, lr=1e-3, warmup_steps=2, log_every=1, save_every=2, threads=1)
    torch.manual_seed(0)
    straight = create_model("tacleaner-tiny-rn")
    train(straight, table, create_defense("cleanclip"), cfg, tmp_path / "a", progress=False)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        # CleanCLIP: AutoAugment draws from the process's RNG; stopped when its 5th batch arrives
        train(create_model("tacleaner-tiny-rn"), table, interrupted_at_step(DEFENSES.get("cleanclip"), 5)(), cfg,
              tmp_path / "b",
              progress=False)
    state = torch.load(tmp_path / "b" / "train_state.pt", weights_only=True)
    assert state["epoch"] == 0 and state["within_epoch"]["batches"] == 4
    torch.manual_seed(123)
    resumed = create_model("tacleaner-tiny-rn")
    train(resumed, table, create_defense("cleanclip"), cfg, tmp_path / "b", resume=True, progress=False)
    assert "resuming in epoch 1 after 4 batches" in (tmp_path / "b" / "log.txt").read_text()
    a, b = straight.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = lambda run: [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    ra, rb = rows(tmp_path / "a"), rows(tmp_path / "b")
    steps = lambda rs: [(r["step"], r["loss"]) for r in rs if not r.get("summary")]  # noqa: E731
    assert steps(rb) == steps(ra)  # the 4 steps before the stop, then the rest: no step twice
    summaries = lambda rs: [(r["epoch"], r["loss"], r["pairs"]) for r in rs if r.get("summary")]  # noqa: E731
    assert summaries(rb) == summaries(ra)


def test_training_lowers_the_loss_and_clamps_logit_scale(world, tiny, tmp_path):
    with torch.no_grad():
        tiny.model.logit_scale.fill_(math.log(500.0))  # beyond CLIP's cap of 100
    train(tiny, read_pairs(world / "pretrain.csv"), create_defense("finetune"), TrainConfig(epochs=3, **FAST),
          tmp_path / "r", progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl") if '"summary"' in line]
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert float(tiny.model.logit_scale.detach()) <= math.log(100.0) + 1e-6


def test_unreadable_images_are_skipped_and_counted(world, tiny, tmp_path):
    lines = (world / "clean.csv").read_text().splitlines()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    rows = lines[:40] + [f"{tmp_path / 'broken.png'},a broken image", f"{tmp_path / 'gone.png'},a missing image"]
    csv_path = world / "with_broken.csv"  # image paths are relative to the CSV's folder
    csv_path.write_text("\n".join(rows) + "\n")
    cfg = TrainConfig(epochs=1, **{**FAST, "batch_size": 64})  # one batch holds every row
    with pytest.warns(UserWarning, match=r"skipped 2 of 41 samples \(1 missing image, 1 unreadable image\)"):
        train(tiny, read_pairs(csv_path), create_defense("finetune"), cfg, tmp_path / "s", progress=False)
    summary = [json.loads(line) for line in open(tmp_path / "s" / "metrics.jsonl") if '"summary"' in line][0]
    assert summary["skipped_images"] == 2
    assert summary["skipped_missing_image"] == 1 and summary["skipped_unreadable_image"] == 1
    assert "skipped 2 samples (1 missing image, 1 unreadable image)" in (tmp_path / "s" / "log.txt").read_text()


def test_image_cache_hands_out_copies_of_the_decoded_pixels(world, tmp_path):
    """In-process loading keeps decoded images: later reads give the same pixels as a decode,
    as copies (an edit does not reach the cache), within the byte budget; unreadable files are
    never cached."""
    import numpy as np

    from tacleaner.data.pairs import PairDataset, PairTable, load_image

    table = read_pairs(world / "clean.csv")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    t = PairTable(table.source, [table.images[0], table.images[1], table.images[2], str(bad)],
                  list(table.captions[:4]))
    one = load_image(t.images[0])
    ds = PairDataset(t, cache_bytes=2 * one.width * one.height * 3)  # room for two images
    first = [ds[i]["image"] for i in range(4)]
    assert first[3] is None and len(ds._cache) == 2  # the third did not fit; the bad one is skipped
    first[0].paste((255, 0, 0), (0, 0, one.width, one.height))  # an edit by a caller
    again = [ds[i]["image"] for i in range(3)]
    for i in range(3):
        assert np.array_equal(np.asarray(again[i]), np.asarray(load_image(t.images[i])))
    assert again[0] is not ds[0]["image"]
    plain = PairDataset(t)  # the default (and with loader workers): no cache
    assert plain[0]["image"] is not None and plain._cache == {}
    large = PairDataset(t, cache_bytes=2**30, cache_max_pixels=one.width * one.height - 1)
    assert large[0]["image"] is not None and large._cache == {}  # larger than the model's input: not kept


def contract_params(name, world):
    """What a defense needs beyond its defaults: the inversion defense its class names (and
    small probe settings, so that the contract stays fast); RVPT its labelled images."""
    if name == "invert":
        return {"classes": str(world / "classes.json"), "probe_images": 24, "steps": 2, "patch_steps": 3,
                "patch_grid": 2}
    if name == "rvpt":
        return {"fewshot": str(world / "zeroshot_val.csv"), "classes": str(world / "classes.json"), "shots": 1,
                "prompt_tokens": 4}
    return {}


# The model each defense's contract runs on: prompt tuning needs a ViT image encoder.
CONTRACT_MODEL = {"rvpt": "tacleaner-tiny-vit-p4"}


@pytest.mark.parametrize("name", DEFENSES.names())
def test_contract_every_defense_trains_and_returns_named_losses(name, world, tmp_path):
    torch.manual_seed(0)
    tiny = create_model(CONTRACT_MODEL.get(name, "tacleaner-tiny-rn"))
    objective = create_defense(name, **contract_params(name, world))
    table = objective.training_table(read_pairs(world / "clean.csv"), 0)
    objective.setup(tiny, table, seed=0)
    objective.on_epoch_start(0)
    from tacleaner.data.pairs import PairDataset

    ds = PairDataset(table)
    batch = objective.collate([ds[i] for i in range(8)])
    losses = objective.losses(tiny.model, batch)
    named = {k: v for k, v in losses.items() if k.endswith("_loss")}
    assert named
    # Any other entry is a measure the loop logs but never adds to the loss (ta_masked).
    assert all(v.ndim == 0 and not v.requires_grad for k, v in losses.items() if k not in named)
    total = sum(named.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [n for n, p in tiny.model.named_parameters() if p.grad is not None]
    if name == "rvpt":  # prompt tuning: the model stays frozen
        assert grads == ["visual.transformer.deep_prompts"]
        return
    assert tiny.model.visual.conv1.weight.grad is not None and tiny.model.token_embedding.weight.grad is not None
    assert len(grads) > 10


@pytest.mark.parametrize("name", DEFENSES.names())
def test_same_seed_same_machine_gives_bit_identical_weights_and_metrics(name, world, tmp_path):
    """Every defense's randomness (data order, AutoAugment, EDA, subtext draws) is seeded: two
    runs of one stage on one machine, with the threads fixed, agree bit for bit; another seed
    does not."""
    table = read_pairs(world / "clean.csv")
    cfg = TrainConfig(epochs=2, **{**FAST, "threads": 1, "seed": 5})

    def run(folder, seed=5, **short):
        torch.manual_seed(seed)
        bundle = create_model(CONTRACT_MODEL.get(name, "tacleaner-tiny-rn"))
        train(bundle, table, create_defense(name, **contract_params(name, world)),
              TrainConfig(**{**cfg.__dict__, "seed": seed, **short}), tmp_path / folder,
              progress=False)
        rows = [json.loads(line) for line in open(tmp_path / folder / "metrics.jsonl")]
        timing = ("pairs_per_s", "seconds")
        return bundle.model.state_dict(), [{k: v for k, v in r.items() if k not in timing} for r in rows]

    (a, ma), (b, mb), (c, _) = run("a"), run("b"), run("c", seed=6, max_steps=1)  # one step tells seeds apart
    assert all(torch.equal(a[k], b[k]) for k in a) and ma == mb
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_tensorboard_event_files_hold_the_metrics(world, tiny, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train(tiny, read_pairs(world / "pretrain.csv"), create_defense("finetune"),
          TrainConfig(epochs=2, tensorboard=True, **FAST), tmp_path / "r", progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "r" / "metrics.jsonl")]
    steps = [r for r in rows if "summary" not in r]
    events = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    events.Reload()
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [r["step"] for r in steps] and len(loss) == 12  # 2 epochs x 6 steps
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in steps], rel=1e-6)
    lr = events.Scalars("train/lr")
    assert [e.value for e in lr] == pytest.approx([r["lr"] for r in steps], rel=1e-6)
    summary = events.Scalars("epoch/loss")
    assert [e.value for e in summary] == pytest.approx([r["loss"] for r in rows if r.get("summary")], rel=1e-6)
    assert [e.step for e in summary] == [6, 12]
