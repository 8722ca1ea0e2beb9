"""Past one machine: Hydra's submitit launcher (``hydra/launcher=submitit_local`` here, ``submitit_slurm`` on a
cluster) runs each job of a multirun in a process of its own, and Lightning's DDP inside a multirun job."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY, cli_env, faig_train, wait_for

from faig_lightning.run_folder import LOCK_FILE
from faig_lightning.schemas import CONF_DIR

SLURM_COMMAND = ["hydra/launcher=submitit_slurm", "hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=4",
                 "hydra.launcher.gpus_per_node=4", "hydra.launcher.timeout_min=1440",
                 "+hydra.launcher.additional_parameters.signal=USR1@120", "trainer=ddp", "trainer.devices=4",
                 "trainer.num_nodes=2"]
"""The README's multi-node command (without the experiment and data)."""
QUICK = ["stage=both", "baseline.max_steps=2", "target.max_steps=2", "logger=none", "attribution.steps=2",
         "attribution.methods=[faig]", "attribution.proportions=[10]", "attribution.analyses=[]"]
"""Two stages of two steps and a small attribution: a run that ends ``complete`` in seconds."""


def _status(run: Path) -> dict:
    return json.loads((run / "status.json").read_text())


def _build_eval_set(tmp_path: Path, *overrides: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cache the eval set of faig-train's config before parallel jobs start (they would each generate it)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from faig_lightning.data.eval_set import EVAL_SET_KEYS, build_eval_set

    monkeypatch.setenv("FAIG_CACHE_DIR", cli_env(tmp_path)["FAIG_CACHE_DIR"])
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, *overrides])
    kwargs = OmegaConf.to_container(cfg.data.eval, resolve=True)
    build_eval_set(scale=cfg.scale, **{k: v for k, v in kwargs.items() if k in EVAL_SET_KEYS})


@pytest.mark.slow
def test_submitit_local_multirun_lands_in_the_sweep_folder_and_is_summarised(tmp_path, monkeypatch):
    """Three jobs through submitit (each its own process): two complete in ``<sweep>/0`` and ``<sweep>/1``, the
    third (a bad seed) fails; the sweep summary lists all three, each ``status.json`` names its job by its Hydra
    overrides (not submitit's argv), and the command exits 2 naming the failed job, as with Hydra's own launcher."""
    sweep = tmp_path / "sweep"
    _build_eval_set(tmp_path, *QUICK, monkeypatch=monkeypatch)
    proc = faig_train(tmp_path, *QUICK, "hydra/launcher=submitit_local", "seed=0,1,-1", f"hydra.sweep.dir={sweep}",
                      multirun=True, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("faig-train: error: ")]
    assert proc.returncode == 2 and lines == ["faig-train: error: 1 job(s) failed: job 2 (seed must be an integer in "
                                              "[0, 4294967295], got -1; e.g. seed=0)"], proc.stderr[-3000:]
    for num in (0, 1):
        status = _status(sweep / str(num))
        assert status["status"] == "complete" and (status["job"], status["sweep_dir"]) == (num, str(sweep))
        assert f"seed={num}" in status["overrides"] and "stage=both" in status["overrides"]
        assert (sweep / str(num) / "target" / "net_g.pth").is_file()
    assert (_status(sweep / "2")["status"], _status(sweep / "2")["job"]) == ("failed", 2)
    assert (sweep / ".submitit").is_dir()  # the jobs ran through submitit
    runs = {r["run"]: r["status"] for r in csv.DictReader((sweep / "runs.csv").open())}
    assert runs == {"0": "complete", "1": "complete", "2": "failed"}
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert (summary["complete"], summary["failed"], summary["incomplete"]) == (2, 1, 0)


