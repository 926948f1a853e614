"""Experiment reports: a Markdown table and a PNG chart of CA and ASR per attack and defense."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .fileio import atomic_path, write_text


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def markdown_table(rows: list[dict[str, Any]], clean: dict[str, Any] | None = None,
                   references: list[dict[str, Any]] | None = None) -> str:
    """One line per (attack, defense, seed), metrics in percent. ``references`` are rows for the
    clean model under each attack's trigger (the ASR a model without a backdoor shows)."""
    lines = []
    if clean is not None:
        lines.append(f"Clean model (before any attack): CA {_pct(clean['clean_acc'])}%\n")
    lines += ["| attack | defense | seed | CA % | ASR@1 % | ASR@10 % |", "|---|---|---|---:|---:|---:|"]
    for r in (references or []) + rows:
        lines.append(f"| {r['attack']} | {r['defense']} | {r['seed']} | {_pct(r['clean_acc'])} | "
                     f"{_pct(r['asr_at_1'])} | {_pct(r['asr_at_10'])} |")
    return "\n".join(lines) + "\n"


def write_chart(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Grouped bars: for each attack and defense, CA, ASR@1 and ASR@10 (means over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    keys = list(dict.fromkeys((r["attack"], r["defense"]) for r in rows))
    metrics = (("clean_acc", "CA"), ("asr_at_1", "ASR@1"), ("asr_at_10", "ASR@10"))
    values = np.array([[np.mean([r[m] for r in rows if (r["attack"], r["defense"]) == k and r[m] is not None] or [np.nan])
                        for m, _ in metrics] for k in keys]) * 100
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(keys) + 2), 4))
    x = np.arange(len(keys))
    for j, (_, label) in enumerate(metrics):
        ax.bar(x + (j - 1) * 0.27, values[:, j], width=0.27, label=label)
    ax.set_xticks(x, [f"{a}\n{d}" for a, d in keys])
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.set_title("Zero-shot clean accuracy and attack success per attack / defense")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_reports(rows: list[dict[str, Any]], out: Path, clean: dict[str, Any] | None = None,
                  references: list[dict[str, Any]] | None = None) -> str:
    table = markdown_table(rows, clean, references)
    write_text(out / "results.md", table)
    write_chart(rows, out / "results.png")
    return table
