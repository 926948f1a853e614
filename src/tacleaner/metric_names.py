"""The metrics a grid's rows record, by name, and their labels in tables and plots: one list
that the experiment (what a row holds) and the report (what it summarises) both read, so a
metric is added or renamed in one place. Values are fractions in [0, 1]."""
from __future__ import annotations

METRICS = ("clean_acc", "asr_at_1", "asr_at_10")  # every row's test metrics, also recorded as val_<name>
KEY_METRICS = ("asr_image_only_at_1", "asr_text_only_at_1")  # dual-key attacks (TrojVQA-style): each key alone
LABELS = {
    "clean_acc": "CA",
    "asr_at_1": "ASR@1",
    "asr_at_10": "ASR@10",
    "asr_image_only_at_1": "ASR@1, image trigger alone",
    "asr_text_only_at_1": "ASR@1, text key alone",
}