@pytest.mark.slow
def test_sigusr1_to_a_submitit_job_interrupts_it_and_the_launcher_ends_in_one_line(tmp_path):
    """SIGUSR1 to a job that submitit runs (its pid is in the job folder's lock): last.ckpt saved, status
    ``interrupted`` with the job's overrides; the launcher, left without the job's result, ends in one line."""
    sweep = tmp_path / "sweep"
    last = sweep / "0" / "baseline" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen([sys.executable, "-m", "faig_lightning.train", "-m", *TINY, "stage=baseline",
                             "baseline.max_steps=40", "logger=none", "hydra/launcher=submitit_local", "seed=3",
                             f"hydra.sweep.dir={sweep}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=cli_env(tmp_path))
    wait_for(last.is_file, proc)
    os.kill(int((sweep / "0" / LOCK_FILE).read_text()), signal.SIGUSR1)
    _, stderr = proc.communicate(timeout=300)
    lines = [line for line in stderr.splitlines() if line.startswith("faig-train: error: ")]
    assert proc.returncode == 2 and lines[-1].startswith("faig-train: error: a job of the sweep crashed or ended "
                                                         "without a result"), stderr
    status = _status(sweep / "0")
    assert (status["status"], status["signal"], status["job"]) == ("interrupted", "SIGUSR1", 0)
    assert "seed=3" in status["overrides"]
    assert 0 < torch.load(last, weights_only=False)["global_step"] < 40

@pytest.mark.slow
def test_ddp_in_a_multirun_leaves_one_sweep_folder(tmp_path):
    """``-m`` with DDP on 2 CPU processes, two jobs: Lightning re-runs the command line for the second process; that
    process joins its job in the job's folder (instead of running the sweep again in a second ``${now:…}`` sweep
    folder) and ends with it, and the next job starts a second process of its own."""
    faig_train(tmp_path, "stage=baseline", "baseline.max_steps=2", "logger=none", "trainer=ddp",
               "trainer.accelerator=cpu", "trainer.devices=2", "seed=0,1", multirun=True)
    (sweep,) = (tmp_path / "outputs" / "multiruns").iterdir()
    assert not (tmp_path / "outputs" / "runs").exists()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    for num in (0, 1):
        job = sweep / str(num)
        assert _status(job)["status"] == "complete" and (job / "train_ddp_process_1.log").is_file()
        summary = json.loads((job / "baseline" / "summary.json").read_text())
        assert (summary["seed"], summary["global_step"]) == (num, 2)


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
    wait_for(last.is_file, proc)
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
    from faig_lightning.run_folder import StageFolder
    from faig_lightning.train import _adopt_hpc_checkpoint

    last = tmp_path / "checkpoints" / "last.ckpt"
    last.parent.mkdir()
    for path, step in ((last, 4), (tmp_path / "hpc_ckpt_1.ckpt", 2), (tmp_path / "hpc_ckpt_2.ckpt", 6)):
        torch.save({"state_dict": {}, "global_step": step}, path)
    _adopt_hpc_checkpoint(StageFolder(tmp_path), keep=True)
    assert torch.load(last)["global_step"] == 6 and not list(tmp_path.glob("hpc_ckpt_*"))


def test_the_documented_multi_node_command_composes():
    """The README's SLURM command line composes: SLURM's tasks per node are the trainer's devices, and USR1 comes
    120 s before the time limit."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=SLURM_COMMAND, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, 4)
    assert (cfg.trainer.num_nodes, cfg.trainer.devices, cfg.trainer.strategy) == (2, 4, "ddp")
    assert dict(launcher.additional_parameters) == {"signal": "USR1@120"}


def test_hydra_flags_that_exclude_each_other_end_in_one_line(monkeypatch, capsys):
    """Hydra's own refusal (``-m`` with ``--cfg``, a ValueError) keeps its text and ends in one line, exit 2."""
    from faig_lightning import train

    monkeypatch.setattr(sys, "argv", ["faig-train", "-m", *SLURM_COMMAND, "--cfg", "hydra"])
    with pytest.raises(SystemExit) as exit_info:
        train.main()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert exit_info.value.code == 2 and "Only one of --run, --multirun, --cfg" in err
    assert lines[-1].startswith("faig-train: error: Hydra rejected the command line") and "Traceback" not in err
