"""The packages stay easy to read: no import cycle between its modules (imports inside functions
count) and no function longer than 80 lines. Read from the sources with ``ast``."""
from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MAX_FUNCTION_LINES = 80


def modules() -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package's __init__)."""
    out = {}
    for f in sorted([*(SRC / "tacleaner").rglob("*.py"), *(SRC / "tacleaner_cli").rglob("*.py")]):
        parts = list(f.relative_to(SRC).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    return out


def imported(name: str, tree: ast.AST, is_pkg: bool, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its body; ``from X import y``
    counts X and, when it is a module, X.y; relative imports resolved."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [source, *(f"{source}.{a.name}" for a in node.names)]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imported(m, ast.parse(f.read_text(encoding="utf-8")), is_pkg, known)
            for m, (f, is_pkg) in mods.items()}


def test_the_scan_sees_imports_inside_functions():
    tree = ast.parse("def f():\n    from .b import c\n    import a.d\n")
    assert imported("a.x", tree, False, {"a.b", "a.b.c", "a.d", "a.x"}) == {"a.b", "a.b.c", "a.d"}
    with pytest.raises(CycleError):  # what the package test relies on: a circle is an error
        tuple(TopologicalSorter({"a": {"b"}, "b": {"a"}}).static_order())


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert len(graph) > 50 and graph["tacleaner_cli.app"], "the scan found the package's modules and imports"
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as e:
        pytest.fail(f"import cycle: {' -> '.join(e.args[1])}")


def test_no_function_longer_than_80_lines():
    long = []
    for f, _ in modules().values():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{f.relative_to(SRC)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "split these: " + "; ".join(long)


def test_the_library_never_imports_the_application():
    """As open_clip keeps open_clip_train apart: ``tacleaner`` (the library) imports nothing of
    ``tacleaner_cli`` (argv, the command handlers); only ``python -m tacleaner`` starts the app."""
    graph = import_graph()
    assert any(m.startswith("tacleaner_cli.") for m in graph) and graph["tacleaner_cli.parser"]
    leaks = sorted(f"{m} -> {t}" for m, targets in graph.items() if m.startswith("tacleaner.") or m == "tacleaner"
                   for t in targets if t.startswith("tacleaner_cli") and m != "tacleaner.__main__")
    assert not leaks, leaks
