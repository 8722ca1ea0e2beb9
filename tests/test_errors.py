"""Interrupts and the environment end in one line: ``<cmd>: error: <problem> — <fix>``, exit code 2 (128 + the
signal for SIGTERM / SIGINT), checked before training where they can be; checkpoints are written atomically and a
run folder is held by one process at a time."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY, cli_env, faig_train, rand_img, run_cli, save, wait_for

from faig_lightning import cli
from faig_lightning.atomic import atomic_write
from faig_lightning.build import AtomicCheckpointIO
from faig_lightning.cli import run_job
from faig_lightning.run_folder import LOCK_FILE, STATUS_FILE

ROOT = os.geteuid() == 0
NOT_ROOT = pytest.mark.skipif(ROOT, reason="permissions do not stop root")


def _error_line(proc: subprocess.CompletedProcess, prog: str = "faig-train") -> str:
    """The one stderr line of a refused command (exit code 2)."""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: ") and " — " in lines[0], proc.stderr[-3000:]
    return lines[0]


def _train_images(folder: Path, junk: bool = False) -> Path:
    for i in range(2):
        save(folder / f"img{i}.png", rand_img(48, 48, seed=i))
    if junk:
        (folder / "notes.png").write_text("not an image\n")
    return folder


def _read_only(folder: Path) -> Path:
    folder.mkdir(parents=True)
    folder.chmod(0o555)
    return folder


FOLDER_DATA = ["data=folder", "data.num_workers=0"]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        pytest.param(lambda t: [f"hydra.run.dir={t / 'file'}"], "cannot write the output folder", id="run-dir-is-file"),
        pytest.param(lambda t: [f"hydra.run.dir={_read_only(t / 'ro') / 'run'}"], "(Permission denied)",
                     id="run-dir-read-only", marks=NOT_ROOT),
        pytest.param(lambda t: [*FOLDER_DATA, f"data.train_dir={_train_images(t / 'hr')}", "data.memmap=true",
                                f"data.memmap_dir={t / 'file' / 'cache'}"],
                     "cannot write the memory-mapped image cache", id="memmap-dir-under-file"),
        pytest.param(lambda t: [*FOLDER_DATA, f"data.train_dir={_train_images(t / 'hr')}", "data.memmap=true",
                                f"data.memmap_dir={_read_only(t / 'ro')}"],
                     "cannot write the memory-mapped image cache", id="memmap-dir-read-only", marks=NOT_ROOT),
        pytest.param(lambda t: ["eval.crop_border=1000"], "eval.crop_border=1000 cuts all of eval image 'chelsea'",
                     id="crop-border"),
        pytest.param(lambda t: ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=3"],
                     "3 training processes (trainer.devices=3) but the eval set has 1 image(s)", id="ddp-processes"),
        pytest.param(lambda t: [*FOLDER_DATA, f"data.train_dir={_train_images(t / 'hr', junk=True)}"],
                     "notes.png", id="non-image-in-train-dir"),
    ],
)
def test_environment_fails_before_training_with_one_line(tmp_path, setup, message):
    (tmp_path / "file").write_text("a file, not a folder\n")
    overrides = setup(tmp_path)
    if not any(o.startswith("hydra.run.dir=") for o in overrides):
        overrides.append(f"hydra.run.dir={tmp_path / 'run'}")
    proc = faig_train(tmp_path, "logger=none", *overrides, check=False)
    assert message in _error_line(proc)
    assert not list(tmp_path.rglob("*.ckpt"))


@pytest.mark.parametrize(("override", "hydra_text"), [("foo=1", "Could not override 'foo'"),
                                                      ("seed=1,2", "Ambiguous value for argument 'seed=1,2'")])
def test_hydra_errors_keep_their_text_and_end_in_one_line(tmp_path, override, hydra_text):
    proc = faig_train(tmp_path, override, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and hydra_text in proc.stderr
    assert lines[-1].startswith("faig-train: error: Hydra rejected the command line") and " — " in lines[-1]
    assert sum(line.startswith("faig-train: error:") for line in lines) == 1


def test_extract_subimages_refuses_when_every_image_is_smaller_than_the_crop(tmp_path):
    src = tmp_path / "hr"
    for i in range(2):
        save(src / f"img{i}.png", rand_img(40, 56, seed=i))
    proc = run_cli(tmp_path, "faig_lightning.data.subimages", f"in_dir={src}", f"out_dir={tmp_path / 'sub'}",
                   "crop_size=64", "workers=0", check=False)
    line = _error_line(proc, "faig-extract-subimages")
    assert "smaller than crop_size=64" in line and "crop_size=40" in line
    assert not (tmp_path / "sub").exists()


def test_second_copy_in_a_run_folder_is_refused(tmp_path):
    """A live holder of the run folder's lock (another copy of the command) refuses this one in one line, and
    leaves the folder's status alone."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "status.json").write_text('{"status": "running"}\n')
    with open(run / LOCK_FILE, "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.write(f"{os.getpid()}\n")
        holder.flush()
        proc = faig_train(tmp_path, "logger=none", f"hydra.run.dir={run}", check=False)
    assert f"run folder {run} is in use by pid {os.getpid()}" in _error_line(proc)
    assert json.loads((run / "status.json").read_text())["status"] == "running"
    assert not list(run.rglob("*.ckpt"))


def _start(tmp_path: Path, *overrides: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "faig_lightning.train", *TINY, *overrides],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=cli_env(tmp_path))


