"""SRCNN-style plain network of the FAIG paper: 3x3 convs, LeakyReLU, PixelShuffle."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class SRCNNStyle(nn.Module):
    """Plain ``nn.Sequential`` named ``features``; no skip, no global residual.

    With the paper's defaults (``cfg=(64, 128, 128, 128, 128, 128)``, scale 2) the state-dict keys are
    ``features.{0,2,4,6,8,10,12,15,17}.weight|bias`` and the net has 156,224 filters.
    """

    def __init__(
        self,
        scale: int = 2,
        cfg: Sequence[int] = (64, 128, 128, 128, 128, 128),
        in_channels: int = 3,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"SRCNNStyle supports scale 2, 3 or 4, got {scale}")
        self.scale = scale
        layers: list[nn.Module] = []
        prev = in_channels
        for width in cfg:
            layers += [nn.Conv2d(prev, width, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True)]
            prev = width
        layers += [
            nn.Conv2d(prev, prev * scale * scale, 3, 1, 1),
            nn.PixelShuffle(scale),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(prev, prev, 3, 1, 1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(prev, out_channels, 3, 1, 1),
        ]
        self.features = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)
