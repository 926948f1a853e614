"""``tacleaner audit``: from "I downloaded this CLIP model" to a decision, in one run folder.

Steps, each written to its own part of the folder and skipped when a resumed run finds it done:

1. ``split/``: the labelled images in a validation and a test half (:mod:`.split`).
2. ``scan/``: the scan of the model on the validation half (and of ``--base``, the model it was
   fine-tuned from, when given: then the scan ranks what fine-tuning added), its decision and
   the inverted trigger of the suspected class.
3. ``detect/`` (with ``--data``): every training pair scored, the most suspicious listed, the
   rest written as ``detect/clean.csv``.
4. ``clean/`` (with ``--clean-data``): the defender's rule over the candidates
   (:mod:`.cleaning`), the chosen model scanned again, and clean accuracy before and after on
   the test half with bootstrap intervals (:mod:`.accuracy`).
5. ``report.json``, ``report.md``, ``report.html`` (:mod:`.report`).
"""
from __future__ import annotations

from .run import AuditInputs, run_audit

__all__ = ["AuditInputs", "run_audit"]
