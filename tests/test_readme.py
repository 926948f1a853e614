"""The README is short, and every demo output it and the tutorial quote is in the recorded run,
word for word (docs/research/data/demo-run.json, made by research/demo_record.py)."""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "docs" / "research" / "data" / "demo-run.json"
MARK = "<!-- demo-record -->"


def quoted_blocks(page: Path) -> list[str]:
    """The indented block after each demo-record mark of ``page``, dedented."""
    blocks = []
    for part in page.read_text().split(MARK)[1:]:
        lines = part.lstrip("\n").splitlines()
        block = []
        for line in lines:
            if line and not line.startswith("    "):
                break
            block.append(line)
        blocks.append(textwrap.dedent("\n".join(block)).strip("\n"))
    return blocks


def minutes(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s} s"


def test_the_readme_is_short():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 300
    assert len(re.findall(r"\S+", text)) <= 1700  # about 1,500 words


def test_every_quoted_demo_output_is_in_the_recorded_run():
    record = json.loads(RECORD.read_text())
    printed = record["stdout"]
    readme = ROOT / "README.md"
    pages = {readme: quoted_blocks(readme), ROOT / "docs" / "tutorial.md": quoted_blocks(ROOT / "docs" / "tutorial.md")}
    assert len(pages[readme]) >= 1 and all(pages.values())
    for page, blocks in pages.items():
        for block in blocks:
            assert len(block.splitlines()) >= 3, f"{page.name}: an empty quote"
            assert block in printed, f"{page.name}: this block is not in {RECORD.name}:\n{block}"
    text = readme.read_text()
    assert f"in {minutes(record['wall_s'])}, quoted from the" in text  # the time the record measured
    assert "Intel" in record["cpu_model"] and "Xeon" in record["cpu_model"] and record["cores"] == 2
    assert "2-core Intel Xeon" in text
    assert record["command"].startswith("tacleaner demo")
    # the verdict words the README explains are the ones the run printed
    assert any("removed" in b and "reduced" in b for b in pages[readme])
