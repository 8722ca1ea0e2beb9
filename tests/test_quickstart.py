"""The README's main job, `bash scripts/quickstart.sh`, run as written (W&B offline), shows the FAIG finding.

Slow (~10 minutes on 2 CPU cores): set-up, both stages on the embedded photos, then the attribution callback with
every method and the three analyses. The criterion is the one `faig-summarize` checks per seed
(`faig_lightning.sweeps.seeds.Criterion`).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from faig_lightning.sweeps import load_run
from faig_lightning.sweeps.seeds import Criterion

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_target_learns_and_faig_finds_each_function(tmp_path):
    run = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline", "FAIG_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "quickstart.sh"), f"hydra.run.dir={run}"],
                          capture_output=True, text=True, env=env, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 2  # the default logger: one W&B run per stage

    base = json.loads((run / "baseline" / "summary.json").read_text())["final_metrics"]
    target = json.loads((run / "target" / "summary.json").read_text())["final_metrics"]
    for deg in ("blur", "noise"):  # the target restores what the baseline cannot, on held-out photos
        assert target[f"val/psnr/{deg}"] - base[f"val/psnr/{deg}"] >= 1.0, (base, target)

    checks = Criterion().check(load_run(run, "quickstart"))
    assert [c["masked_degradation"] for c in checks] == ["blur", "noise"]
    assert all(c["passed"] for c in checks), checks

    # the analyses ran: modulation and locations on FAIG's 1 %, and the prediction rule beats chance at trained levels
    assert (run / "modulation.csv").is_file() and (run / "filter_locations.csv").is_file()
    prediction = json.loads((run / "degradation_prediction.json").read_text())["accuracy"]
    assert prediction["seen"] > 1.5 * prediction["chance"], prediction
