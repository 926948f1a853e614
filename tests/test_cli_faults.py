"""Faults a user meets at scale, each a contract case: real files and real processes, no mocks
of what is tested. Every case ends in one ``error:`` line naming the file, folder or
option, exit status 2, and nothing half-written that looks complete."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tacleaner_cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")


def env() -> dict[str, str]:
    """The environment of a child ``python -m tacleaner``: this checkout's sources first."""
    path = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONWARNINGS", None)  # warnings are part of what these cases check
    return env


def tacleaner(*argv: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tacleaner", *argv], capture_output=True, text=True,
                          timeout=timeout, env=env(), **kw)


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def one_error(code: int, err: str, *needles: str) -> str:
    """The single ``error:`` line of a failed command, checked for ``needles``."""
    assert code == 2, (code, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], (n, err)
    return lines[0]


# -- 5. CSVs saved by other tools: a byte-order mark and CRLF line endings --------------------
def spreadsheet_csv(src: Path, dst: Path, base: Path) -> Path:
    """``src`` rewritten as a spreadsheet saves it: UTF-8 with a BOM, CRLF line endings, image
    paths absolute (``base``: the folder they were relative to)."""
    with open(src, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    col = rows[0].index("image")
    for row in rows[1:]:
        row[col] = str((base / row[col]).resolve())
    with open(dst, "w", newline="", encoding="utf-8-sig") as f:
        csv.writer(f, lineterminator="\r\n").writerows(rows)
    assert dst.read_bytes().startswith(b"\xef\xbb\xbfimage") and b"\r\n" in dst.read_bytes()
    return dst


def test_bom_and_crlf_csvs_are_read_by_every_command(world, tmp_path, capsys):
    pairs = spreadsheet_csv(world / "clean.csv", tmp_path / "pairs.csv", world)
    zs = spreadsheet_csv(world / "zeroshot.csv", tmp_path / "zs.csv", world)
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps(json.loads((world / "classes.json").read_text())), encoding="utf-8-sig")
    poison = ["--quiet", "poison", "--data", str(pairs), "--attack", "badnet", "--target", "1", "--num", "4",
              "--out", str(tmp_path / "p"), "--classes", str(classes)]
    assert main(poison) == 0, capsys.readouterr().err
    manifest = tmp_path / "p" / "data.csv"
    manifest.write_bytes(b"\xef\xbb\xbf" + manifest.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    assert main(["--quiet", "train", "--data", str(manifest), "--model", "tacleaner-tiny-rn", "--out",
                 str(tmp_path / "t"), "--epochs", "1", "--batch-size", "32", "--threads", "1"]) == 0, \
        capsys.readouterr().err
    from tacleaner.data.pairs import read_pairs

    table = read_pairs(pairs)
    assert table.captions[0] == read_pairs(world / "clean.csv").captions[0]  # no stray \r, no BOM
    assert main(["--quiet", "evaluate", "--checkpoint", str(tmp_path / "t" / "model.safetensors"), "--data",
                 str(zs), "--classes", str(classes), "--trigger", str(tmp_path / "p")]) == 0, capsys.readouterr().err
    assert main(["--quiet", "show-trigger", "--trigger", str(tmp_path / "p"), "--data", str(zs), "--out",
                 str(tmp_path / "x.png"), "--num", "2"]) == 0, capsys.readouterr().err
    notes = tmp_path / "captions.txt"
    notes.write_bytes("\ufeffa red circle\r\na blue square\r\n".encode("utf-8"))
    capsys.readouterr()
    assert main(["subtexts", "--captions", str(notes), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["caption"] == "a red circle"


# -- 3. model files that cannot be read: one line naming the file, with the right hint --------
@pytest.fixture(scope="module")
def broken_models(tmp_path_factory) -> dict[str, Path]:
    """A good checkpoint, and the ways a downloaded or copied one goes wrong."""
    import pickle
    import struct

    import torch

    from tacleaner.models import create_model, save_model

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    bundle = create_model("tacleaner-tiny-rn")
    save_model(bundle, root / "good.safetensors")
    good = (root / "good.safetensors").read_bytes()
    torch.save(bundle.model.state_dict(), root / "good.pt")
    pt = (root / "good.pt").read_bytes()
    files = {
        "truncated_safetensors": good[:len(good) // 2],
        "truncated_header": good[:200],
        "header_too_large": struct.pack("<Q", 10**12) + good[8:],
        "random_bytes": bytes(range(256)) * 64,
        "empty": b"",
        "truncated_zip": pt[:len(pt) // 2],
        "pickle_runs_code": None,
    }
    out = {}
    for name, data in files.items():
        path = root / f"{name}.{'pt' if 'zip' in name or 'pickle' in name else 'safetensors'}"
        if data is None:
            class Evil:
                def __reduce__(self):
                    return (os.system, ("true",))

            path.write_bytes(pickle.dumps({"state_dict": Evil()}, protocol=2))
        else:
            path.write_bytes(data)
        out[name] = path
    return out


MODEL_COMMANDS = {
    "evaluate": "evaluate --checkpoint {m} --data {w}/zeroshot.csv --classes {w}/classes.json",
    "evaluate_with_model": "evaluate --checkpoint {m} --model tacleaner-tiny-rn --data {w}/zeroshot.csv "
                           "--classes {w}/classes.json",
    "clean": "clean --defense finetune --checkpoint {m} --data {w}/clean.csv --out {t}/c",
    "clean_with_model": "clean --defense finetune --checkpoint {m} --model tacleaner-tiny-rn --data {w}/clean.csv "
                        "--out {t}/c",
    "scan": "scan --checkpoint {m} --data {w}/zeroshot.csv --classes {w}/classes.json",
    "export": "export --checkpoint {m} --out {t}/x.pt",
    "train_init": "train --init {m} --data {w}/clean.csv --out {t}/c",
    "poison_clean_model": "poison --data {w}/implant.csv --attack badclip --target 1 --num 2 --out {t}/p "
                          "--classes {w}/classes.json --clean-model {m}",
    "show_trigger_clean_model": "show-trigger --attack badclip --target 1 --classes {w}/classes.json "
                                "--clean-model {m} --data {w}/clean.csv --out {t}/x.png",
}
WORDING = {"truncated_safetensors": "corrupt safetensors", "truncated_header": "truncated or corrupt safetensors",
           "header_too_large": "truncated or corrupt safetensors", "random_bytes": "not a model file",
           "empty": "empty file", "truncated_zip": "truncated or corrupt", "pickle_runs_code": "could execute code"}


# Every fault on evaluate (with and without --model); every other command with two of them.
MODEL_CASES = sorted({(c, f) for c in MODEL_COMMANDS for f in WORDING
                      if c.startswith("evaluate") or f in ("truncated_safetensors", "random_bytes")})


@pytest.mark.parametrize("command,fault", MODEL_CASES)
def test_unreadable_model_file_is_one_line_naming_it(command, fault, broken_models, world, tmp_path, capsys):
    """Every command that loads a model, every way a model file is broken: one line naming the
    file and what is wrong with it, never a request for --model, nothing written."""
    import shlex

    model = broken_models[fault]
    argv = shlex.split(MODEL_COMMANDS[command].format(m=model, w=world, t=tmp_path))
    code = main(["--quiet", *argv])
    line = one_error(code, capsys.readouterr().err, str(model), WORDING[fault])
    assert "--model" not in line
    assert not [p for p in tmp_path.iterdir()], "a failed load wrote something"


def test_foreign_checkpoint_without_model_asks_for_it(broken_models, world, capsys):
    """A readable foreign file (no name inside) is the one case that asks for --model."""
    code = main(["evaluate", "--checkpoint", str(broken_models["truncated_zip"].with_name("good.pt")),
                 "--data", str(world / "zeroshot.csv"), "--classes", str(world / "classes.json")])
    one_error(code, capsys.readouterr().err, "good.pt", "does not name its model; pass --model NAME")


def test_unreadable_resume_state_is_one_line(world, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--quiet", "train", "--model", "tacleaner-tiny-rn", "--data", str(world / "clean.csv"), "--out", str(run),
            "--epochs", "2", "--batch-size", "32", "--threads", "1", "--max-steps", "3"]
    assert main(args) == 0
    assert not (run / "train_state.pt").exists()  # a complete run keeps no resume state
    (run / "metadata.json").unlink()  # as if it had stopped before the end, its state cut short
    state = run / "train_state.pt"
    state.write_bytes((run / "model.safetensors").read_bytes()[:1000])
    one_error(main(args + ["--resume"]), capsys.readouterr().err, str(state), "unreadable resume state")


# -- 1. one writer per run folder ----------------------------------------------------------
HOLD = """
import sys, time
from tacleaner.fileio import prepare_run_dir, staged_dir
if sys.argv[2] == "staged":
    with staged_dir(sys.argv[1]):
        print("holding", flush=True)
        time.sleep(float(sys.argv[3]))
else:
    prepare_run_dir(sys.argv[1], resume=True)
    print("holding", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def hold(folder: Path, kind: str = "run", seconds: float = 600) -> subprocess.Popen:
    """Another process writing ``folder`` (through tacleaner's own run-folder code), once it
    has taken the folder."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), kind, str(seconds)], stdout=subprocess.PIPE,
                         text=True, env=env())
    assert p.stdout.readline().strip() == "holding"
    return p


def train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--quiet", "train", "--model", "tacleaner-tiny-rn", "--data", str(data), "--out", str(out),
            "--batch-size", "32", "--threads", "1", *extra]


def test_two_jobs_cannot_write_one_run_folder(world, tmp_path):
    """A job resumes a run folder (as a re-queued cluster job would) while the first still
    trains in it: the second exits 2 with one line naming the folder and the first's pid, and
    leaves the first's log alone."""
    run = tmp_path / "run"
    argv = train_args(world / "clean.csv", run, "--epochs", "500")
    first = subprocess.Popen([sys.executable, "-m", "tacleaner", *argv], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=env())
    try:
        import time

        deadline = time.time() + 120
        while not (run / "log.txt").is_file() and time.time() < deadline and first.poll() is None:
            time.sleep(0.1)
        assert first.poll() is None, first.stderr.read()
        assert (run / ".tacleaner.lock").read_text().strip() == str(first.pid)
        log = (run / "log.txt").read_text()
        second = tacleaner(*argv, "--resume")
        one_error(second.returncode, second.stderr, str(run), f"pid {first.pid}", "in use")
        assert (run / "log.txt").read_text().startswith(log) and "resuming" not in (run / "log.txt").read_text()
        plain = tacleaner(*argv)  # without --resume: not told to pass --resume
        assert "--resume" not in one_error(plain.returncode, plain.stderr, f"pid {first.pid}")
    finally:
        first.kill()
        first.wait()


@pytest.mark.parametrize("command", ["poison", "clean", "run"])
def test_every_writer_refuses_a_folder_in_use(command, world, tmp_path, capsys):
    """poison (a staged folder: its lock sits beside it), clean and run (experiment folder) each
    refuse a folder another process holds, naming it and the holder."""
    import yaml

    out = tmp_path / "out"
    holder = hold(out, "staged" if command == "poison" else "run")
    try:
        argv = {
            "poison": ["poison", "--data", str(world / "implant.csv"), "--attack", "blended", "--target", "1",
                       "--num", "2", "--out", str(out), "--classes", str(world / "classes.json")],
            "clean": ["clean", "--defense", "finetune", "--checkpoint", "CKPT", "--data", str(world / "clean.csv"),
                      "--out", str(out), "--resume"],
            "run": ["run", "CONFIG", "--out", str(out), "--resume"],
        }[command]
        if command == "clean":
            from tacleaner.models import create_model, save_model

            save_model(create_model("tacleaner-tiny-rn"), tmp_path / "m.safetensors")
            argv[argv.index("CKPT")] = str(tmp_path / "m.safetensors")
        if command == "run":
            from test_cli_contract import GOOD_RUN

            (tmp_path / "grid.yaml").write_text(yaml.safe_dump(GOOD_RUN))
            argv[argv.index("CONFIG")] = str(tmp_path / "grid.yaml")
        one_error(main(["--quiet", *argv]), capsys.readouterr().err, str(out), f"pid {holder.pid}", "in use")
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over_with_a_warning(world, tmp_path):
    """SIGKILL leaves the lock file naming a dead process (the kernel has dropped the lock
    itself): the next writer takes it over, says so in one warning line, and finishes."""
    run = tmp_path / "run"
    holder = hold(run)
    dead = holder.pid
    holder.kill()
    holder.wait()
    assert (run / ".tacleaner.lock").read_text().strip() == str(dead)
    done = tacleaner(*train_args(world / "clean.csv", run, "--epochs", "1", "--max-steps", "1", "--resume"))
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and f"process {dead}" in warnings[0] and str(run) in warnings[0], done.stderr
    assert not (run / ".tacleaner.lock").exists()  # released at the end
    assert json.loads((run / "metadata.json").read_text())["completed"]
    # a poisoning killed while staging: its lock and its unfinished folder are both recovered
    poisoned = tmp_path / "p"
    holder = hold(poisoned, "staged")
    holder.kill()
    holder.wait()
    assert [p.name for p in tmp_path.glob(".p.partial-*")]
    done = tacleaner("--quiet", "poison", "--data", str(world / "implant.csv"), "--attack", "blended", "--target",
                     "1", "--num", "2", "--out", str(poisoned), "--classes", str(world / "classes.json"))
    assert done.returncode == 0, done.stderr
    assert len([line for line in done.stderr.splitlines() if line.startswith("warning:")]) == 2, done.stderr
    assert not list(tmp_path.glob(".p.*")) and (poisoned / "manifest.json").is_file()


# -- 2. every skipped sample counted where a user looks ---------------------------------------
def _add(tar, name: str, data: bytes) -> None:
    import io
    import tarfile

    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_skipped_samples_are_counted_by_cause(world, tmp_path):
    """A shard set (30 samples) where 3 have an image but no caption, 2 a caption but no image
    and 1 an image that does not decode: training says so in log.txt, the epoch summary of
    metrics.jsonl, metadata.json and one warning line."""
    import tarfile

    from tacleaner.data.pairs import read_pairs

    table = read_pairs(world / "clean.csv")
    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        for i in range(30):
            key = f"{i:09d}"
            if i >= 2:  # 0, 1: caption only
                _add(tar, f"{key}.png", b"not a png" if i == 2 else table.images[i].read_bytes())
            if i < 27:  # 27, 28, 29: image only
                _add(tar, f"{key}.txt", table.captions[i].encode())
    run = tmp_path / "run"
    done = tacleaner(*train_args(tmp_path / "00000.tar", run, "--epochs", "1"))
    assert done.returncode == 0, done.stderr
    expected = {"missing_caption": 3, "missing_image": 2, "unreadable_image": 1}
    warnings = [line for line in done.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, done.stderr
    assert "skipped 6 of 30 samples (3 missing caption, 2 missing image, 1 unreadable image)" in warnings[0]
    summary = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {k: summary[f"skipped_{k}"] for k in expected} == expected and summary["pairs"] == 24
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["skipped"] == expected and meta["pairs"] == 25
    log = (run / "log.txt").read_text()
    assert "left out when reading: 3 missing caption, 2 missing image" in log
    assert "skipped 6 samples (3 missing caption, 2 missing image, 1 unreadable image)" in log


def test_images_missing_at_load_time_are_counted_apart(world, tmp_path, capsys):
    """In a CSV, a row whose file is gone counts as a missing image, a corrupt one as unreadable;
    a CSV whose every image is gone is an error naming it."""
    rows = (world / "clean.csv").read_text().splitlines()[:31]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"garbage")
    lines = [rows[0]] + [f"{(world / r.split(',', 1)[0]).resolve()},{r.split(',', 1)[1]}" for r in rows[1:]]
    lines[1] = f"{tmp_path / 'gone.png'},{rows[1].split(',', 1)[1]}"
    lines[2] = f"{broken},{rows[2].split(',', 1)[1]}"
    data = tmp_path / "pairs.csv"
    data.write_text("\n".join(lines) + "\n")
    assert main(train_args(data, tmp_path / "run", "--epochs", "1")) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("warning:")] == [
        f"warning: {data}: skipped 2 of 30 samples (1 missing image, 1 unreadable image); counted in "
        f"{tmp_path / 'run' / 'log.txt'}, metrics.jsonl and metadata.json"], err
    assert json.loads((tmp_path / "run" / "metadata.json").read_text())["skipped"] == {
        "missing_caption": 0, "missing_image": 1, "unreadable_image": 1}
    gone = tmp_path / "gone.csv"
    gone.write_text("image,caption\n" + "".join(f"nowhere{i}.png,a red circle\n" for i in range(8)))
    code = main(train_args(gone, tmp_path / "r2", "--epochs", "1"))
    one_error(code, capsys.readouterr().err, str(gone), "no usable batch", "skipped 8 samples (8 missing image)")
    assert not (tmp_path / "r2" / "metadata.json").exists()


def test_evaluation_counts_the_files_it_leaves_out(world, tmp_path, capsys):
    """An ImageFolder tree with a stray non-image file: the evaluation JSON counts it and one
    warning says so; the images themselves are all evaluated."""
    import shutil

    from tacleaner.models import create_model, save_model

    tree = tmp_path / "tree"
    classes = json.loads((world / "classes.json").read_text())["classnames"]
    with open(world / "zeroshot.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        folder = tree / classes[int(row["label"])] if row["label"].isdigit() else tree / row["label"]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(world / row["image"], folder / Path(row["image"]).name)
    (tree / classes[0] / "notes.txt").write_text("not an image")
    save_model(create_model("tacleaner-tiny-rn"), tmp_path / "m.safetensors")
    out = tmp_path / "eval.json"
    assert main(["--quiet", "evaluate", "--checkpoint", str(tmp_path / "m.safetensors"), "--data", str(tree),
                 "--classes", str(world / "classes.json"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("warning:")] == [
        f"warning: {tree}: 1 file(s) not evaluated (1 not an image); counted in {out}"], err
    result = json.loads(out.read_text())
    assert result["skipped"] == {"not_an_image": 1} and result["num_images"] == len(rows)


# -- 4. OS write errors: one line naming the path, nothing half-written that looks complete -----
def limited(max_bytes: int):
    """A child's file size limit: a write past it fails with EFBIG ("File too large"), as a
    full disk fails with ENOSPC (tests run as root, which permissions do not stop)."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))


def leftovers(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.name.endswith(".tmp") or ".partial-" in p.name]


@pytest.mark.parametrize("command,limit,names", [
    ("poison", 3000, "p/data.csv"),
    ("train", 1_000_000, "run/train_state.pt"),
    ("evaluate", 30, "eval.json"),
    ("export", 300_000, "model.pt"),
])
def test_a_full_disk_is_one_line_naming_the_file(command, limit, names, world, tmp_path, broken_models):
    argv = {
        "poison": ["poison", "--data", str(world / "implant.csv"), "--attack", "blended", "--target", "1", "--num",
                   "20", "--out", str(tmp_path / "p"), "--classes", str(world / "classes.json")],
        "train": train_args(world / "clean.csv", tmp_path / "run", "--epochs", "1")[1:],
        "evaluate": ["evaluate", "--model", "tacleaner-tiny-rn", "--data", str(world / "zeroshot.csv"), "--classes",
                     str(world / "classes.json"), "--out", str(tmp_path / "eval.json")],
        "export": ["export", "--checkpoint", str(broken_models["random_bytes"].with_name("good.safetensors")), "--out",
                   str(tmp_path / "model.pt")],
    }[command]
    r = subprocess.run([sys.executable, "-m", "tacleaner", "--quiet", *argv], capture_output=True, text=True,
                       timeout=300, env=env(), preexec_fn=limited(limit))
    one_error(r.returncode, r.stderr, str(tmp_path / names), "cannot write")
    assert not leftovers(tmp_path), leftovers(tmp_path)
    assert not (tmp_path / names).exists()
    assert not (tmp_path / "p").exists() and not (tmp_path / "run" / "metadata.json").exists()


@pytest.mark.parametrize("place", ["under_a_file", "system_folder"])
def test_an_unwritable_place_is_one_line_naming_it(place, world, tmp_path, capsys):
    """A folder where a file is, and a place no one may write (``/sys`` refuses even root)."""
    (tmp_path / "file").write_text("x")
    out = tmp_path / "file" / "run" if place == "under_a_file" else Path("/sys/tacleaner-test/run")
    code = main(train_args(world / "clean.csv", out, "--epochs", "1"))
    one_error(code, capsys.readouterr().err, str(out.parent))
    code = main(["--quiet", "evaluate", "--model", "tacleaner-tiny-rn", "--data", str(world / "zeroshot.csv"),
                 "--classes", str(world / "classes.json"), "--out", str(out.parent / "eval.json")])
    one_error(code, capsys.readouterr().err, str(out.parent))


# -- 6. under torchrun, an error found before the processes join is printed once -------------
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_torchrun_prints_a_device_error_once(command, world, tmp_path):
    """`--device cuda` on a machine without CUDA, 2 processes (gloo, CPU): every process finds
    it before the process group forms; LOCAL_RANK 0 prints it, the job fails, nothing else
    repeats it."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    argv = {"train": train_args(world / "clean.csv", tmp_path / "run", "--epochs", "1", "--device", "cuda"),
            "evaluate": ["--quiet", "evaluate", "--model", "tacleaner-tiny-rn", "--data", str(world / "zeroshot.csv"),
                         "--classes", str(world / "classes.json"), "--device", "cuda"]}[command]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
                        "tacleaner", *argv], capture_output=True, text=True, timeout=300, env=env())
    assert r.returncode != 0
    assert error_lines(r.stderr) == ["error: device 'cuda': CUDA is not available on this machine; use --device "
                                     "cpu or auto"], r.stderr[-3000:]
    assert not (tmp_path / "run").exists()
