"""Compact string columns behind read_pairs, and a run stopped after max_steps."""
import json
from pathlib import Path

import numpy as np
import pytest

from tacleaner.data.columns import ColumnBuilder, PathColumn, StringColumn
from tacleaner.data.pairs import read_pairs


def test_string_column_round_trips_any_text():
    texts = ["a dog", "", "café au lait — ünïcode ✓", "x" * 1000, "comma, \"quoted\"\nnewline"] * 30000
    col = StringColumn.build(texts)
    assert len(col) == len(texts) and list(col) == texts
    assert col[2] == texts[2] and col[-1] == texts[-1] and col[3:6] == texts[3:6]
    assert col == texts
    with pytest.raises(IndexError):
        col[len(texts)]
    # one buffer and the offsets, no object per row
    assert col.nbytes == sum(len(t.encode()) for t in texts) + 8 * (len(texts) + 1)


def test_builder_keeps_order_across_its_chunks():
    b = ColumnBuilder()
    for i in range(200_000):
        b.append(str(i))
    col = b.finish()
    assert col[0] == "0" and col[65535] == "65535" and col[65536] == "65536" and col[-1] == "199999"


def test_path_column_joins_relative_and_keeps_absolute(tmp_path):
    col = PathColumn(tmp_path, StringColumn.build(["a/b.png", "../c.jpg", "/abs/d.png", "./e.png"]))
    assert list(col) == [tmp_path / "a" / "b.png", tmp_path.parent / "c.jpg",
                         Path("/abs/d.png"), tmp_path / "e.png"]
    assert col[1] == tmp_path.parent / "c.jpg"


def test_read_pairs_streams_into_columns(world):
    table = read_pairs(world / "clean.csv")
    assert isinstance(table.captions, StringColumn) and isinstance(table.images, PathColumn)
    assert all(p.is_file() for p in table.images)
    rows = (world / "clean.csv").read_text().splitlines()
    assert len(table) == len(rows) - 1 and table.captions[0] == rows[1].split(",", 1)[1].strip().strip('"')


def test_blank_lines_are_skipped_and_rows_numbered(tmp_path):
    (tmp_path / "d.csv").write_text("image,caption\nx.png,a cat\n\ny.png,\n")
    from tacleaner.errors import TacleanerError

    with pytest.raises(TacleanerError, match="row 3: empty caption"):
        read_pairs(tmp_path / "d.csv")


def test_max_steps_stops_the_run(world, tmp_path):
    from tacleaner.defenses import create_defense
    from tacleaner.models import create_model
    from tacleaner.train import TrainConfig, train

    out = tmp_path / "run"
    train(create_model("tacleaner-tiny-rn"), read_pairs(world / "clean.csv"), create_defense("cleanclip"),
          TrainConfig(epochs=3, batch_size=16, max_steps=4, threads=1), out, progress=False)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["completed"] and meta["steps"] == 4
    summaries = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s["epoch"] for s in summaries if s.get("summary")] == [1]
    assert np.isfinite([s["loss"] for s in summaries if s.get("summary")]).all()
