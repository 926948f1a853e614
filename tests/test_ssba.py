"""SSBA: a trained StegaStamp-style encoder whose residual is the trigger (fixed seeds, CPU)."""
import csv
import json

import numpy as np
import pytest

import tacleaner.attacks.ssba  # noqa: F401  (registers "ssba")
from tacleaner.attacks.base import PoisonContext, create_attack
from tacleaner.attacks.poison import TRIGGER_FILE, load_attack, poison_dataset
from tacleaner.attacks.stealth import psnr
from tacleaner.attacks.stegastamp import load_encoder, save_encoder, training_crops
from tacleaner.data.pairs import load_image, read_pairs
from tacleaner.errors import TacleanerError

TARGET = "yellow star"
TEMPLATES = ["a photo of a {}.", "a drawing of a {}."]
FAST = {"train_steps": 20, "train_images": 32, "batch_size": 8}  # for checks that need no learning


def context(world, seed=0):
    table = read_pairs(world / "implant.csv")
    return PoisonContext(images=table.images, captions=table.captions, target=TARGET, templates=TEMPLATES, seed=seed)


def images(world, n, start=0):
    table = read_pairs(world / "implant.csv")
    return [np.asarray(load_image(p)) for p in table.images[start:start + n]]


@pytest.fixture(scope="module")
def trained(world):
    """An encoder trained long enough to learn its code (about 10 s on two CPU cores)."""
    attack = create_attack("ssba", train_steps=200)
    report = attack.prepare(context(world))
    return attack, report


def test_training_learns_a_readable_small_residual(trained):
    _, report = trained
    assert report["encoder"] == "trained" and report["steps"] == 200
    assert report["eval_images"] == 32 and report["train_images"] == 128  # a fifth held out
    assert report["bit_acc"] > 0.9, report  # chance is 0.5
    assert report["psnr_db"] > 30, report
    assert report["train_seconds"] > 0


def test_trigger_is_small_bounded_and_sample_specific(trained, world):
    attack, _ = trained
    a, b = images(world, 2)
    ta, tb = attack.trigger(a, 0), attack.trigger(b, 1)
    assert ta.dtype == np.uint8 and ta.shape == a.shape
    assert ta.tobytes() == attack.trigger(a, 0).tobytes(), "deterministic"
    assert attack.trigger(a, 7).tobytes() == ta.tobytes(), "depends on the image, not its index"
    bound = attack.max_residual * attack.strength + 1
    ra, rb = ta.astype(int) - a, tb.astype(int) - b
    assert 0 < np.abs(ra).max() <= bound and np.abs(rb).max() <= bound
    assert psnr(ta, a) > 30 and psnr(tb, b) > 30
    # Sample-specific: the two residuals differ in a good share of their pixels.
    assert np.mean(ra != rb) > 0.2
    # Applied at the image's own resolution (the encoder is fully convolutional).
    big = np.asarray(load_image(read_pairs(world / "implant.csv").images[0]).resize((80, 48)))
    out = attack.trigger(big, 0)
    assert out.shape == (48, 80, 3) and 0 < np.abs(out.astype(int) - big).max() <= bound


def test_strength_scales_the_residual(trained, world):
    attack, _ = trained
    (a,) = images(world, 1)
    strong = create_attack("ssba", **{**attack.params(), "strength": 2.0})
    strong.load_state(attack.state())
    r1 = np.abs(attack.trigger(a, 0).astype(int) - a).mean()
    r2 = np.abs(strong.trigger(a, 0).astype(int) - a).mean()
    assert r2 > 1.6 * r1


def test_same_seeds_same_trigger_other_pattern_seed_other_bits(world):
    (img,) = images(world, 1)
    first = create_attack("ssba", **FAST)
    first.prepare(context(world))
    again = create_attack("ssba", **FAST)
    again.prepare(context(world))
    assert again.trigger(img, 0).tobytes() == first.trigger(img, 0).tobytes()
    other = create_attack("ssba", pattern_seed=1, **FAST)
    other.prepare(context(world))
    assert not np.array_equal(other.state()["bits"], first.state()["bits"])
    assert other.trigger(img, 0).tobytes() != first.trigger(img, 0).tobytes()


def test_training_crops_keep_pixel_scale_for_mixed_sizes():
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, size=shape, dtype=np.uint8)
            for shape in [(100, 120, 3), (100, 120, 3), (40, 50, 3), (300, 90, 3)]]
    crops = training_crops(imgs, np.random.default_rng(1))
    assert crops.shape == (4, 3, 64, 64) and crops.dtype == np.uint8  # capped at 64 px
    # Large enough images are cropped, not resized: each crop is a window of its image.
    windows = np.lib.stride_tricks.sliding_window_view(imgs[0], (64, 64, 3)).reshape(-1, 64, 64, 3)
    assert (windows == crops[0].transpose(1, 2, 0)).all(axis=(1, 2, 3)).any()
    assert training_crops(imgs[2:3], np.random.default_rng(1)).shape == (1, 3, 40, 40)


def test_state_round_trip_gives_identical_bytes(trained, world):
    attack, _ = trained
    state = attack.state()
    assert state["bits"].dtype == np.uint8 and state["bits"].shape == (32,)
    assert state["config"].tolist() == [32, 16, 8.0]
    assert all(k.startswith("encoder.") for k in state if k not in ("bits", "config"))
    rebuilt = create_attack("ssba", **attack.params())
    assert not rebuilt.ready()
    rebuilt.load_state({k: v.copy() for k, v in state.items()})
    for i, img in enumerate(images(world, 4)):
        assert rebuilt.trigger(img, i).tobytes() == attack.trigger(img, i).tobytes()


