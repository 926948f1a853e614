"""A run's log through the stdlib's ``logging``: each line goes to the run folder's ``log.txt``
with its time, and to the console unless quiet, through tqdm's logging bridge so that a line
written while a progress bar is shown does not break the bar.

Training (``train.py``) and the experiment (its ``log.txt`` at the top of the experiment
folder) both log through :class:`RunLog`; only the main process of a distributed job writes.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from tqdm.contrib.logging import logging_redirect_tqdm

from .fileio import append_line

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"  # log.txt: "2025-01-31 12:00:00 epoch 1/2: loss ..."


class LineFileHandler(logging.Handler):
    """Appends each record to ``path`` as one line (:func:`~.fileio.append_line`: a failed write
    never leaves half a line, and its error names the file). The file is opened per line, so a
    run that is killed holds nothing open; a write error is raised, not swallowed, as any other
    write of the run folder is."""

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)

    def emit(self, record: logging.LogRecord) -> None:
        append_line(self.path, self.format(record))


class StdoutHandler(logging.StreamHandler):
    """Lines to ``sys.stdout`` as it is when each line is written (as ``print`` and
    ``tqdm.write`` find it), not as it was when the log was made: a caller or a test may
    redirect it in between."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass  # always the current sys.stdout


class RunLog:
    """``log(msg)``: one line to ``path`` (``log.txt``, with the time) and, unless ``quiet``, to
    stdout; nothing where not ``enabled`` (the other ranks of a distributed job).

    The lines go through a logger of the run's own, outside logging's tree of named loggers,
    and are handed to its handlers directly (``Logger.handle``): what silences other libraries'
    logging (the CLI's ``logging.disable``, the root logger's level in worker processes) must
    not drop a run's record of itself, and one run's lines must not reach another's file (an
    experiment's ``log.txt`` and its stages' own)."""

    def __init__(self, path: str | Path, quiet: bool = False, enabled: bool = True) -> None:
        self.path, self.quiet, self.enabled = Path(path), quiet, enabled
        self.logger = logging.Logger(f"tacleaner.run:{self.path}")
        self.logger.propagate = False
        file = LineFileHandler(self.path)
        file.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt=TIME_FORMAT))
        self.logger.addHandler(file)
        if not quiet:
            self.logger.addHandler(StdoutHandler())  # the message alone, as the console has always shown it

    def __call__(self, msg: str) -> None:
        if not self.enabled:
            return
        record = self.logger.makeRecord(self.logger.name, logging.INFO, __file__, 0, msg, None, None)
        if self.quiet:  # log.txt alone (the bridge would add a console handler of its own)
            self.logger.handle(record)
            return
        # The bridge is entered per line: the log is called inside the training loop's bars and
        # outside them, and within it the console line goes out through tqdm.write.
        with logging_redirect_tqdm(loggers=[self.logger]):
            self.logger.handle(record)
