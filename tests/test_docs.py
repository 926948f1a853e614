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


PROCESS_WORDS = re.compile(r"\b(sessions?|teams?|sittings?|issues?|we|our team|I)\b")


def test_no_page_speaks_of_who_did_the_work_or_in_what_sittings():
    """The pages say what was measured, when, on what machine, with which command: never by whom
    or in which sitting ("an earlier session", "another team", "the issue's goal")."""
    found = []
    for page in _pages():
        for n, line in enumerate(page.read_text().splitlines(), 1):
            for m in PROCESS_WORDS.finditer(line):
                if m.group(0) == "sitting" and re.search(r"-> \"?sitting", line):
                    continue  # a word a subtext swaps, quoted
                if m.group(0) == "I" and re.search(r"(implant<I>|\bI\b[',.)]|[(=,]\s*I\b|\bI\b\s*[=,)])", line):
                    continue  # the image-batch symbol of the formulas, not a person
                found.append(f"{page.relative_to(ROOT)}:{n}: {m.group(0)!r} in {line.strip()[:90]}")
    assert not found, "\n".join(found)
