"""The Python-API example (docs/python-api.md) runs as written and prints its metrics."""
import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "python_api.py"


def test_python_api_example_runs(world, tmp_path):
    proc = subprocess.run([sys.executable, str(EXAMPLE), str(world), str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["implant", "cleanclip"]
    for line in lines:
        values = [float(x) for x in re.findall(r"\d\.\d{3}", line)]
        assert len(values) == 3 and all(0 <= v <= 1 for v in values)
    assert (tmp_path / "out" / "poison" / "manifest.json").is_file()


def test_the_docs_show_the_example_verbatim():
    readme = (EXAMPLE.parents[1] / "docs" / "python-api.md").read_text()
    body = EXAMPLE.read_text().split('"""', 2)[2].strip()
    indented = "\n".join("    " + line if line else "" for line in body.splitlines())  # a Markdown code block
    assert indented in readme
