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
from typing import Any, Callable


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
    from .console import show_warning

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


def run_tasks(tasks: list[Task], jobs: int = 1) -> None:
    """Run ``tasks`` respecting ``deps``; with ``jobs`` > 1 in that many spawned processes.

    Tasks start in list order among those whose dependencies are done. The first failure is
    re-raised after the tasks already running have finished (their run folders stay
    resumable); nothing new starts after it.
    """
    keys = {t.key for t in tasks}
    for t in tasks:
        missing = [d for d in t.deps if d not in keys]
        if missing:
            raise ValueError(f"task {t.key} depends on unknown task {missing[0]}")
    if jobs <= 1:
        done: set[str] = set()
        for t in _topological(tasks):
            t.fn(*t.args)
            done.add(t.key)
        return
    pending = list(tasks)
    done = set()
    running: dict[Future, Task] = {}
    error: BaseException | None = None
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                               initargs=(os.getpid(),))
    try:
        while (pending and error is None) or running:
            if error is None:
                for t in list(pending):
                    if len(running) >= jobs:
                        break
                    if all(d in done for d in t.deps):
                        running[pool.submit(t.fn, *t.args)] = t
                        pending.remove(t)
            if not running:
                raise ValueError(f"tasks with unmet dependencies: {', '.join(t.key for t in pending)}")
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                t = running.pop(f)
                exc = f.exception()
                if exc is not None:
                    error = error or exc
                else:
                    done.add(t.key)
        if error is not None:
            raise error
    except KeyboardInterrupt:
        for p in list(getattr(pool, "_processes", {}).values()):
            p.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _topological(tasks: list[Task]) -> list[Task]:
    """List order, moving each task after its dependencies."""
    done: set[str] = set()
    out: list[Task] = []
    pending = list(tasks)
    while pending:
        ready = next((t for t in pending if all(d in done for d in t.deps)), None)
        if ready is None:
            raise ValueError(f"tasks with unmet dependencies: {', '.join(t.key for t in pending)}")
        out.append(ready)
        done.add(ready.key)
        pending.remove(ready)
    return out
