"""`model=custom`: faig-attribute on a network class defined outside the package, from bare and BasicSR state
dicts, and the one-line errors for a class that does not import, a missing class path and a wrong scale."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY, cli_env, rand_img, save

HYBRID = '''
import torch
from torch import nn


class TinyHybrid(nn.Module):
    """Conv embedding, a token MLP and self-attention, then a pixel-shuffle tail."""

    def __init__(self, channels=4, upscale=2):
        super().__init__()
        self.upscale = upscale
        self.embed = nn.Conv2d(3, channels, 3, padding=1)
        self.norm = nn.LayerNorm(channels)
        self.mix = nn.Linear(channels, channels)
        self.attn = nn.MultiheadAttention(channels, 1, batch_first=True)
        self.up = nn.Conv2d(channels, 3 * upscale ** 2, 3, padding=1)
        self.shuffle = nn.PixelShuffle(upscale)

    def forward(self, x):
        f = torch.relu(self.embed(x))
        b, c, h, w = f.shape
        t = f.flatten(2).transpose(1, 2)
        t = t + self.mix(self.norm(t))
        t = t + self.attn(t, t, t, need_weights=False)[0]
        return self.shuffle(self.up(t.transpose(1, 2).reshape(b, c, h, w)))
'''


def _attribute(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**cli_env(tmp_path), "PYTHONPATH": str(tmp_path / "ext")}
    return subprocess.run([sys.executable, "-m", "faig_lightning.attribute", *args], capture_output=True, text=True,
                          env=env, timeout=900)


def test_faig_attribute_on_a_class_outside_the_package(tmp_path):
    (tmp_path / "ext").mkdir()
    (tmp_path / "ext" / "mynets.py").write_text(HYBRID)
    sys.path.insert(0, str(tmp_path / "ext"))
    try:
        mynets = importlib.import_module("mynets")
        torch.manual_seed(0)
        base = mynets.TinyHybrid()
        target = mynets.TinyHybrid()
        target.load_state_dict({k: v + 0.1 * torch.randn_like(v) for k, v in base.state_dict().items()})
    finally:
        sys.path.remove(str(tmp_path / "ext"))
        sys.modules.pop("mynets", None)
    torch.save(base.state_dict(), tmp_path / "base.pth")  # a bare state dict
    torch.save({"params": target.state_dict(), "params_ema": target.state_dict()}, tmp_path / "target.pth")
    for n in range(2):
        save(tmp_path / "gt" / f"img{n}.png", rand_img(32, 32, seed=n))
    common = ["model=custom", "model._target_=mynets.TinyHybrid", "+model.channels=4",
              f"baseline_ckpt={tmp_path / 'base.pth'}", f"target_ckpt={tmp_path / 'target.pth'}",
              f"eval.gt_dir={tmp_path / 'gt'}", f"eval.cache_dir={tmp_path / 'cache'}"]
    out = tmp_path / "run"
    proc = _attribute(tmp_path, *common, "attribution.steps=4", "attribution.proportions=[5]",
                      "attribution.analyses=[modulation,locations]", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    layers = {d["name"]: d["filters"] for d in summary["units"]["layers"]}
    assert layers == {"embed.weight": 12, "mix.weight": 16, "attn.in_proj_weight": 48, "attn.out_proj.weight": 16,
                      "up.weight": 48}
    assert summary["num_filters"] == sum(layers.values())
    assert {"norm.weight", "norm.bias", "attn.in_proj_bias"} <= set(summary["units"]["excluded"])
    assert (out / "masking.csv").is_file() and (out / "filter_locations.csv").is_file()

    # one line and exit code 2 for each bad setting
    for overrides, message in (
        (["model._target_=mynets.Nope"], "model._target_=mynets.Nope could not be built"),
        (["+model.upscale=3"], "the model's scale is 3 but scale=2"),
    ):
        bad = _attribute(tmp_path, *common, *overrides, f"hydra.run.dir={tmp_path / 'bad'}")
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr[-3000:]
        assert len(bad.stderr.strip().splitlines()) == 1
    bad = _attribute(tmp_path, "model=custom", f"baseline_ckpt={tmp_path / 'base.pth'}",
                     f"target_ckpt={tmp_path / 'target.pth'}", f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and "model._target_ is not set" in bad.stderr, bad.stderr[-3000:]


@pytest.mark.slow
def test_faig_train_on_a_class_outside_the_package(tmp_path):
    (tmp_path / "ext").mkdir()
    (tmp_path / "ext" / "mynets.py").write_text(HYBRID)
    for n in range(2):
        save(tmp_path / "gt" / f"img{n}.png", rand_img(32, 32, seed=n))
    tiny = [o for o in TINY if not o.startswith(("model", "data.eval.photos"))]
    env = {**cli_env(tmp_path), "PYTHONPATH": str(tmp_path / "ext")}
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "faig_lightning.train", *tiny, "model=custom",
                           "model._target_=mynets.TinyHybrid", "+model.channels=4",
                           f"data.eval.gt_dir={tmp_path / 'gt'}",
                           "logger=csv", "attribution.methods=[faig,random]", "attribution.proportions=[5]",
                           "attribution.analyses=[locations]", f"hydra.run.dir={run}"],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["num_filters"] == 12 + 16 + 48 + 16 + 48  # the TinyHybrid's units (see the test above)
    assert (run / "masking.csv").is_file()
