"""What changes a training run's numbers: the same command under different loggers, thread counts and CPU kernels.

Trains a small baseline (MSRResNet 8x2, 30 steps in two epochs, batch 4 of 32 px crops) with ``faig-train`` once
per variant and prints the largest absolute weight difference against the first run (0 = bit-identical):

- the same command again; with ``logger=wandb`` (offline) and the progress bar; with two loader workers; stopped
  after the first epoch (step 15) and resumed from ``last.ckpt`` by the same command;
- one intra-op thread instead of the default;
- oneDNN limited to AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``) and ATen's generic kernels (``ATEN_CPU_CAPABILITY=default``),
  which is what another CPU generation would pick.

Run from the repository root: ``python benchmarks/reproducibility.py`` (about 3 minutes on 2 cores).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from faig_lightning.run_folder import RunFolder

RUN = [
    "model=srresnet_small", "model.num_feat=8", "model.num_block=2", "data.batch_size=4", "data.gt_size=32",
    "data.eval.photos=[chelsea]", "stage=baseline", "baseline.max_steps=30", "baseline.val_every=15",
    "eval.log_images=false",
]
QUIET = ["logger=none", "trainer.enable_progress_bar=false"]
STOP_EARLY = ["baseline.max_steps=15"]
# (label, extra environment, overrides, stopped after the first epoch and resumed by the same command)
VARIANTS = [
    ("reference (logger=none, no progress bar)", {}, QUIET, False),
    ("the same command again", {}, QUIET, False),
    ("logger=wandb (offline) + progress bar", {}, ["logger=wandb", "trainer.enable_progress_bar=true"], False),
    ("data.num_workers=2", {}, [*QUIET, "data.num_workers=2"], False),
    ("stopped at step 15, resumed", {}, QUIET, True),
    ("OMP_NUM_THREADS=1", {"OMP_NUM_THREADS": "1"}, QUIET, False),
    ("ONEDNN_MAX_CPU_ISA=AVX2", {"ONEDNN_MAX_CPU_ISA": "AVX2"}, QUIET, False),
    ("ATEN_CPU_CAPABILITY=default", {"ATEN_CPU_CAPABILITY": "default"}, QUIET, False),
]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        weights = []
        for n, (label, extra_env, overrides, resumed) in enumerate(VARIANTS):
            env = {**os.environ, "WANDB_MODE": "offline", "FAIG_CACHE_DIR": f"{tmp}/cache", **extra_env}
            run_dir = Path(tmp) / str(n)
            if resumed:
                subprocess.run([sys.executable, "-m", "faig_lightning.train", *RUN, *overrides, *STOP_EARLY,
                                f"hydra.run.dir={run_dir}"], env=env, check=True, capture_output=True)
            subprocess.run([sys.executable, "-m", "faig_lightning.train", *RUN, *overrides, f"hydra.run.dir={run_dir}"],
                           env=env, check=True, capture_output=True)
            weights.append(torch.load(RunFolder(run_dir).stage("baseline").net_g, weights_only=True)["params"])
            diff = max((weights[0][k] - weights[-1][k]).abs().max().item() for k in weights[0])
            print(f"{label:45s} max |w - reference| = {diff:.1e}", flush=True)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads by default, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")


if __name__ == "__main__":
    main()
