"""Bad input gets one clear line and exit status 2, never a traceback."""
import shutil

import pytest

from tacleaner.models import save_model
from tacleaner_cli import main


def run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def assert_one_line_error(code, err, *needles):
    assert code == 2, err
    lines = err.splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
    for n in needles:
        assert n in lines[-1], (n, err)


@pytest.fixture
def ckpt(tiny, tmp_path):
    path = tmp_path / "tiny.safetensors"
    save_model(tiny, path)
    return path


def test_missing_columns(capsys, world, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,text\na.png,a cat\n")
    code, err = run(capsys, "poison", "--data", str(bad), "--attack", "badnet", "--target", "0", "--num", "1",
                    "--out", str(tmp_path / "o"), "--classes", str(world / "classes.json"))
    assert_one_line_error(code, err, "bad.csv", "missing column(s) image, caption", "found: file, text")


def test_empty_caption_names_row(capsys, world, tmp_path):
    bad = tmp_path / "empty.csv"
    bad.write_text("image,caption\nx.png,a dog\ny.png,  \n")
    code, err = run(capsys, "train", "--data", str(bad), "--model", "tacleaner-tiny-rn", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "empty.csv", "row 3", "empty caption")


def test_poison_fails_on_a_missing_image(capsys, world, tmp_path):
    csv_path = tmp_path / "one.csv"
    csv_path.write_text("image,caption\nnowhere.png,a red circle\n")
    code, err = run(capsys, "poison", "--data", str(csv_path), "--attack", "badnet", "--target", "red circle",
                    "--num", "1", "--out", str(tmp_path / "o"), "--classes", str(world / "classes.json"))
    assert_one_line_error(code, err, "nowhere.png", "not found")


@pytest.mark.parametrize("workers", ["0", "1"])  # in a DataLoader worker the error arrives wrapped in its traceback
def test_evaluation_fails_on_a_corrupt_image(capsys, world, ckpt, tmp_path, workers):
    data = tmp_path / "zs"
    shutil.copytree(world / "images" / "zeroshot", data / "images" / "zeroshot")
    (data / "images" / "zeroshot" / "000001.png").write_bytes(b"garbage")
    (data / "zs.csv").write_text((world / "zeroshot.csv").read_text())
    code, err = run(capsys, "evaluate", "--checkpoint", str(ckpt), "--data", str(data / "zs.csv"),
                    "--classes", str(world / "classes.json"), "--num-workers", workers)
    assert_one_line_error(code, err, "zs.csv: row 3", "000001.png", "unreadable image")
    assert "Original Traceback" not in err and "worker" not in err, err  # progress bars aside: one line


@pytest.mark.parametrize("argv,needles", [
    (["train", "--model", "no-such-model"], ["unknown model 'no-such-model'", "tacleaner-tiny-rn"]),
    (["poison", "--attack", "nosuch"], ["unknown attack 'nosuch'", "badnet, blended"]),
    (["clean", "--defense", "nosuch"], ["unknown defense 'nosuch'", "finetune"]),
])
def test_unknown_names_list_valid_ones(capsys, world, ckpt, tmp_path, argv, needles):
    common = {
        "train": ["--data", str(world / "pretrain.csv"), "--out", str(tmp_path / "o")],
        "poison": ["--data", str(world / "implant.csv"), "--target", "0", "--num", "1", "--out", str(tmp_path / "o"),
                   "--classes", str(world / "classes.json")],
        "clean": ["--data", str(world / "clean.csv"), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")],
    }[argv[0]]
    code, err = run(capsys, *argv, *common)
    assert_one_line_error(code, err, *needles)


def test_target_not_in_classes(capsys, world, ckpt):
    code, err = run(capsys, "evaluate", "--checkpoint", str(ckpt), "--data", str(world / "zeroshot.csv"),
                    "--classes", str(world / "classes.json"), "--attack", "badnet", "--target", "banana")
    assert_one_line_error(code, err, "'banana' is not in the classes file")


def test_checkpoint_that_does_not_match_the_model(capsys, world, ckpt):
    code, err = run(capsys, "evaluate", "--checkpoint", str(ckpt), "--model", "tacleaner-tiny-vit",
                    "--data", str(world / "zeroshot.csv"), "--classes", str(world / "classes.json"))
    assert_one_line_error(code, err, "does not match model tacleaner-tiny-vit")


def test_existing_run_folder_needs_resume_or_overwrite(capsys, world, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("earlier work")
    code, err = run(capsys, "train", "--data", str(world / "pretrain.csv"), "--model", "tacleaner-tiny-rn",
                    "--out", str(out), "--epochs", "1")
    assert_one_line_error(code, err, str(out), "--resume", "--overwrite")
    assert (out / "keep.txt").read_text() == "earlier work"
    code, err = run(capsys, "synth", "--out", str(out), "--pretrain", "2")
    assert_one_line_error(code, err, "--overwrite")


def test_bad_param_syntax_and_unknown_param(capsys, world, tmp_path):
    base = ["poison", "--data", str(world / "implant.csv"), "--attack", "badnet", "--target", "0", "--num", "1",
            "--out", str(tmp_path / "o"), "--classes", str(world / "classes.json")]
    assert_one_line_error(*run(capsys, *base, "--param", "patch_frac"), "expected KEY=VALUE")
    assert_one_line_error(*run(capsys, *base, "--param", "alpha=0.3"), "no parameter 'alpha'")


def test_usage_errors_exit_nonzero(capsys):
    assert main(["poison"]) == 2
    assert "required" in capsys.readouterr().err
