"""The one error path of every command: a user error is one line ``<prog>: error: …`` and exit code 2.

Hydra commands (``faig-train``, ``faig-attribute``) also record each job's status in ``<run>/status.json``
(``running`` → ``complete`` | ``failed`` | ``interrupted``), hold ``<run>/.lock`` while a job runs (a second copy
in the same folder is refused) and log to ``<run>/<job>.log``. In a multirun a failed job does not stop the other
jobs; the command exits 2 at the end, naming the failed jobs. SIGTERM (what SLURM sends at a time limit or
preemption), SIGUSR1 (SLURM's early warning with ``--signal=USR1@<seconds>``) and SIGINT (Ctrl-C) end the job with
status ``interrupted`` and exit code 128 + the signal's number; while a trainer runs, they stop it after the current
step with ``last.ckpt`` saved (``faig_lightning.train``), and the same command run again resumes from there.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback as HydraCallback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, read_write

from faig_lightning import __version__
from faig_lightning.errors import FaigError
from faig_lightning.run_folder import STATUS_FILE, RunFolder, UnreadableRecord

USER_ERROR_EXIT = 2
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
CONFIG_OPTIONS = ("--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd")
"""Hydra's command-line options that choose the config (kept when a DDP worker re-runs one job of a multirun)."""
DDP_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")
"""What Lightning's DDP launcher sets in the process that starts the workers."""

log = logging.getLogger("faig_lightning")
_failed_jobs: list[str] = []
_state: dict[str, Any] = {"prog": "faig", "job_started": False, "launched": False, "signal": None, "stopping": False}


class Interrupted(BaseException):
    """SIGTERM, SIGINT or SIGUSR1 ended the job (a BaseException, like KeyboardInterrupt: no ``except Exception``
    eats it)."""

    def __init__(self, signum: int, detail: str = "") -> None:
        super().__init__(signum, detail)
        self.signum, self.detail = signum, detail

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


class FolderInUse(FaigError):
    """Another live process holds the run folder's lock."""


class ConsoleFilter(logging.Filter):
    """Keeps records logged with ``extra={"file_only": True}`` off the console (they go to the run's log file)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "file_only", False)


def user_error(exc: BaseException | None, folder: Path | None = None) -> FaigError | None:
    """The FaigError behind ``exc`` (Hydra's ``instantiate`` wraps the errors of the objects it builds), if any.

    A full disk or quota (ENOSPC, EDQUOT) is a user error too: one line naming the folder written to (the file's,
    else ``folder``)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, FaigError):
            return exc
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            where = Path(exc.filename).parent if exc.filename else folder
            return FaigError(f"{exc.strerror} while writing in {where or 'the output folder'} — free space on that "
                             "disk or write elsewhere (hydra.run.dir=DIR or paths.output_dir=DIR), then rerun the "
                             "same command: finished stages and the last checkpoint are kept")
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _one_line(text: str) -> str:
    return " ".join(str(text).split()) or "(no message)"


def report_user_error(prog: str, err: FaigError, log_it: bool = True) -> str:
    """Log ``err`` to the run's log file and print ``<prog>: error: …`` on stderr; return that line.

    ``log_it=False`` before a run folder exists (Hydra's own console logging would repeat the line)."""
    line = f"{prog}: error: {_one_line(str(err))}"
    if log_it and logging.getLogger().handlers:  # a run folder's log file; else logging's last resort would repeat it
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


@contextmanager
def quiet_broken_pipe() -> Iterator[None]:
    """End quietly when the reader of stdout has gone (``faig-train --help | head -1``): no traceback, exit code
    128 + SIGPIPE like any Unix tool killed by a closed pipe."""
    try:
        try:
            yield
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        # the interpreter flushes stdout again at exit: point it at /dev/null so that flush cannot fail too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(128 + signal.SIGPIPE) from None


