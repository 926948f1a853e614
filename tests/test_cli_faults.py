"""Faults a user meets at scale, each a contract case: real files and real processes, no mocks
of what is tested (issue 23). Every case ends in one ``error:`` line naming the file, folder or
option, exit status 2, and nothing half-written that looks complete."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tacleaner.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")


def env() -> dict[str, str]:
    """The environment of a child ``python -m tacleaner``: this checkout's sources first."""
    path = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


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
