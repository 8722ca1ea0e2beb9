"""Per-image PSNR/SSIM as SR papers report them: 8-bit outputs, cropped border, RGB or BT.601 Y (torchmetrics)."""

from __future__ import annotations

import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] and round to 8 bits, like saving the output as PNG."""
    return (x.clamp(0, 1) * 255).round() / 255


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma of an RGB batch in [0, 1] (MATLAB ``rgb2ycbcr``), shape (B, 1, H, W)."""
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    return (65.481 * r + 128.553 * g + 24.966 * b + 16.0) / 255.0


def _prepare(pred: torch.Tensor, gt: torch.Tensor, crop_border: int, y_channel: bool) -> tuple[torch.Tensor, ...]:
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} differ in shape")
    pred, gt = quantize(pred), quantize(gt)
    if crop_border:
        pred = pred[..., crop_border:-crop_border, crop_border:-crop_border]
        gt = gt[..., crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        pred, gt = rgb_to_y(pred), rgb_to_y(gt)
    return pred, gt


def psnr_per_image(pred: torch.Tensor, gt: torch.Tensor, crop_border: int = 0, y_channel: bool = False) -> torch.Tensor:
    """PSNR in dB of each image of a (B, 3, H, W) batch, data range 1."""
    p, g = _prepare(pred, gt, crop_border, y_channel)
    return peak_signal_noise_ratio(p.double(), g.double(), data_range=1.0, reduction="none", dim=(1, 2, 3)).float()


def ssim_per_image(pred: torch.Tensor, gt: torch.Tensor, crop_border: int = 0, y_channel: bool = False) -> torch.Tensor:
    """SSIM (Gaussian window 11, σ 1.5) of each image of a (B, 3, H, W) batch, data range 1."""
    p, g = _prepare(pred, gt, crop_border, y_channel)
    return structural_similarity_index_measure(p.float(), g.float(), data_range=1.0, reduction="none")
