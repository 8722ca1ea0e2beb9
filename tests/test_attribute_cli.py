"""`faig-attribute` on checkpoint files: the output contract, bad input, and the callback under DDP."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from faig_lightning.attribute import attribute
from faig_lightning.errors import FaigError
from faig_lightning.nets import MSRResNet
from faig_lightning.schemas import CONF_DIR

SMALL = ["model=srresnet_small", "model.num_feat=8", "model.num_block=1", "eval.photos=[chelsea]", "logger=none"]


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    torch.manual_seed(0)
    base = MSRResNet(scale=2, num_feat=8, num_block=1)
    target = MSRResNet(scale=2, num_feat=8, num_block=1)
    target.load_state_dict({k: v + 0.05 * torch.randn_like(v) for k, v in base.state_dict().items()})
    torch.save({"params_ema": base.state_dict()}, tmp_path / "base.pth")
    torch.save({"params": target.state_dict(), "params_ema": target.state_dict()}, tmp_path / "target.pth")
    return tmp_path / "base.pth", tmp_path / "target.pth"


def _cfg(tmp_path: Path, *overrides: str):
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        return compose("attribute", overrides=[*SMALL, f"eval.cache_dir={tmp_path / 'cache'}", *overrides])


def test_output_contract(tmp_path):
    base, target = _pair(tmp_path)
    out = tmp_path / "run"
    cfg = _cfg(tmp_path, f"baseline_ckpt={base}", f"target_ckpt={target}", "attribution.steps=4",
               "attribution.proportions=[1,5]")
    attribute(cfg, out)
    n = 3 * 8 + 2 * 64 + 8 * 32 + 64 + 8 * 3  # conv_first, body, upconv1, conv_hr, conv_last
    for method in ("faig", "ig", "abs_filter_change", "random"):
        for deg in ("blur", "noise"):
            order = np.loadtxt(out / "attribution" / method / f"{deg}_index.txt", dtype=np.int64)
            scores = np.load(out / "attribution" / method / f"{deg}_scores.npy")
            assert sorted(order.tolist()) == list(range(n)) and scores.dtype == np.float32 and len(scores) == n
            assert np.all(np.diff(scores[order]) <= 0)  # most discriminative first
    faig_blur = np.load(out / "attribution" / "faig" / "blur_scores.npy")
    faig_noise = np.load(out / "attribution" / "faig" / "noise_scores.npy")
    np.testing.assert_allclose(faig_blur, -faig_noise, rtol=1e-5, atol=1e-6 * np.abs(faig_blur).max())  # eq. 7
    rows = list(csv.DictReader((out / "masking.csv").open()))
    assert {"method", "masked_degradation", "proportion", "input_degradation", "psnr", "ssim", "psnr_drop",
            "grad_mse_x1000"} <= set(rows[0])
    assert len(rows) == 4 * 2 * 2 * 3  # methods x masked degradations x proportions x inputs (clean, blur, noise)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_filters"] == n and set(summary["completeness"]) == {"blur", "noise"}
    assert sum(layer["filters"] for layer in summary["units"]["layers"]) == n
    assert (out / "curves.png").stat().st_size > 10_000


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["attribution.proportions=[0,5]"], "proportion"),
        (["attribution.proportions=[101]"], "proportion"),
        (["attribution.steps=0"], "steps"),
        (["attribution.methods=[faig,magic]"], "magic"),
    ],
)
def test_bad_settings(tmp_path, overrides, message):
    base, target = _pair(tmp_path)
    cfg = _cfg(tmp_path, f"baseline_ckpt={base}", f"target_ckpt={target}", *overrides)
    with pytest.raises(FaigError, match=message):
        attribute(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "summary.json").exists()


def test_identical_and_mismatched_checkpoints(tmp_path):
    base, _ = _pair(tmp_path)
    with pytest.raises(FaigError, match="nothing to attribute"):
        attribute(_cfg(tmp_path, f"baseline_ckpt={base}", f"target_ckpt={base}"), tmp_path / "run")
    torch.save({"params_ema": MSRResNet(scale=2, num_feat=16, num_block=1).state_dict()}, tmp_path / "wide.pth")
    with pytest.raises(FaigError, match="shape mismatches"):
        attribute(_cfg(tmp_path, f"baseline_ckpt={base}", f"target_ckpt={tmp_path / 'wide.pth'}"), tmp_path / "r")


def test_unpaired_eval_folders(tmp_path):
    base, target = _pair(tmp_path)
    for sub, names in (("gt", ["a", "b"]), ("blur", ["a"]), ("noise", ["a", "b"])):
        (tmp_path / sub).mkdir()
        for name in names:
            from faig_lightning.data.images import write_png

            size = 32 if sub == "gt" else 16
            write_png(tmp_path / sub / f"{name}.png", np.random.rand(size, size, 3).astype(np.float32))
    cfg = _cfg(tmp_path, f"baseline_ckpt={base}", f"target_ckpt={target}", f"eval.gt_dir={tmp_path / 'gt'}",
               f"eval.degraded_dirs.blur={tmp_path / 'blur'}", f"eval.degraded_dirs.noise={tmp_path / 'noise'}")
    with pytest.raises(FaigError, match="pair"):
        attribute(cfg, tmp_path / "run")


def test_cli_reports_one_line(tmp_path):
    env = {**os.environ, "FAIG_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "faig_lightning.attribute", *SMALL, f"baseline_ckpt={tmp_path / 'missing.pth'}",
         f"target_ckpt={tmp_path / 'missing.pth'}", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].startswith("faig-attribute: error: checkpoint not found")