def _step(ckpt: Path) -> int:
    return torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]


@pytest.mark.slow
def test_sigterm_sigint_and_sigusr1_save_last_ckpt_and_the_rerun_completes(tmp_path):
    """SIGTERM (SLURM's time limit) after the first checkpoint: status ``interrupted``, last.ckpt at the step it
    stopped, the resume line, exit 143. The rerun (taking over a lock file left by a dead process) gets Ctrl-C:
    the same with exit 130; the next, SIGUSR1 (SLURM's ``--signal=USR1@<s>`` warning, outside SLURM's
    auto-requeue): exit 138. The last run finishes from there."""
    run = tmp_path / "run"
    args = ["stage=baseline", "baseline.max_steps=24", "logger=none", f"hydra.run.dir={run}"]
    last = run / "baseline" / "checkpoints" / "last.ckpt"
    run.mkdir()
    (run / LOCK_FILE).write_text("999999999\n")  # left by a process that no longer exists
    previous = 0
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        proc = _start(tmp_path, *args)
        wait_for(lambda: last.is_file() and last.stat().st_mtime_ns != previous, proc)  # noqa: B023
        assert (run / LOCK_FILE).read_text().strip() == str(proc.pid)  # the live run holds the folder
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=300)
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert proc.returncode == 128 + signum, stderr[-3000:]
        assert lines[-1].startswith(f"faig-train: error: interrupted by {signum.name}: the baseline stage stopped at "
                                    "step ") and lines[-1].endswith(" — rerun the same command to resume"), lines[-1]
        stopped = int(lines[-1].split(" at step ")[1].split()[0])
        status = json.loads((run / "status.json").read_text())
        assert (status["status"], status["signal"]) == ("interrupted", signum.name)
        assert 0 < _step(last) == stopped < 24
        previous = last.stat().st_mtime_ns
    faig_train(tmp_path, *args)
    summary = json.loads((run / "baseline" / "summary.json").read_text())
    assert (summary["fit"], summary["start_step"], summary["global_step"]) == ("resumed", stopped, 24)
    assert json.loads((run / "status.json").read_text())["status"] == "complete"


def test_checkpoint_cut_short_never_has_its_final_name(tmp_path, monkeypatch):
    """A save that fails mid-write (here: a full disk after 100 bytes) leaves the previous checkpoint intact
    under its name and no other file behind."""
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpts" / "best-step4.ckpt"
    io.save_checkpoint({"step": 2, "w": torch.ones(1000)}, path)
    before = path.read_bytes()

    def full_disk(self: Path, data: bytes) -> int:
        with open(self, "wb") as fh:
            fh.write(bytes(data)[:100])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"step": 4, "w": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(path.parent) == [path.name]
    assert torch.load(path, weights_only=True)["step"] == 2


def test_full_disk_is_one_line_naming_the_folder(tmp_path, capsys, monkeypatch):
    """A writer that hides the reason (``torch.save`` raises a bare RuntimeError) on a disk with no space left:
    one line naming the folder, exit code 2, status ``failed``."""
    run = tmp_path / "run"
    run.mkdir()

    def hidden_reason(path: Path) -> None:
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    def job() -> None:
        monkeypatch.setattr(os, "statvfs", lambda folder: os.statvfs_result((4096,) * 3 + (0,) * 7))
        try:
            atomic_write(run / "baseline" / "net_g.pth", hidden_reason)
        finally:
            monkeypatch.undo()

    with pytest.raises(SystemExit) as exit_info:
        run_job("faig-train", run, False, job)
    lines = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1
    assert lines[0].startswith(f"faig-train: error: No space left on device while writing in {run / 'baseline'} — "
                               "free space")
    assert json.loads((run / STATUS_FILE).read_text())["status"] == "failed"
    assert os.listdir(run / "baseline") == []


def test_signal_outside_training_interrupts_the_job_at_once(tmp_path, capsys):
    """No trainer runs (checks, the eval set, faig-attribute): SIGTERM ends the job there, in one line."""
    with cli.interruptible(), pytest.raises(SystemExit) as exit_info:
        run_job("faig-attribute", tmp_path, False, lambda: signal.raise_signal(signal.SIGTERM))
    lines = capsys.readouterr().err.splitlines()
    assert exit_info.value.code == 128 + signal.SIGTERM and len(lines) == 1
    assert lines[0] == "faig-attribute: error: interrupted by SIGTERM — rerun the same command to resume"
    assert json.loads((tmp_path / STATUS_FILE).read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
