"""Every relative link in the README, CHANGELOG and docs/ points at a file in the repository."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)\s]*)?\)")


def _pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_relative_link_resolves():
    broken = []
    for page in _pages():
        for target in LINK.findall(page.read_text()):
            if re.match(r"^[a-z]+:", target):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, "\n".join(broken)


def test_the_research_record_is_apart_and_indexed():
    research = ROOT / "docs" / "research"
    pages = {p.name for p in research.glob("*.md")} - {"index.md"}
    assert not list((ROOT / "docs").glob("results-*.md"))  # every results page lives under docs/research/
    index = (research / "index.md").read_text()
    assert {p for p in pages if f"({p})" not in index} == set()
