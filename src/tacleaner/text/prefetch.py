"""Subtexts ahead of time: the next epoch's captions parsed in one background process while the
current epoch trains, so TA-Cleaner's parsing leaves the critical path. The worker builds its
own generator from the same config and vocabulary; subtexts depend only on those and on the
caption, so prefetched and inline subtexts are identical (tested)."""
from __future__ import annotations

import multiprocessing
from typing import Any

from .subtext_config import SubtextConfig, Subtexts

_GENERATOR: Any = None  # the worker's SubtextGenerator


def _init(cfg: SubtextConfig, vocabulary: list[str]) -> None:
    global _GENERATOR
    import logging

    from .subtexts import SubtextGenerator

    logging.getLogger().setLevel(logging.ERROR)
    _GENERATOR = SubtextGenerator(cfg, vocabulary=vocabulary)


def _generate(captions: list[str]) -> list[Subtexts]:
    return _GENERATOR.generate(captions)


class SubtextPrefetcher:
    """One spawned worker process; :meth:`submit` a caption list under a key, :meth:`take` its
    subtexts later (waiting if needed); :meth:`close` ends the worker, finished or not."""

    def __init__(self, cfg: SubtextConfig, vocabulary: list[str]) -> None:
        from dataclasses import replace

        ctx = multiprocessing.get_context("spawn")  # no fork of a process holding torch threads
        # A pool worker is a daemon and may not start spaCy's own processes.
        self._pool = ctx.Pool(1, initializer=_init, initargs=(replace(cfg, n_process=1), list(vocabulary)))
        self._pending: dict[Any, Any] = {}

    def submit(self, key: Any, captions: list[str]) -> None:
        self._pending[key] = self._pool.apply_async(_generate, (captions,))

    def take(self, key: Any) -> list[Subtexts] | None:
        """The subtexts submitted under ``key``, or None if nothing was."""
        result = self._pending.pop(key, None)
        return None if result is None else result.get()

    def close(self) -> None:
        self._pool.terminate()
        self._pool.join()
        self._pending.clear()
