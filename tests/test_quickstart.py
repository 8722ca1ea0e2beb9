"""The README's main job, `faig-train experiment=quickstart`, reproduces the paper's qualitative result.

Slow (~10 minutes on 2 CPU cores): both stages are trained on the embedded photos, then the attribution
callback ranks and masks (FAIG and random; IG and |θ−θ̄| are left out here only to save time).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_quickstart_target_learns_and_faig_finds_each_function(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "FAIG_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "faig_lightning.train", "experiment=quickstart", "logger=csv",
           "attribution.methods=[faig,random]", "attribution.proportions=[1]", "trainer.enable_progress_bar=false",
           f"hydra.run.dir={run}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-5000:]

    base = json.loads((run / "baseline" / "summary.json").read_text())["final_metrics"]
    target = json.loads((run / "target" / "summary.json").read_text())["final_metrics"]
    for deg in ("blur", "noise"):  # the target restores what the baseline cannot, on held-out photos
        assert target[f"val/psnr/{deg}"] - base[f"val/psnr/{deg}"] >= 1.0, (base, target)

    drop = {(r["method"], r["masked_degradation"], r["input_degradation"]): float(r["psnr_drop"])
            for r in csv.DictReader((run / "masking.csv").open())}
    for masked, other in (("blur", "noise"), ("noise", "blur")):
        targeted = drop[("faig", masked, masked)]
        assert targeted >= 1.0, drop  # 1 % of the filters carry this restoration ...
        assert targeted >= 5 * max(drop[("random", masked, masked)], 0.0), drop  # ... far more than random 1 % ...
        assert drop[("faig", masked, other)] < targeted / 2, drop  # ... and mostly not the other one
