"""Past one machine: Hydra's submitit launcher (``hydra/launcher=submitit_local`` here, ``submitit_slurm`` on a
cluster) runs each job of a multirun in a process of its own, and Lightning's DDP inside a multirun job."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY, cli_env, faig_train

QUICK = ["stage=both", "baseline.max_steps=2", "target.max_steps=2", "logger=none", "attribution.steps=2",
         "attribution.methods=[faig]", "attribution.proportions=[10]", "attribution.analyses=[]"]
"""Two stages of two steps and a small attribution: a run that ends ``complete`` in seconds."""


def _status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


@pytest.mark.slow
def test_submitit_local_multirun_lands_in_the_sweep_folder_and_is_summarised(tmp_path):
    """Two jobs through submitit (each its own process): both complete in ``<sweep>/0`` and ``<sweep>/1``, the
    sweep summary lists both, and each ``status.json`` names the job by its Hydra overrides (not submitit's argv)."""
    sweep = tmp_path / "sweep"
    faig_train(tmp_path, *QUICK, "hydra/launcher=submitit_local", "seed=0,1", f"hydra.sweep.dir={sweep}",
               multirun=True)
    for num in (0, 1):
        status = _status(sweep / str(num))
        assert status["status"] == "complete" and (status["job"], status["sweep_dir"]) == (num, str(sweep))
        assert f"seed={num}" in status["overrides"] and "stage=both" in status["overrides"]
        assert (sweep / str(num) / "target" / "net_g.pth").is_file()
    assert (sweep / ".submitit").is_dir()  # the jobs ran through submitit
    runs = {r["run"]: r for r in csv.DictReader((sweep / "runs.csv").open())}
    assert {k: (r["status"], r["seed"]) for k, r in runs.items()} == {"0": ("complete", "0"), "1": ("complete", "1")}
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["complete"], summary["failed"], summary["incomplete"]) == (2, 0, 0)


@pytest.mark.slow
def test_ddp_in_a_multirun_job_leaves_one_sweep_folder(tmp_path):
    """``-m`` with DDP on 2 CPU processes: Lightning re-runs the command line for the second process; that process
    joins the job in its folder instead of running the sweep again in a second ``${now:…}`` sweep folder."""
    faig_train(tmp_path, "stage=baseline", "baseline.max_steps=2", "logger=none", "trainer=ddp",
               "trainer.accelerator=cpu", "trainer.devices=2", multirun=True)
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    assert not (tmp_path / "outputs" / "runs").exists()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0"]
    job = sweep / "0"
    assert _status(job)["status"] == "complete" and (job / "train_ddp_process_1.log").is_file()
    assert json.loads((job / "baseline" / "summary.json").read_text())["global_step"] == 2


def _fake_slurm(tmp_path: Path) -> dict[str, str]:
    """The environment of a one-task SLURM job whose ``scontrol`` records its arguments and, like SLURM requeueing
    a running job, answers with SIGTERM to the job."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.txt"}\nkill -TERM $PPID\n')
    scontrol.chmod(0o755)
    return {**cli_env(tmp_path), "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
            "SLURM_JOB_NAME": "faig", "SLURM_NTASKS": "1", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
            "SLURM_NODEID": "0", "SLURM_NODELIST": "localhost"}


@pytest.mark.slow
def test_sigusr1_under_slurm_auto_requeue_checkpoints_requeues_and_the_requeued_job_resumes(tmp_path):
    """SLURM's early warning (``--signal=USR1@120``) with Lightning's auto-requeue: Lightning saves its hpc
    checkpoint and calls ``scontrol requeue``; SLURM's SIGTERM then stops training with last.ckpt saved and status
    ``interrupted``. The requeued job (same command) resumes from there, with no hpc checkpoint left behind."""
    run = tmp_path / "run"
    args = [*TINY, "stage=baseline", "baseline.max_steps=24", "logger=none", f"hydra.run.dir={run}"]
    env = _fake_slurm(tmp_path)
    last = run / "baseline" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-m", "faig_lightning.train", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env)
    end = time.monotonic() + 300
    while not last.is_file():
        assert proc.poll() is None and time.monotonic() < end, proc.stderr.read()[-3000:]
        time.sleep(0.02)
    proc.send_signal(signal.SIGUSR1)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert (tmp_path / "scontrol.txt").read_text().split() == ["requeue", "4242"]
    (hpc,) = (run / "baseline").glob("hpc_ckpt_*.ckpt")
    stopped = torch.load(last, weights_only=False)["global_step"]
    assert 0 < torch.load(hpc, weights_only=False)["global_step"] <= stopped < 24
    assert (_status(run)["status"], _status(run)["signal"]) == ("interrupted", "SIGTERM")
    requeued = subprocess.run([sys.executable, "-m", "faig_lightning.train", *args], capture_output=True, text=True,
                              env=env, timeout=300)
    assert requeued.returncode == 0, requeued.stderr[-3000:]
    summary = json.loads((run / "baseline" / "summary.json").read_text())
    assert (summary["fit"], summary["start_step"], summary["global_step"]) == ("resumed", stopped, 24)
    assert not list(run.rglob("hpc_ckpt_*")) and _status(run)["status"] == "complete"


def test_newer_lightning_hpc_checkpoint_becomes_last_ckpt(tmp_path):
    """A requeued job whose last.ckpt is older than Lightning's hpc checkpoint (the job was killed before SIGTERM
    could save) resumes from the hpc checkpoint; older ones are dropped."""
    from faig_lightning.train import _adopt_hpc_checkpoint

    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    for path, step in ((last, 4), (tmp_path / "hpc_ckpt_1.ckpt", 2), (tmp_path / "hpc_ckpt_2.ckpt", 6)):
        torch.save({"state_dict": {}, "global_step": step}, path)
    _adopt_hpc_checkpoint(tmp_path, last, keep=True)
    assert torch.load(last)["global_step"] == 6 and not list(tmp_path.glob("hpc_ckpt_*"))


def test_the_documented_multi_node_command_composes(tmp_path):
    """The README's SLURM command line (checked with ``--cfg hydra``; ``-m`` with ``--cfg`` is one line, exit 2):
    SLURM's tasks per node are the trainer's devices, and USR1 comes 120 s before the time limit."""
    command = ["hydra/launcher=submitit_slurm", "hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=4",
               "hydra.launcher.gpus_per_node=4", "hydra.launcher.timeout_min=1440",
               "+hydra.launcher.additional_parameters.signal=USR1@120", "trainer=ddp", "trainer.devices=4",
               "trainer.num_nodes=2"]
    shown = subprocess.run([sys.executable, "-m", "faig_lightning.train", *command, "--cfg", "hydra"],
                           capture_output=True, text=True, env=cli_env(tmp_path), timeout=120)
    assert shown.returncode == 0, shown.stderr[-3000:]
    launcher = yaml.safe_load(shown.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert (launcher["nodes"], launcher["tasks_per_node"], launcher["gpus_per_node"]) == (2, 4, 4)
    assert launcher["additional_parameters"] == {"signal": "USR1@120"}
    refused = faig_train(tmp_path, *command, "--cfg", "hydra", multirun=True, check=False)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and "Only one of --run, --multirun, --cfg" in refused.stderr
    assert lines[-1].startswith("faig-train: error: Hydra rejected the command line")
    assert "Traceback" not in refused.stderr