def is_rank_zero() -> bool:
    """True in the process that owns the run folder: not a DDP worker started by Lightning, nor a SLURM task
    other than the job's first (``srun`` / ``tasks_per_node`` > 1 start one process per device)."""
    return all(os.environ.get(k, "0") in ("", "0") for k in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"))


def job_record() -> dict[str, Any]:
    """What identifies the job in ``status.json``: its Hydra overrides (``hydra.overrides.task``, whatever the
    launcher: under submitit ``sys.argv`` is submitit's) and, in a multirun, its number and sweep folder."""
    if not HydraConfig.initialized():
        return {"argv": sys.argv[1:]}
    hc = HydraConfig.get()
    record: dict[str, Any] = {"overrides": list(hc.overrides.task)}
    if hc.mode == RunMode.MULTIRUN:
        record.update(job=hc.job.num, sweep_dir=str(Path(hc.sweep.dir).resolve()))
    return record


def write_status(run_dir: Path, status: str, **extra: Any) -> None:
    """``<run>/status.json``: ``running``, ``complete``, ``failed`` (with ``error``) or ``interrupted`` (with
    ``signal`` and ``detail``), with the job's ``job_record``, atomically."""
    if not is_rank_zero():
        return
    record = {"status": status, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **job_record(), **extra}
    RunFolder(run_dir).write_status(record)


def _final_status(run_dir: Path, status: str, **extra: Any) -> None:
    """The status after a failure: best effort, since the failure may be the full disk that this write needs."""
    try:
        write_status(run_dir, status, **extra)
    except OSError:
        log.warning("could not write %s", RunFolder(run_dir).status, extra={"file_only": True})


@contextmanager
def run_folder_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``<run>/.lock`` while the job runs; a live holder (another copy of the command) is one FaigError.

    The lock is an advisory ``flock``: the system releases it when its process ends, however it ends, so a lock
    file left by a dead process is simply taken over. DDP workers started by Lightning share their parent's."""
    if not is_rank_zero():
        yield
        return
    fd = os.open(RunFolder(run_dir).lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise FolderInUse(f"run folder {run_dir} is in use by pid {pid} — wait for that run to end (or stop "
                              "it), or give this one another folder: hydra.run.dir=DIR") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def check_output_folder(folder: str | os.PathLike, option: str) -> None:
    """Create ``folder`` and write a file in it, or raise one FaigError naming it (an existing file, a read-only
    disk or parent, a full disk)."""
    path = Path(folder)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise FaigError(f"cannot write the output folder {path} ({err.strerror or err}) — choose a writable folder: "
                        f"{option}=DIR or paths.output_dir=DIR") from None


class CheckOutputFolder(HydraCallback):
    """Hydra callback: the run (or sweep) folder must be writable before Hydra writes into it, else one line and
    exit code 2 instead of Hydra's traceback. Past it, Hydra has accepted the command line: a later failure of a
    launcher that runs the jobs in other processes (submitit) is not reported as a rejected command line."""

    def _check(self, folder: str, option: str) -> None:
        try:
            check_output_folder(folder, option)
        except FaigError as err:
            report_user_error(_state["prog"], err, log_it=False)
            raise SystemExit(USER_ERROR_EXIT) from None
        _state["launched"] = True

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")


class FailedJobsElsewhere(HydraCallback):
    """Hydra callback: after a multirun whose jobs ran in other processes (submitit), the jobs whose
    ``status.json`` says ``failed`` make the command exit 2 naming them, as when the jobs run in this process."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if _state["job_started"]:  # the jobs ran here and recorded their own failures
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        jobs = sweep_dir.iterdir() if sweep_dir.is_dir() else ()
        folders = (RunFolder(p) for p in jobs if RunFolder(p).status.is_file())
        for folder in sorted(folders, key=lambda f: (len(f.path.name), f.path.name)):
            try:
                record = folder.read_status()
            except UnreadableRecord:
                continue
            if record is not None and record.get("status") == "failed":
                record_failure(f"job {folder.path.name}", str(record.get("error") or "failed"))


def group_options(group: str) -> str:
    """A config group's options (its YAML files), comma-separated: the help of a command lists the groups it
    uses with ``${faig_options:<group>}``."""
    from faig_lightning.schemas import CONF_DIR  # the command's schemas are registered already

    return ", ".join(sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml")))


def received_signal() -> int | None:
    """The SIGTERM, SIGINT or SIGUSR1 this process received, if any."""
    return _state["signal"]


def _on_signal(signum: int, frame: Any) -> None:
    """SIGTERM / SIGINT / SIGUSR1: raise ``Interrupted``, unless a Lightning trainer runs. A trainer puts its own
    SIGTERM handler in front of this one (and calls this one from it): it stops after the current step, saving
    ``last.ckpt``. Ctrl-C and SIGUSR1 are passed to it as SIGTERM; a second one stops at once."""
    _state["signal"] = _state["signal"] or signum
    trainer_handler = signal.getsignal(signal.SIGTERM)
    if trainer_handler is _on_signal or not callable(trainer_handler):  # no trainer runs
        raise Interrupted(signum)
    if signum == signal.SIGTERM:  # called by the trainer's handler, which has asked the trainer to stop
        return
    if _state["stopping"]:
        raise Interrupted(signum)
    _state["stopping"] = True
    trainer_handler(signal.SIGTERM, frame)


@contextmanager
def interruptible() -> Iterator[None]:
    """Route SIGTERM, SIGINT and SIGUSR1 to ``_on_signal`` within the block."""
    _state.update(signal=None, stopping=False)
    previous = {s: signal.signal(s, _on_signal) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


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


def _config_options(argv: list[str]) -> list[str]:
    """The options of ``argv`` that choose the config (``CONFIG_OPTIONS``), with their values."""
    kept, tokens = [], iter(argv)
    for token in tokens:
        if token.split("=", 1)[0] in CONFIG_OPTIONS:
            kept += [token] if "=" in token else [token, next(tokens, "")]
    return kept


@contextmanager
def ddp_workers_join_this_job() -> Iterator[None]:
    """In a multirun job, point Lightning's DDP launcher at this job alone, and end the job's DDP with it.

    The launcher starts each extra process with ``sys.argv`` plus ``hydra.run.dir=<HydraConfig's run.dir>``: from
    a multirun that would run the whole sweep again, in a second ``${now:…}`` sweep folder. Within the block the
    command line is this job's (its overrides, ``hydra.mode=RUN``) and run.dir is the job's folder. Its workers end
    with the job, so afterwards its process group is closed and the variables that made this process rank 0 are
    restored: the next job starts workers of its own."""
    hc = HydraConfig.get() if HydraConfig.initialized() else None
    if hc is None or hc.mode != RunMode.MULTIRUN or not is_rank_zero():
        yield
        return
    argv, run_dir = list(sys.argv), hc.run.dir
    ddp_env = {k: os.environ.get(k) for k in DDP_VARIABLES}
    sys.argv = [argv[0], *_config_options(argv[1:]), *hc.overrides.task, "hydra.mode=RUN"]
    with read_write(hc):
        hc.run.dir = hc.runtime.output_dir
    try:
        yield
    finally:
        sys.argv = argv
        with read_write(hc):
            hc.run.dir = run_dir
        distributed = sys.modules.get("torch.distributed")  # imported by whatever started a process group
        if distributed is not None and distributed.is_available() and distributed.is_initialized():
            distributed.destroy_process_group()
        for key, value in ddp_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _fail(prog: str, run_dir: Path, multirun: bool, err: FaigError) -> None:
    line = report_user_error(prog, err)
    if not multirun:
        raise SystemExit(USER_ERROR_EXIT) from None
    record_failure(f"job {run_dir.name}", line)


def run_job(prog: str, run_dir: Path, multirun: bool, job: Callable[[], Any]) -> Any:
    """Run one Hydra job with its lock and status file; a user error fails the job with one line.

    A single run exits with code 2; a multirun job is recorded as failed and the sweep goes on. SIGTERM / SIGINT /
    SIGUSR1 stop the command (multirun included) with status ``interrupted`` and exit code 128 + the signal, under
    any Hydra launcher (submitit runs the job in a process of its own).
    """
    _state["job_started"] = True
    route_library_logs()
    try:
        with interruptible(), ddp_workers_join_this_job(), run_folder_lock(run_dir):
            return _run_locked(prog, run_dir, multirun, job)
    except FolderInUse as err:  # another copy runs in this folder: its status file is not ours to touch
        return _fail(prog, run_dir, multirun, err)


def _run_locked(prog: str, run_dir: Path, multirun: bool, job: Callable[[], Any]) -> Any:
    try:
        write_status(run_dir, "running")
        result = job()
    except Interrupted as exc:
        detail = f": {exc.detail}" if exc.detail else ""
        _final_status(run_dir, "interrupted", signal=exc.name, detail=exc.detail or None)
        report_user_error(prog, FaigError(f"interrupted by {exc.name}{detail} — rerun the same command to resume"))
        raise SystemExit(128 + exc.signum) from None
    except Exception as exc:
        err = user_error(exc, run_dir)
        if err is None:
            _final_status(run_dir, "failed", error=f"{type(exc).__name__}: {_one_line(str(exc))[:500]}")
            log.exception("%s: unexpected error", prog, extra={"file_only": True})
            raise
        _final_status(run_dir, "failed", error=_one_line(str(err)))
        return _fail(prog, run_dir, multirun, err)
    write_status(run_dir, "complete")
    return result


def main_with_exit_code(prog: str, hydra_main: Callable[[], Any]) -> None:
    """Call a ``@hydra.main`` function; exit 2 naming the failed jobs when a multirun had any.

    ``--version`` prints ``<prog> <version>``; an error Hydra reports itself (an unknown key, a sweep value
    without ``-m``) keeps Hydra's text and ends with one ``<prog>: error: …`` line and exit code 2; a closed
    stdout ends quietly; SIGTERM / SIGINT end with one line (see ``run_job``).
    """
    _failed_jobs.clear()
    _state.update(prog=prog, job_started=False, launched=False)
    logging.raiseExceptions = False  # a log line that cannot be written (closed pipe, full disk) is dropped
    OmegaConf.register_new_resolver("faig_options", group_options, replace=True)
    with quiet_broken_pipe():
        if "--version" in sys.argv[1:]:
            print(f"{prog} {__version__}")
            return
        try:
            with interruptible(), exit_on_user_error(prog):
                try:
                    hydra_main()
                except HydraException as exc:  # raised outside Hydra's own reporting (e.g. under --help)
                    print(exc, file=sys.stderr)
                    raise SystemExit(1) from None
                except ValueError as exc:  # Hydra refusing its own flags together (-m with --cfg, …)
                    if _state["job_started"]:
                        raise
                    print(exc, file=sys.stderr)
                    raise SystemExit(1) from None
        except Interrupted as exc:  # before a job started: nothing to record
            report_user_error(prog, FaigError(f"interrupted by {exc.name} before the run started — run the "
                                              "command again"))
            raise SystemExit(128 + exc.signum) from None
        except SystemExit as exc:
            if exc.code != 1 or _state["job_started"]:
                raise
            if _state["launched"]:  # Hydra printed the launcher's error: a job run elsewhere (submitit) crashed
                report_user_error(prog, FaigError("a job of the sweep crashed or ended without a result (interrupted, "
                                                  "killed, out of memory; the launcher's error is above) — each job's "
                                                  f"{STATUS_FILE} says where it stopped; rerun the same command to "
                                                  "resume"), log_it=False)
                raise SystemExit(USER_ERROR_EXIT) from None
            # Hydra printed its message (an unknown key, a sweep value without -m, …) and exited 1
            report_user_error(prog, FaigError(f"Hydra rejected the command line (its message is above) — fix the "
                                              f"override; '{prog} --help' lists the config groups and examples"),
                              log_it=False)
            raise SystemExit(USER_ERROR_EXIT) from None
    if _failed_jobs:
        print(f"{prog}: error: {len(_failed_jobs)} job(s) failed: {'; '.join(_failed_jobs)}", file=sys.stderr)
        raise SystemExit(USER_ERROR_EXIT)


def _swept_overrides(hc: DictConfig) -> list[str]:
    """This multirun job's overrides (``key=value``) of the keys its sweep varies: the sweep overrides of the
    command line (kept in ``<sweep>/multirun.yaml``) and of ``hydra.sweeper.params``."""
    parser = OverridesParser.create()
    sweep_file = Path(hc.sweep.dir) / "multirun.yaml"
    given = list(OmegaConf.load(sweep_file).hydra.overrides.task) if sweep_file.is_file() else []
    given += [f"{k}={v}" for k, v in (hc.sweeper.get("params") or {}).items()]
    swept = {o.get_key_element() for o in parser.parse_overrides(given) if o.is_sweep_override()}
    job = parser.parse_overrides(list(hc.overrides.task))
    return [o.input_line for o in job if o.get_key_element() in swept]


def run_names() -> tuple[Path, str, str, bool]:
    """(run folder, job name, W&B group, multirun?) of a Hydra job: a multirun groups its jobs by sweep folder and
    names each ``<sweep folder>-<its swept values>`` (e.g. ``blur_sweep-degradation.blur.sigma=2``; the job number
    when nothing is swept); a single run is named and grouped by its folder. A stage whose ``baseline_ckpt`` lies in
    a recorded run folder logs into that run's group instead (``loggers.wandb_group``)."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    if hc.mode == RunMode.MULTIRUN:
        sweep = Path(hc.sweep.dir).name
        return run_dir, f"{sweep}-{','.join(_swept_overrides(hc)) or hc.job.num}", sweep, True
    return run_dir, run_dir.name, run_dir.name, False
