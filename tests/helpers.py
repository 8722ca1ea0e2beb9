"""Shared test helpers: image files and baseline/target pairs."""

from __future__ import annotations

import copy
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
