"""Shared test helpers: image files and baseline/target pairs."""

from __future__ import annotations

import copy
import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


def save(path: Path, pixels: np.ndarray) -> Path:
    """Write a uint8 HWC array as an image file (creating folders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def rand_img(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A random uint8 RGB image."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def make_pair(net: nn.Module, seed: int = 0, strength: float = 0.3) -> tuple[nn.Module, nn.Module]:
    """Baseline and a target = baseline + a relative perturbation of every tensor (biases included)."""
    torch.manual_seed(seed)
    baseline = net.eval()
    target = copy.deepcopy(baseline)
    with torch.no_grad():
        for p in target.parameters():
            p.add_(strength * torch.randn_like(p) * (p.abs().mean() + 0.01))
    return baseline, target


TINY = [
    "model=srresnet_small", "model.num_feat=4", "model.num_block=1",
    "data.batch_size=2", "data.gt_size=16", "data.eval.photos=[chelsea]",
    "baseline.max_steps=4", "baseline.val_every=2", "target.max_steps=4", "target.val_every=2",
    "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false", "eval.log_images=false",
]
"""A two-stage run in seconds: a 4-feature MSRResNet, 4 steps per stage, one eval photo."""


def make_eval_set(sizes=((8, 8), (6, 10)), degradations=("clean", "blur", "noise")) -> list[dict]:
    """Random x2 eval items of the given LR ``sizes``: ``gt`` and one LR image per degradation, seeded."""
    gen = torch.Generator().manual_seed(0)
    return [
        {
            "name": f"img{n}",
            "gt": torch.rand(3, 2 * h, 2 * w, generator=gen),
            "lq": {d: torch.rand(3, h, w, generator=gen) for d in degradations},
        }
        for n, (h, w) in enumerate(sizes)
    ]


def cli_env(tmp_path: Path) -> dict[str, str]:
    """Environment of a CLI subprocess: offline W&B, outputs and caches under ``tmp_path``, one thread."""
    return {**os.environ, "WANDB_MODE": "offline", "FAIG_CACHE_DIR": str(tmp_path / "cache"),
            "FAIG_OUTPUT_DIR": str(tmp_path / "outputs"), "OMP_NUM_THREADS": "1"}


def run_cli(tmp_path: Path, module: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """``python -m <module> args`` with ``cli_env``; raises with the output tails when ``check`` and it fails."""
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env=cli_env(tmp_path), timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def faig_train(tmp_path: Path, *overrides: str, multirun: bool = False, check: bool = True
               ) -> subprocess.CompletedProcess:
    """``faig-train`` on the ``TINY`` config plus ``overrides``."""
    return run_cli(tmp_path, "faig_lightning.train", *(["-m"] if multirun else []), *TINY, *overrides, check=check)


def wandb_config_value(run_dir: Path, key: str) -> object:
    """A config value of an offline W&B run, read from its protobuf log: the item's key field is followed by its
    ``value_json`` field (a varint tag, a varint length, then the JSON text)."""
    (log,) = run_dir.glob("*.wandb")
    data = log.read_bytes()
    pos = data.index(bytes([len(key)]) + key.encode()) + 1 + len(key)

    def varint() -> int:
        nonlocal pos
        value, shift = 0, 0
        while True:
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value

    varint()  # the field tag
    length = varint()
    return json.loads(data[pos : pos + length])


class AllLayers(nn.Module):
    """A tiny x2 SR net with every attributable layer type: convs (plain, depthwise, grouped, 1x1, 1-D, 3-D,
    transposed and grouped), Linear and self-/cross-attention (fused and separate input projections), plus
    parameters that are not unit weights: a LayerNorm and a learned prompt added to the tokens."""

    def __init__(self, c: int = 4) -> None:
        super().__init__()
        self.scale = 2
        self.head = nn.Conv2d(3, c, 3, padding=1)
        self.depthwise = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.grouped = nn.Conv2d(c, c, 3, padding=1, groups=2)
        self.pointwise = nn.Conv2d(c, c, 1)
        self.rows = nn.Conv1d(c, c, 3, padding=1)
        self.volume = nn.Conv3d(1, 2, 3, padding=1)
        self.norm = nn.LayerNorm(c)
        self.prompt = nn.Parameter(0.1 * torch.randn(c))
        self.mlp = nn.Linear(c, 2 * c)
        self.mlp_out = nn.Linear(2 * c, c)
        self.attn = nn.MultiheadAttention(c, 2, batch_first=True)
        self.cross = nn.MultiheadAttention(c, 1, kdim=2 * c, vdim=c, batch_first=True)
        self.up = nn.ConvTranspose2d(c, 6, 4, stride=2, padding=1, groups=2)
        self.tail = nn.Conv2d(6, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu = nn.functional.relu
        f = relu(self.head(x))
        f = f + self.pointwise(relu(self.grouped(relu(self.depthwise(f)))))
        b, c, h, w = f.shape
        f = f + self.rows(f.reshape(b, c, h * w)).reshape(b, c, h, w)
        f = f + self.volume(f[:, None]).mean(1)
        t = self.norm(f.flatten(2).transpose(1, 2)) + self.prompt  # (b, h*w, c) tokens
        t = t + self.mlp_out(nn.functional.gelu(self.mlp(t)))
        t = t + self.attn(t, t, t, need_weights=False)[0]
        t = t + self.cross(t, torch.cat([t, t], -1), t, need_weights=False)[0]
        f = t.transpose(1, 2).reshape(b, c, h, w)
        return self.tail(relu(self.up(f))) + nn.functional.interpolate(x, scale_factor=2, mode="bilinear")


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header, values as the exact strings."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, timeout: float = 300) -> None:
    """Poll ``condition`` until it holds; fail when ``proc`` exits first (with its stderr) or after ``timeout`` s."""
    end = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"exited {proc.returncode} early:\n{proc.stderr.read()[-3000:]}"
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)
