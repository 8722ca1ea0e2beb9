"""A wheel works without the source tree: configs, console scripts, typing marker and version ship inside it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from faig_lightning.nets import MSRResNet

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_install_runs_outside_the_checkout(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
                   check=True, timeout=600)
    (wheel,) = wheels.glob("faig_lightning-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                   check=True, timeout=600)
    env = {**os.environ, "PYTHONPATH": str(site), "FAIG_CACHE_DIR": str(tmp_path / "cache"), "WANDB_MODE": "offline",
           "OMP_NUM_THREADS": "1"}

    def run(*cmd: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    probe = run(sys.executable, "-c", "import faig_lightning, importlib.metadata as m, pathlib; "
                "p = pathlib.Path(faig_lightning.__file__).parent; "
                "print(p, (p / 'py.typed').is_file(), faig_lightning.__version__ == m.version('faig-lightning'))")
    folder, typed, same_version = probe.stdout.split()
    assert Path(folder).is_relative_to(site) and typed == "True" and same_version == "True"
    help_text = run(str(site / "bin" / "faig-train"), "--help").stdout
    assert "model: custom, srcnn_style" in help_text and "trainer: cpu, ddp, gpu" in help_text  # the shipped groups

    torch.manual_seed(0)
    nets = [MSRResNet(scale=2, num_feat=8, num_block=1) for _ in range(2)]
    for name, net in zip(("base", "target"), nets, strict=True):
        torch.save({"params_ema": net.state_dict()}, tmp_path / f"{name}.pth")
    run(str(site / "bin" / "faig-attribute"), "model=srresnet_small", "model.num_feat=8", "model.num_block=1",
        "eval.photos=[chelsea]", f"baseline_ckpt={tmp_path / 'base.pth'}", f"target_ckpt={tmp_path / 'target.pth'}",
        "attribution.methods=[faig,random]", "attribution.steps=2", "attribution.proportions=[5]",
        f"hydra.run.dir={tmp_path / 'run'}")
    assert (tmp_path / "run" / "summary.json").is_file() and (tmp_path / "run" / "masking.csv").is_file()
