"""Run a list of stages with dependencies, one at a time or in parallel worker processes.

Experiment stages are independent once their inputs exist (the defenses of one backdoored
model, the implants of several seeds), and on a small CPU two single-threaded processes do
about 1.4-1.5x the work of one two-threaded process on the tiny models. Results do not depend
on ``jobs``: each stage seeds itself and fixes its own thread count.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import warnings
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from graphlib import CycleError, TopologicalSorter
from typing import Any, Callable

from .console import show_warning


@dataclass
class Task:
    """``fn(*args)`` once every task named in ``deps`` has finished. ``fn`` and ``args`` must
    pickle (module-level functions, plain data) when tasks run in worker processes."""

    key: str
    fn: Callable[..., Any]
    args: tuple = ()
    deps: tuple[str, ...] = ()


def _init_worker(parent: int) -> None:
    # The same quieting as the CLI's main(): open_clip's random-init notices, torch's FutureWarnings.
    logging.getLogger().setLevel(logging.ERROR)
    warnings.simplefilter("ignore", FutureWarning)
    warnings.showwarning = show_warning
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker whose parent is gone (killed, even with -9) stops at once instead of training
    on unseen; its stage resumes from the last saved epoch on the next ``--resume``."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


class _Order:
    """The tasks whose dependencies are done, first in list order (``graphlib`` tracks the
    dependencies; the list order decides among the ready ones, so a grid's order is kept)."""

    def __init__(self, tasks: list[Task]) -> None:
        keys = {t.key for t in tasks}
        for t in tasks:
            missing = [d for d in t.deps if d not in keys]
            if missing:
                raise ValueError(f"task {t.key} depends on unknown task {missing[0]}")
        self._tasks = {t.key: t for t in tasks}
        self._index = {t.key: n for n, t in enumerate(tasks)}
        self._sorter: TopologicalSorter[str] = TopologicalSorter({t.key: t.deps for t in tasks})
        try:
            self._sorter.prepare()
        except CycleError as e:
            raise ValueError(f"tasks with unmet dependencies: {', '.join(e.args[1])}") from None
        self._ready: set[str] = set()

    def __bool__(self) -> bool:
        """Some task is not done yet."""
        return self._sorter.is_active()

    def pop(self) -> Task | None:
        """The first ready task in list order, now running; None when none is ready."""
        self._ready.update(self._sorter.get_ready())
        if not self._ready:
            return None
        key = min(self._ready, key=self._index.__getitem__)
        self._ready.remove(key)
        return self._tasks[key]

    def done(self, task: Task) -> None:
        self._sorter.done(task.key)


def run_tasks(tasks: list[Task], jobs: int = 1) -> None:
    """Run ``tasks`` respecting ``deps``; with ``jobs`` > 1 in that many spawned processes.

    Tasks start in list order among those whose dependencies are done. The first failure is
    re-raised after the tasks already running have finished (their run folders stay
    resumable); nothing new starts after it.
    """
    order = _Order(tasks)
    if jobs <= 1:
        while (t := order.pop()) is not None:
            t.fn(*t.args)
            order.done(t)
        return
    _run_parallel(order, jobs)


def _run_parallel(order: _Order, jobs: int) -> None:
    running: dict[Future, Task] = {}
    error: BaseException | None = None
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                               initargs=(os.getpid(),))
    try:
        while (order and error is None) or running:
            while error is None and len(running) < jobs and (t := order.pop()) is not None:
                running[pool.submit(t.fn, *t.args)] = t
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                t = running.pop(f)
                exc = f.exception()
                if exc is not None:
                    error = error or exc
                else:
                    order.done(t)
        if error is not None:
            raise error
    except KeyboardInterrupt:
        for p in list(getattr(pool, "_processes", {}).values()):
            p.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
