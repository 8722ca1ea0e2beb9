"""The one error path of every command: a user error is one line ``<prog>: error: …`` and exit code 2.

Hydra commands (``faig-train``, ``faig-attribute``) also record each job's status in ``<run>/status.json``
(``running`` → ``complete`` | ``failed``) and log to ``<run>/<job>.log``. In a multirun a failed job does not stop
the other jobs; the command exits 2 at the end, naming the failed jobs.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from faig_lightning.atomic import atomic_write_text
from faig_lightning.errors import FaigError

USER_ERROR_EXIT = 2
STATUS_FILE = "status.json"

log = logging.getLogger("faig_lightning")
_failed_jobs: list[str] = []


class ConsoleFilter(logging.Filter):
    """Keeps records logged with ``extra={"file_only": True}`` off the console (they go to the run's log file)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False)


def user_error(exc: BaseException | None) -> FaigError | None:
    """The FaigError behind ``exc`` (Hydra's ``instantiate`` wraps the errors of the objects it builds), if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, FaigError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(no message)"


def report_user_error(prog: str, err: FaigError) -> str:
    """Log ``err`` to the run's log file and print ``<prog>: error: …`` on stderr; return that line."""
    line = f"{prog}: error: {_one_line(str(err))}"
    if logging.getLogger().handlers:  # a run folder's log file (Hydra); else logging's last resort would repeat it
        log.error(line, extra={"file_only": True})
    print(line, file=sys.stderr, flush=True)
    return line


@contextmanager
def exit_on_user_error(prog: str) -> Iterator[None]:
    """Turn a user error into one line on stderr and exit code 2; other exceptions propagate unchanged."""
    try:
        yield
    except Exception as exc:
        err = user_error(exc)
        if err is None:
            log.exception("%s: unexpected error", prog, extra={"file_only": True})
            raise
        report_user_error(prog, err)
        raise SystemExit(USER_ERROR_EXIT) from None


def is_rank_zero() -> bool:
    """True in the process that owns the run folder (not a DDP worker started by Lightning)."""
    return all(os.environ.get(k, "0") in ("", "0") for k in ("LOCAL_RANK", "NODE_RANK", "RANK"))


def write_status(run_dir: Path, status: str, **extra: Any) -> None:
    """``<run>/status.json``: ``running``, ``complete`` or ``failed`` (with ``error``), atomically."""
    if not is_rank_zero():
        return
    record = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), "argv": sys.argv[1:], **extra}
    atomic_write_text(run_dir / STATUS_FILE, json.dumps(record, indent=2) + "\n")


def route_library_logs() -> None:
    """Send Lightning's own log records through the root logger (Hydra's console and ``<run>/<job>.log``)."""
    for name in ("pytorch_lightning", "lightning_fabric", "lightning"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True


def record_failure(what: str, line: str) -> None:
    """Remember a failed multirun job (or sweep summary) so the command exits 2 after the sweep."""
    _failed_jobs.append(f"{what} ({line.split(': error: ', 1)[-1][:160]})")


def run_job(prog: str, run_dir: Path, multirun: bool, job: Callable[[], Any]) -> Any:
    """Run one Hydra job with its status file; a user error fails the job with one line.

    A single run exits with code 2; a multirun job is recorded as failed and the sweep goes on.
    """
    route_library_logs()
    write_status(run_dir, "running")
    try:
        result = job()
    except Exception as exc:
        err = user_error(exc)
        if err is None:
            write_status(run_dir, "failed", error=f"{type(exc).__name__}: {_one_line(str(exc))[:500]}")
            log.exception("%s: unexpected error", prog, extra={"file_only": True})
            raise
        line = report_user_error(prog, err)
        write_status(run_dir, "failed", error=_one_line(str(err)))
        if not multirun:
            raise SystemExit(USER_ERROR_EXIT) from None
        record_failure(f"job {run_dir.name}", line)
        return None
    write_status(run_dir, "complete")
    return result


def main_with_exit_code(prog: str, hydra_main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` function; exit 2 naming the failed jobs when a multirun had any."""
    _failed_jobs.clear()
    with exit_on_user_error(prog):
        hydra_main()
    if _failed_jobs:
        print(f"{prog}: error: {len(_failed_jobs)} job(s) failed: {'; '.join(_failed_jobs)}", file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT)
