"""``main(argv)``: parse, run the command's handler, and turn every failure into one line.

Exit status: 0 success, 2 bad input with a one-line ``error:`` message, 1 a bug (one line,
the traceback with ``TACLEANER_TRACEBACK=1``), 130 interrupted.
"""
from __future__ import annotations

import os
import sys
import time

from tacleaner.console import command_console
from tacleaner.errors import SharedError, TacleanerError
from tacleaner.fileio import release_all_locks

from .parser import build_parser

MULTI_PROCESS = ("train", "clean", "evaluate", "detect", "run", "demo")  # the commands torchrun may start on several processes
RESUMABLE = ("train", "clean", "run", "demo", "audit")  # the commands whose interrupted run folder --resume continues
REPEAT_GRACE_S = 5.0  # how long torchrun's other processes hold back an error line


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed its one-line usage error (or the help)
        return int(e.code or 0)
    with command_console():
        try:
            _check_launcher(args.command)
            return args.handler(args)
        except SharedError:  # rank 0 prints it and fails the job; a rank that failed first could get
            return 0          # rank 0 stopped by torchrun before it printed (seen: the message lost)
        except TacleanerError as e:
            _report(f"error: {_one_line(e)}")
            return 2
        except KeyboardInterrupt:
            _report("interrupted; " + ("rerun with --resume to continue" if args.command in RESUMABLE else
                                       "nothing half-written was left behind"), hold=False)
            return 130
        except OSError as e:  # disk full, permissions: the system's words, naming the file
            where = f"{e.filename}: " if e.filename else ""
            _report(f"error: {where}{e.strerror or e}")
            return 2
        except Exception as e:  # a bug: one line, the traceback on request
            if os.environ.get("TACLEANER_TRACEBACK"):
                raise
            first = str(e).splitlines()[0] if str(e) else ""
            _report(f"error: unexpected {type(e).__name__}: {first} (set TACLEANER_TRACEBACK=1 for the traceback; "
                    "please report it)")
            return 1
        finally:
            release_all_locks()  # the command's run folders are free for the next writer
            _leave_job()


def _one_line(e: Exception) -> str:
    """The message of an error; one raised in a DataLoader worker arrives wrapped in the
    worker's traceback ("Caught TacleanerError in DataLoader worker process 0 ... Original
    Traceback ..."): its last line is the message."""
    text = str(e)
    if "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        return last.split("TacleanerError: ", 1)[-1]
    return text.splitlines()[0] if text else type(e).__name__


def _report(line: str, hold: bool = True) -> None:
    """Print a failed command's line on stderr: at once in a single process and in the first
    process of each machine (LOCAL_RANK 0); in torchrun's other processes only after
    :data:`REPEAT_GRACE_S` seconds, marked with their rank. Errors found before the processes
    join (a device that is not there, a bad option) are the same in every process: the first
    prints it, exits 2, and torchrun stops the others while they wait, so the job fails once,
    with one line. An error a process meets alone is still printed, a few seconds late. Ctrl-C
    (``hold`` False) reaches every process at once: only the first of each machine says so."""
    world, local = os.environ.get("WORLD_SIZE", "1"), os.environ.get("LOCAL_RANK", "0")
    if world not in ("", "1") and local != "0":
        if not hold:
            return
        time.sleep(REPEAT_GRACE_S)
        line = line.replace("error: ", f"error: rank {os.environ.get('RANK', local)}: ", 1)
    print(line, file=sys.stderr, flush=True)


def _check_launcher(name: str) -> None:
    """Under torchrun, only the commands that share work across processes may start."""
    if os.environ.get("WORLD_SIZE", "1") not in ("", "1") and name not in MULTI_PROCESS:
        raise (TacleanerError if os.environ.get("RANK", "0") == "0" else SharedError)(
            f"{name} runs in one process; start it without torchrun (torchrun runs {', '.join(MULTI_PROCESS)})")


def _leave_job() -> None:
    """End this process's part in a torchrun job, if the command joined one."""
    if "torch" in sys.modules:
        import torch.distributed as td

        if td.is_available() and td.is_initialized():
            td.destroy_process_group()