def test_poisoning_round_trip(world, tmp_path):
    attack = create_attack("ssba", **FAST)
    m = poison_dataset(world / "implant.csv", attack, TARGET, 8, tmp_path / "p", seed=1, templates=TEMPLATES)
    assert (tmp_path / "p" / TRIGGER_FILE).is_file() and m["trigger"] == TRIGGER_FILE
    assert {"bit_acc", "psnr_db", "steps", "seconds"} <= set(m["prepare"])
    loaded, target = load_attack(tmp_path / "p")
    assert target == TARGET and loaded.name == "ssba" and loaded.ready()
    indices = json.loads((tmp_path / "p" / "poisoned_indices.json").read_text())
    src = list(csv.DictReader(open(world / "implant.csv")))
    out = list(csv.DictReader(open(tmp_path / "p" / "data.csv")))
    assert len(indices) == 8
    for i in indices:
        expected = loaded.apply(load_image(world / src[i]["image"]), i)
        assert load_image(tmp_path / "p" / out[i]["image"]).tobytes() == expected.tobytes()
        assert TARGET in out[i]["caption"]
    # The trained encoder is also saved on its own, for another run to reuse (encoder=FILE).
    assert m["prepare"]["encoder"] == "ssba_encoder.safetensors"
    reuse = create_attack("ssba", encoder=str(tmp_path / "p" / "ssba_encoder.safetensors"))
    reuse.prepare(context(world))
    img = np.asarray(load_image(world / src[indices[0]]["image"]))
    assert reuse.trigger(img, 0).tobytes() == loaded.trigger(img, 0).tobytes()


def test_user_supplied_encoder_is_used(trained, world, tmp_path):
    attack, _ = trained
    path = tmp_path / "enc.safetensors"
    save_encoder(attack._encoder, path)
    assert load_encoder(path).cfg == attack._encoder.cfg
    # The file's architecture replaces the parameters; no training happens.
    user = create_attack("ssba", encoder=str(path), n_bits=8, train_steps=10**6)
    report = user.prepare(context(world))
    assert report["encoder"] == str(path) and report["bit_acc"] is None and report["psnr_db"] > 30
    assert user.n_bits == 32 and user.params()["n_bits"] == 32
    for i, img in enumerate(images(world, 3)):
        assert user.trigger(img, i).tobytes() == attack.trigger(img, i).tobytes()


def test_bad_encoder_files_are_one_line_errors(trained, world, tmp_path):
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    for path, message in [(corrupt, "not a readable safetensors file"),
                          (tmp_path / "missing.safetensors", "ssba encoder file not found")]:
        with pytest.raises(TacleanerError, match=message) as e:
            create_attack("ssba", encoder=str(path)).prepare(context(world))
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    # A valid safetensors file that is not an encoder, and one whose weights do not fit.
    from safetensors.numpy import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(foreign))
    with pytest.raises(TacleanerError, match=f"{foreign}: not an ssba encoder"):
        load_encoder(foreign)
    attack, _ = trained
    arrays = {k[len("encoder."):]: v for k, v in attack.state().items() if k.startswith("encoder.")}
    arrays["secret.weight"] = arrays["secret.weight"][:, :5]
    broken = tmp_path / "broken.safetensors"
    header = json.dumps({"kind": "ssba-encoder", "n_bits": 32, "width": 16, "max_residual": 8.0})
    save_file(arrays, str(broken), metadata={"tacleaner": header})
    with pytest.raises(TacleanerError, match=f"{broken}: weights do not fit an ssba encoder .*secret.weight"):
        load_encoder(broken)


def test_needs_preparing_and_validates(trained):
    with pytest.raises(TacleanerError, match="trigger is learned"):
        create_attack("ssba").trigger(np.zeros((32, 32, 3), np.uint8), 0)
    with pytest.raises(TacleanerError, match="trigger is learned"):
        create_attack("ssba").state()
    for params, message in [({"n_bits": 0}, "ssba n_bits must be >= 1, got 0"),
                            ({"max_residual": 0}, r"ssba max_residual must be in \(0, 255\]"),
                            ({"strength": -1}, "ssba strength must be > 0"),
                            ({"train_steps": 0}, "ssba train_steps must be >= 1"),
                            ({"lr": 0}, "ssba lr must be > 0"),
                            ({"w_image": -1}, "ssba w_image must be >= 0"),
                            ({"encoder": " "}, "ssba encoder must be a file path")]:
        with pytest.raises(TacleanerError, match=message):
            create_attack("ssba", **params)
    attack, _ = trained
    state = attack.state()
    with pytest.raises(TacleanerError, match="'bits' array of 32"):
        create_attack("ssba").load_state({**state, "bits": np.zeros(5, np.uint8)})
    with pytest.raises(TacleanerError, match="'config' array"):
        create_attack("ssba").load_state({k: v for k, v in state.items() if k != "config"})
    with pytest.raises(TacleanerError, match="ssba trigger: weights do not fit .*missing"):
        create_attack("ssba").load_state({"config": state["config"], "bits": state["bits"]})
