"""WebDataset shards (img2dataset's layout) as input to train, clean and poison: the same pairs
as a CSV give the same losses and weights."""
import csv
import io
import json
import tarfile

import pytest
from safetensors.torch import load_file

from tacleaner.data.pairs import load_image, read_pairs
from tacleaner.data.shards import expand_shards
from tacleaner.errors import TacleanerError
from tacleaner_cli import main


def add(tar, name, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def shards(world, tmp_path_factory):
    """The world's clean split as two shards, as img2dataset writes them (key.png, key.txt,
    key.json), plus one failed download (json only) that must be skipped."""
    root = tmp_path_factory.mktemp("shards")
    table = read_pairs(world / "clean.csv")
    half = len(table) // 2
    for s, rows in enumerate((range(0, half), range(half, len(table)))):
        with tarfile.open(root / f"{s:05d}.tar", "w") as tar:
            for i in rows:
                key = f"{i:09d}"
                add(tar, f"{key}.png", table.images[i].read_bytes())
                add(tar, f"{key}.txt", table.captions[i].encode())
                add(tar, f"{key}.json", json.dumps({"key": key, "status": "success"}).encode())
            if s == 0:
                add(tar, "999999999.json", b'{"status": "failed_to_download"}')
    return root


def test_shards_read_as_the_same_pairs(world, shards):
    csv_table = read_pairs(world / "clean.csv")
    for spec in (shards, str(shards / "{00000..00001}.tar")):
        table = read_pairs(spec)
        assert list(table.captions) == list(csv_table.captions)
        assert table.dropped == {"missing_image": 1}  # the failed download (json only), by cause
        for i in (0, len(table) // 2, len(table) - 1):
            assert load_image(table.images[i]).tobytes() == load_image(csv_table.images[i]).tobytes()
    assert [p.name for p in expand_shards(shards / "{00000..00001}.tar")] == ["00000.tar", "00001.tar"]


def test_shard_patterns_expand_as_open_clip_expands_them(tmp_path):
    """braceexpand's syntax: numeric ranges with their zero padding, several ranges, {a,b}
    alternatives; a missing shard is named, with how many more are missing."""
    for name in ("00008.tar", "00009.tar", "00010.tar", "a0.tar", "a1.tar", "b0.tar", "b1.tar"):
        (tmp_path / name).write_bytes(b"")
    names = lambda spec: [p.name for p in expand_shards(tmp_path / spec)]  # noqa: E731
    assert names("{00008..00010}.tar") == ["00008.tar", "00009.tar", "00010.tar"]
    assert names("{a,b}{0..1}.tar") == ["a0.tar", "a1.tar", "b0.tar", "b1.tar"]
    with pytest.raises(TacleanerError, match=r"00011.tar: shard not found \(and 1 more\)"):
        expand_shards(tmp_path / "{00008..00012}.tar")
    with pytest.raises(TacleanerError, match=r"\{1..2.tar: shard not found$"):  # unbalanced: taken literally
        expand_shards(tmp_path / "{1..2.tar")


@pytest.mark.parametrize("defense", ["finetune", "cleanclip"])
def test_clean_on_shards_gives_the_csv_losses(world, shards, trained_checkpoint, tmp_path, defense):
    runs = {}
    for name, data in (("csv", world / "clean.csv"), ("shards", shards)):
        out = tmp_path / name
        assert main(["--quiet", "clean", "--defense", defense, "--checkpoint", str(trained_checkpoint),
                     "--data", str(data), "--out", str(out), "--epochs", "1", "--batch-size", "16",
                     "--threads", "1", "--log-every", "1"]) == 0
        runs[name] = out
    losses = [[json.loads(x)["loss"] for x in (runs[n] / "metrics.jsonl").read_text().splitlines()] for n in runs]
    assert losses[0] == losses[1] and len(losses[0]) > 3
    a, b = (load_file(runs[n] / "model.safetensors") for n in runs)
    assert all((a[k] == b[k]).all() for k in a)


def test_poison_a_shard_set_writes_a_csv_into_the_shards(world, shards, tmp_path, capsys):
    out = tmp_path / "poisoned"
    assert main(["--quiet", "poison", "--data", str(shards), "--attack", "badnet", "--target", "yellow star",
                 "--num", "5", "--out", str(out), "--classes", str(world / "classes.json")]) == 0
    assert "32 px model frame" in capsys.readouterr().out
    table = read_pairs(out / "data.csv")
    poisoned = set(json.loads((out / "poisoned_indices.json").read_text()))
    with open(out / "data.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    clean_rows = [r["image"] for i, r in enumerate(rows) if i not in poisoned]
    assert all(".tar#" in r for r in clean_rows)
    for i in range(len(table)):
        load_image(table.images[i])  # every row readable, from the shards or the new files
    assert main(["--quiet", "evaluate", "--data", str(world / "zeroshot.csv"), "--classes", str(world / "classes.json"),
                 "--model", "tacleaner-tiny-rn", "--trigger", str(out)]) == 0


def test_shard_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "bad.tar").write_bytes(b"not a tar at all" * 100)
    assert main(["--quiet", "train", "--model", "tacleaner-tiny-rn", "--data",
                 str(tmp_path / "bad.tar"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.tar" in err
    assert main(["--quiet", "train", "--model", "tacleaner-tiny-rn", "--data",
                 str(tmp_path / "{00000..00003}.tar"), "--out", str(tmp_path / "o")]) == 2
    assert "shard not found" in capsys.readouterr().err


def test_train_on_shards_gives_the_csv_losses(world, shards, tmp_path):
    losses = []
    for name, data in (("csv", world / "clean.csv"), ("shards", shards)):
        out = tmp_path / name
        assert main(["--quiet", "train", "--model", "tacleaner-tiny-rn", "--data", str(data), "--out", str(out),
                     "--epochs", "1", "--batch-size", "16", "--threads", "1", "--log-every", "1",
                     "--max-steps", "3"]) == 0
        losses.append([json.loads(x)["loss"] for x in (out / "metrics.jsonl").read_text().splitlines()])
    assert losses[0] == losses[1] and len(losses[0]) >= 3
