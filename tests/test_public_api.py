"""The public face: what ``tacleaner`` exports, its version, and the generated reference pages."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "scripts" / "gen_reference.py")
gen_reference = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gen_reference)


def test_version_is_the_installed_one_and_a_release_in_the_changelog():
    import tacleaner

    assert tacleaner.__version__ == importlib.metadata.version("tacleaner")
    assert re.fullmatch(r"\d+\.\d+\.\d+", tacleaner.__version__)
    releases = re.findall(r"(?m)^## (\d+\.\d+\.\d+) \((\d{4}-\d\d-\d\d)\)$", (ROOT / "CHANGELOG.md").read_text())
    assert releases[0][0] == tacleaner.__version__  # the newest release is this version
    assert [r[1] for r in releases] == sorted((r[1] for r in releases), reverse=True)  # newest first, by date


def test_every_export_resolves_lazily_and_unknown_names_fail():
    import tacleaner

    src = str(ROOT / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    probe = "import json, sys, tacleaner; print(json.dumps('torch' in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=60)
    assert json.loads(done.stdout) is False  # importing the package loads no torch
    for name in tacleaner.EXPORTS:
        obj = getattr(tacleaner, name)
        assert obj.__name__ == name and name in dir(tacleaner)
    assert tacleaner.create_defense("cleanclip", w_inmodal=0.5).w_inmodal == 0.5
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tacleaner.nope  # noqa: B018


def test_the_docs_import_only_what_is_exported():
    import tacleaner

    used = set()
    for page in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]:
        for grouped, single in re.findall(r"from tacleaner import (?:\(([^)]*)\)|([^\n(]+))", page.read_text()):
            used |= {n.strip() for n in (grouped or single).replace("\n", ",").split(",") if n.strip()}
    assert used and used <= set(tacleaner.EXPORTS), used - set(tacleaner.EXPORTS)


def test_the_reference_pages_are_current():
    for key, make in (("cli", gen_reference.cli_markdown), ("api", gen_reference.api_markdown)):
        assert gen_reference.PAGES[key].read_text() == make(), f"run python scripts/gen_reference.py ({key})"
    api = gen_reference.PAGES["api"].read_text()
    assert "(no docstring)" not in api and "### `create_defense`" in api
    assert "## tacleaner report" in gen_reference.PAGES["cli"].read_text()
