"""Metrics of (masked) SR outputs: PSNR, SSIM vs GT and the paper's gradient-map difference vs the target.

Every output is quantised to 8 bit first (``round(clamp(x, 0, 1) * 255) / 255``), as the official pipeline saves
PNGs; all images, gradient maps included, are on the [0, 1] scale. PSNR and SSIM crop ``scale`` pixels at each
border (BasicSR's ``crop_border``) and are computed on RGB; the GT is used as given.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from faig_lightning.attribution.evalset import EvalItem, batches, size_groups, stack
from faig_lightning.attribution.faig import ReduceFn
from faig_lightning.attribution.validation import check_choice
from faig_lightning.metrics import psnr_per_image as psnr
from faig_lightning.metrics import quantize
from faig_lightning.metrics import ssim_per_image as ssim

CHANNELS = ("grey", "blue")
METRICS = ("psnr", "ssim", "grad_mse_x1000")
_LUMA = (0.299, 0.587, 0.114)  # ITU-R BT.601


def gradient_map(img: torch.Tensor, channel: str = "grey") -> torch.Tensor:
    """Gradient magnitude ``sqrt(gx^2 + gy^2 + 1e-6)`` (B, 1, H, W) of (B, 3, H, W) RGB images in [0, 1].

    Central differences ``h = [[0,0,0],[-1,0,1],[0,0,0]]`` and its transpose, zero padding 1.
    ``channel="grey"`` uses BT.601 luma ``0.299 R + 0.587 G + 0.114 B`` (the paper's stated intent);
    ``channel="blue"`` uses RGB channel 2, reproducing the official code, whose ``cv2.imread(path, 6)`` keeps BGR
    and whose "grey" map is really the blue channel's.
    """
    check_choice("gradient-map channel", channel, CHANNELS)
    if channel == "grey":
        weights = torch.tensor(_LUMA, dtype=img.dtype, device=img.device).view(1, 3, 1, 1)
        plane = (img * weights).sum(dim=1, keepdim=True)
    else:
        plane = img[:, 2:3]
    kernel_h = torch.tensor([[0, 0, 0], [-1, 0, 1], [0, 0, 0]], dtype=img.dtype, device=img.device)
    kernels = torch.stack([kernel_h, kernel_h.T]).unsqueeze(1)
    g = F.conv2d(plane, kernels, padding=1)
    return torch.sqrt(g[:, :1] ** 2 + g[:, 1:] ** 2 + 1e-6)


def gradient_mse_x1000(pred: torch.Tensor, ref: torch.Tensor, channel: str = "grey") -> torch.Tensor:
    """Per-image ``1000 * mean((G(pred) - G(ref))^2)`` of the gradient maps; higher = output changed more."""
    diff = gradient_map(pred, channel) - gradient_map(ref, channel)
    return 1000 * (diff**2).mean(dim=(1, 2, 3))


def default_eval_batch(device: torch.device) -> int:
    """Images per forward pass when measuring: small on CPU, larger on accelerators."""
    return 4 if device.type == "cpu" else 16


class Evaluator:
    """Runs nets over the eval set (batched by size) and averages metrics per input degradation.

    ``set_reference(net)`` stores that net's quantised outputs (the unmasked target) for the gradient-map metric.
    Means are sums over images divided by counts, after ``reduce_fn`` (DDP: sum over processes). The stacked
    inputs and GT of every size-batch are kept on ``device`` after first use: a masking table evaluates the same
    images dozens of times, and re-reading them (PNG decoding for a folder eval set) cost as much as the nets did.
    """

    def __init__(
        self,
        eval_set: Sequence[EvalItem],
        *,
        scale: int,
        degradations: Sequence[str],
        device: torch.device,
        channel: str = "grey",
        max_batch: int = 4,
        reduce_fn: ReduceFn | None = None,
    ) -> None:
        self.eval_set, self.scale, self.degradations = eval_set, scale, list(degradations)
        self.device, self.channel = device, check_choice("gradient-map channel", channel, CHANNELS)
        self.reduce_fn = reduce_fn
        self.chunks = [chunk for group in size_groups(eval_set) for chunk in batches(group, max_batch)]
        self._reference: dict[tuple[str, int], torch.Tensor] = {}
        self._stacked: dict[tuple[str | None, int, torch.dtype], torch.Tensor] = {}

    def _stack(self, degradation: str | None, chunk: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """One size-batch of ``degradation`` inputs (None: the GT) on the device, cached."""
        key = (degradation, chunk, dtype)
        if key not in self._stacked:
            self._stacked[key] = stack(self.eval_set, self.chunks[chunk], degradation, self.device, dtype)
        return self._stacked[key]

    @torch.no_grad()
    def outputs(self, net: nn.Module, degradation: str, chunk: int) -> torch.Tensor:
        """Quantised outputs of ``net`` on one size-batch of ``degradation`` inputs."""
        x = self._stack(degradation, chunk, next(net.parameters()).dtype)
        return quantize(net(x).float())

    def set_reference(self, net: nn.Module) -> None:
        """Store ``net``'s outputs (as uint8) as the reference of the gradient-map metric."""
        for deg in self.degradations:
            for c in range(len(self.chunks)):
                self._reference[deg, c] = torch.round(self.outputs(net, deg, c) * 255).to(torch.uint8)

    def evaluate(self, net: nn.Module) -> dict[str, dict[str, float]]:
        """``{input degradation: {"psnr", "ssim", "grad_mse_x1000" (if a reference is set)}}`` averaged over images."""
        sums = torch.zeros(len(self.degradations), len(METRICS) + 1, dtype=torch.float64, device=self.device)
        for di, deg in enumerate(self.degradations):
            for c, positions in enumerate(self.chunks):
                out = self.outputs(net, deg, c)
                gt = self._stack(None, c)
                sums[di, 0] += psnr(out, gt, self.scale).double().sum()
                sums[di, 1] += ssim(out, gt, self.scale).double().sum()
                if self._reference:
                    ref = self._reference[deg, c].float() / 255
                    sums[di, 2] += gradient_mse_x1000(out, ref, self.channel).double().sum()
                sums[di, 3] += len(positions)
        if self.reduce_fn is not None:
            sums = self.reduce_fn(sums)
        means = (sums[:, :3] / sums[:, 3:]).cpu().tolist()
        names = METRICS if self._reference else METRICS[:2]
        return {deg: dict(zip(names, row, strict=False)) for deg, row in zip(self.degradations, means, strict=True)}
