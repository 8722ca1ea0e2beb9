"""The image panel of the paper's Figure 2: what masking each degradation's top filters does to one image."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from faig_lightning.attribution.evalset import EvalItem
from faig_lightning.attribution.masking import FilterMasker
from faig_lightning.attribution.metrics import quantize
from faig_lightning.errors import FaigError


@dataclass
class Figure2Panel:
    """``rows[input degradation]`` is a (columns, 3, H, W) float tensor in [0, 1] on the CPU (8-bit values)."""

    columns: list[str]
    rows: dict[str, torch.Tensor]

    def grid(self) -> np.ndarray:
        """All rows side by side as one uint8 (rows*H, columns*W, 3) image, rows in ``rows`` order."""
        lines = [torch.cat(list(row), dim=2) for row in self.rows.values()]
        image = torch.cat(lines, dim=1).permute(1, 2, 0)
        return torch.round(image * 255).to(torch.uint8).numpy()


@torch.no_grad()
def figure2_panel(
    baseline: nn.Module,
    target: nn.Module,
    item: EvalItem,
    rankings: Mapping[str, np.ndarray],
    *,
    scale: int,
    proportion: float = 1.0,
    inputs: Sequence[str] | None = None,
    masker: FilterMasker | None = None,
    device: str | torch.device | None = None,
) -> Figure2Panel:
    """Per input degradation (default: the ranked ones): the input (nearest-upsampled), the target's output, and
    the output with each ranked degradation's top ``proportion`` % filters masked (e.g. deblur, denoise).

    ``rankings`` maps degradation -> ranking, e.g. ``result.rankings["faig"]``. Pass ``masker`` to reuse a
    working copy of the target.
    """
    masker = masker if masker is not None else FilterMasker(baseline, target, device=device)
    net = masker.net
    dev = next(net.parameters()).device
    rows_for = list(inputs) if inputs is not None else list(rankings)
    missing = [d for d in rows_for if d not in item["lq"]]
    if missing:
        raise FaigError(f"image {item['name']!r} has no input for {missing}; it has {list(item['lq'])}")
    columns = ["input (nearest)", "target"] + [f"{d} filters masked ({proportion:g}%)" for d in rankings]
    x = torch.stack([item["lq"][d] for d in rows_for]).to(dev)
    outputs = [F.interpolate(x, scale_factor=scale, mode="nearest"), quantize(net(x))]
    for ranked in rankings.values():
        with masker.masked(ranked[: masker.index.top_k(proportion)]) as masked:
            outputs.append(quantize(masked(x)))
    stacked = torch.stack(outputs, dim=1).clamp(0, 1).float().cpu()
    return Figure2Panel(columns=columns, rows={d: stacked[n] for n, d in enumerate(rows_for)})
