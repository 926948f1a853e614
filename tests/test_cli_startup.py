"""`tacleaner --help` and `tacleaner CMD --help` start fast: no heavy library is imported to
print them. Asserted on what a fresh process has imported, a deterministic stand-in for the
one-second target (torch alone takes seconds to import on a small CPU)."""
import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "torchvision", "open_clip", "spacy", "numpy", "PIL", "tacleaner.defenses", "tacleaner.attacks",
         "tacleaner.models", "tacleaner.detect", "tacleaner.experiment")

PROBE = """
import contextlib, io, json, sys
from tacleaner_cli import build_parser, main

sub = next(a for a in build_parser()._actions if a.dest == "command")
codes = {}
for argv in [["--help"]] + [[name, "--help"] for name in sub.choices]:
    with contextlib.redirect_stdout(io.StringIO()):
        codes[" ".join(argv)] = main(argv)
heavy = sorted({m.split(".")[0] if not m.startswith("tacleaner.") else ".".join(m.split(".")[:2])
                for m in sys.modules} & set(json.loads(sys.argv[1])))
print(json.dumps({"codes": codes, "heavy": heavy}))
"""


def test_help_imports_no_heavy_library():
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", PROBE, json.dumps(HEAVY)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert len(result["codes"]) == 18 and set(result["codes"].values()) == {0}, result["codes"]
    assert result["heavy"] == [], f"--help imported {result['heavy']}"


def test_light_name_lists_match_the_library():
    """Choices the parser names without importing the module that defines them."""
    from tacleaner.models import EXPORT_FORMATS
    from tacleaner_cli.export import FORMATS

    assert sorted(FORMATS) == sorted(EXPORT_FORMATS)
    from tacleaner.text.negative_modes import NEGATIVE_MODES as REGISTERED
    from tacleaner_cli.subtexts import NEGATIVE_MODES

    assert NEGATIVE_MODES == REGISTERED
