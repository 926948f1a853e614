"""Checkpoint round trip, import of OpenAI-format state dicts, refusal of code in pickles."""
import pickle

import pytest
import torch

from tacleaner.errors import TacleanerError
from tacleaner.models import create_model, load_model, read_meta, save_model


def outputs(bundle):
    torch.manual_seed(1)
    with torch.no_grad():
        bundle.model.eval()
        return (bundle.model.encode_image(torch.randn(2, 3, 32, 32)),
                bundle.model.encode_text(bundle.tokenizer(["a red circle", "two blue squares"])))


def test_round_trip_rebuilds_from_file_alone(tiny, tmp_path):
    save_model(tiny, tmp_path / "m.safetensors", epoch=3)
    meta = read_meta(tmp_path / "m.safetensors")
    assert meta["model_name"] == "tacleaner-tiny-rn" and meta["epoch"] == 3
    again = load_model(tmp_path / "m.safetensors")
    for a, b in zip(outputs(tiny), outputs(again)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("prefix", ["", "module."])
def test_openai_format_state_dict_import(tiny, tmp_path, prefix):
    # CleanCLIP and BadCLIP release {"state_dict": ...}, often with DataParallel's prefix, and
    # OpenAI's format carries a few hyper-parameter entries that are not weights.
    sd = {prefix + k: v.clone() for k, v in tiny.model.state_dict().items()}
    sd[prefix + "context_length"] = torch.tensor(24)
    torch.save({"epoch": 10, "state_dict": sd}, tmp_path / "epoch_10.pt")
    with pytest.raises(TacleanerError, match="does not name its model; pass --model"):
        load_model(tmp_path / "epoch_10.pt")
    again = load_model(tmp_path / "epoch_10.pt", "tacleaner-tiny-rn")
    for a, b in zip(outputs(tiny), outputs(again)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name,key", [("RN50-quickgelu", "visual.attnpool.c_proj.weight"),
                                      ("ViT-B-32-quickgelu", "visual.proj")])
def test_standard_architectures_use_openai_key_names(name, key):
    # The real models are built without weights here; their parameter names are OpenAI's,
    # so the released checkpoints load into them.
    bundle = create_model(name)
    keys = bundle.model.state_dict()
    assert key in keys and "transformer.resblocks.0.attn.in_proj_weight" in keys
    assert "token_embedding.weight" in keys and bundle.image_size == 224


class Exploit:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's note on the attacker's file
def test_code_executing_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"w": Exploit(str(marker))}}, tmp_path / "evil.pt")
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"state_dict": Exploit(str(marker))}, f)
    for name in ("evil.pt", "evil.pkl"):
        with pytest.raises(TacleanerError, match="refused to load"):
            load_model(tmp_path / name, "tacleaner-tiny-rn")
    assert not marker.exists()


def test_mismatched_checkpoint_is_explained(tiny, tmp_path):
    save_model(tiny, tmp_path / "rn.safetensors")
    with pytest.raises(TacleanerError, match=r"does not match model tacleaner-tiny-vit: \d+ missing"):
        load_model(tmp_path / "rn.safetensors", "tacleaner-tiny-vit")


def test_garbage_file_is_explained(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(TacleanerError, match="junk.pt"):
        load_model(tmp_path / "junk.pt", "tacleaner-tiny-rn")


@pytest.mark.parametrize("fmt", ["openai", "open_clip"])
def test_export_round_trip(fmt, tiny, tmp_path):
    """`tacleaner export` writes what CleanCLIP (openai layout) and open_clip load; loading it
    back gives the same weights, and the file holds only tensors (weights_only loads it)."""
    import open_clip

    from tacleaner.models import save_model
    from tacleaner_cli import main

    ours = tmp_path / "ours.safetensors"
    save_model(tiny, ours, epoch=3)
    out = tmp_path / f"{fmt}.pt"
    assert main(["--quiet", "export", "--checkpoint", str(ours), "--out", str(out), "--format", fmt]) == 0
    raw = torch.load(out, map_location="cpu", weights_only=True)
    state = raw["state_dict"] if fmt == "openai" else raw
    if fmt == "openai":
        assert raw["epoch"] == 3
    reference = tiny.model.state_dict()
    assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state)
    back = load_model(out, "tacleaner-tiny-rn").model.state_dict()
    assert all(torch.equal(back[k], reference[k]) for k in reference)
    if fmt == "open_clip":
        model = open_clip.create_model("tacleaner-tiny-rn", pretrained=str(out))
        assert all(torch.equal(model.state_dict()[k], reference[k]) for k in reference)
    assert main(["--quiet", "export", "--checkpoint", str(ours), "--out", str(out)]) == 2  # exists


def test_outputs_get_the_usual_permissions_not_mkstemps_0600(tmp_path):
    import os
    import stat

    from tacleaner.fileio import write_json
    from tacleaner.models import create_model, save_model

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
        save_model(create_model("tacleaner-tiny-rn"), tmp_path / "m.safetensors")  # safetensors writes its own file
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "m.safetensors").stat().st_mode) == 0o644


def test_weights_hash_ignores_the_files_metadata_and_sees_any_changed_value(tiny, tmp_path):
    from tacleaner.models.checkpoint import weights_sha256

    save_model(tiny, tmp_path / "a.safetensors", run="one folder")
    save_model(tiny, tmp_path / "b.safetensors", run="another folder")
    assert (tmp_path / "a.safetensors").read_bytes() != (tmp_path / "b.safetensors").read_bytes()
    assert weights_sha256(tmp_path / "a.safetensors") == weights_sha256(tmp_path / "b.safetensors")
    with torch.no_grad():
        next(tiny.model.parameters()).view(-1)[0] += 1e-6
    save_model(tiny, tmp_path / "c.safetensors", run="one folder")
    assert weights_sha256(tmp_path / "c.safetensors") != weights_sha256(tmp_path / "a.safetensors")
