"""research/detect_grid.py's page: a section's n names what it counts, worlds or the backdoored
models of one world, and its AUROC interval is over those units."""
from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "research" / "detect_grid.py"
spec = importlib.util.spec_from_file_location("detect_grid", SCRIPT)
detect_grid = importlib.util.module_from_spec(spec)
spec.loader.exec_module(detect_grid)


def _row(world: int, unit: str, auroc: float) -> dict:
    row = {"world": world, "attack": "trojvqa", "unit": unit, "rows": 10000, "poisoned": 500}
    for which in ("backdoored", "clean"):
        for name, _, _ in detect_grid.SETTINGS:
            row[f"{which}/{name}"] = {"auroc": auroc, "recall_at_poison_count": 0.5}
    return row


def test_worlds_are_counted_as_worlds():
    page = detect_grid.page([_row(w, "implant0", 0.9 + w / 100) for w in (0, 1, 2)], None, "cmd")
    assert "## trojvqa (n = 3 worlds: 0, 1, 2; 500 of 10000 rows poisoned)" in page


def test_implant_seeds_of_one_world_are_not_called_worlds():
    page = detect_grid.page([_row(0, f"implant{i}", 0.9 + i / 100) for i in (0, 1, 2)], None, "cmd")
    assert "n = 3 backdoored models: world 0 implant0, world 0 implant1, world 0 implant2;" in page
    assert "worlds: 0, 0, 0" not in page
    assert "| backdoored | density (64, 1024) | 0.910 [" in page  # the mean over the three models
