"""Write the generated reference pages: every command's ``--help`` (docs/reference/cli.md) and
every function ``tacleaner`` exports, with its signature and docstring (docs/reference/api.md).

    python scripts/gen_reference.py          # rewrite both pages
    python scripts/gen_reference.py --check  # exit 1 when a page is out of date (the test suite does this)
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import io
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = {"cli": ROOT / "docs" / "reference" / "cli.md", "api": ROOT / "docs" / "reference" / "api.md"}
WIDTH = "100"  # argparse wraps help at the terminal's width: fixed, so the page is the same everywhere


def cli_markdown() -> str:
    os.environ["COLUMNS"] = WIDTH
    from tacleaner_cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    lines = ["# Command reference", "", "Back to the [documentation](../index.md). Generated from the parser by "
             "`python scripts/gen_reference.py`; `tacleaner COMMAND --help` prints the same.", "",
             "Exit status: 0 success, 2 bad input (one `error:` line naming the file, row or option), 1 a bug, "
             "130 interrupted ([errors.md](../errors.md)).", "", "## tacleaner", "", "```", parser.format_help().rstrip(),
             "```"]
    for name, p in sub.choices.items():
        lines += ["", f"## tacleaner {name}", "", "```", p.format_help().rstrip(), "```"]
    return "\n".join(lines) + "\n"


def api_markdown() -> str:
    import tacleaner

    lines = ["# Python API reference", "", "Back to the [documentation](../index.md); a worked example: "
             "[python-api.md](../python-api.md). Generated from the docstrings by `python scripts/gen_reference.py`.",
             "", f"`tacleaner.__version__` is the installed version ({tacleaner.__version__} when this page was made). "
             "Every name below is importable from `tacleaner` itself; each loads its module (and torch) on first use. "
             "`tacleaner.train`, `.evaluate`, `.scan` and `.detect` are the functions; their modules' other names are "
             "imported from the module (`from tacleaner.scan import format_report`).", ""]
    by_module: dict[str, list[str]] = {}
    for name, module in tacleaner.EXPORTS.items():
        by_module.setdefault(module, []).append(name)
    for module, names in by_module.items():
        lines += [f"## `{module}`", ""]
        for name in names:
            obj = getattr(tacleaner, name)
            try:
                sig = str(inspect.signature(obj))
            except (TypeError, ValueError):
                sig = ""
            kind = "class" if inspect.isclass(obj) else "def"
            doc = inspect.getdoc(obj) or "(no docstring)"
            lines += [f"### `{name}`", "", "```python", f"{kind} {name}{sig}", "```", "", doc, ""]
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only check that the pages are current")
    args = ap.parse_args()
    stale = []
    for key, make in (("cli", cli_markdown), ("api", api_markdown)):
        with contextlib.redirect_stdout(io.StringIO()):
            text = make()
        page = PAGES[key]
        if args.check:
            if not page.is_file() or page.read_text() != text:
                stale.append(page.relative_to(ROOT).as_posix())
        else:
            page.write_text(text)
    if stale:
        print(f"out of date: {', '.join(stale)} (run python scripts/gen_reference.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
