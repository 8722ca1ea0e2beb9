"""Filter modulation: move only one degradation's discriminative filters along the baseline -> target line.

``W(lam) = lam * W_target + (1 - lam) * W_baseline`` on the top filters, every other weight the target's: lam = 0
is the masked model, lam = 1 the target, lam > 1 extrapolates. If the filters carry a restoration, the PSNR on
that degradation's inputs should follow lam while the other inputs stay put.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from faig_lightning.attribution.evalset import EvalItem
from faig_lightning.attribution.faig import Progress
from faig_lightning.attribution.masking import FilterMasker, filter_set_key
from faig_lightning.attribution.metrics import Evaluator, quantize

DEFAULT_LAMBDAS = tuple(round(0.1 * k, 1) for k in range(16))  # 0, 0.1, ..., 1.5


@dataclass(frozen=True)
class ModulationRow:
    """PSNR/SSIM on ``input_degradation`` inputs with ``method``'s top ``proportion`` % filters for
    ``degradation`` set to ``lam * target + (1 - lam) * baseline`` (CSV column ``lambda``)."""

    method: str
    degradation: str
    proportion: float
    lam: float
    input_degradation: str
    psnr: float
    ssim: float


def modulation_curves(
    masker: FilterMasker,
    evaluator: Evaluator,
    rankings: Mapping[str, np.ndarray],
    *,
    method: str,
    proportion: float = 1.0,
    lambdas: Sequence[float] = DEFAULT_LAMBDAS,
    known: Mapping[tuple[bytes, float], Mapping[str, Mapping[str, float]]] | None = None,
    unmasked: Mapping[str, Mapping[str, float]] | None = None,
    progress: Progress | None = None,
) -> list[ModulationRow]:
    """Metrics of the modulated target for every ranked degradation (``rankings``: degradation -> ranking of
    ``method``) and every lambda, on every input of ``evaluator``.

    ``known`` maps ``(filter_set_key(filters), lam)`` to metrics already measured (e.g. masking's, lam = 0) and
    ``unmasked`` holds the target's (lam = 1: the modulated weights equal the target's bit for bit); those points
    are not evaluated again.
    """
    rows = []
    jobs = [(deg, lam) for deg in rankings for lam in lambdas]
    for n, (deg, lam) in enumerate(jobs, start=1):
        top = rankings[deg][: masker.index.top_k(proportion)]
        metrics = (known or {}).get((filter_set_key(top), float(lam)))
        if metrics is None and lam == 1 and unmasked is not None:
            metrics = unmasked
        if metrics is None:
            with masker.masked(top, float(lam)) as net:
                metrics = evaluator.evaluate(net)
        for inp, m in metrics.items():
            rows.append(ModulationRow(method, deg, float(proportion), float(lam), inp, m["psnr"], m["ssim"]))
        if progress is not None:
            progress("modulation", n, len(jobs))
    return rows


def strip_lambdas(lambdas: Sequence[float], columns: int = 6) -> tuple[float, ...]:
    """At most ``columns`` of ``lambdas`` (sorted, evenly spaced, both ends kept) for an image strip."""
    values = sorted(set(float(v) for v in lambdas))
    if len(values) <= columns:
        return tuple(values)
    picks = np.linspace(0, len(values) - 1, columns).round().astype(int)
    return tuple(values[i] for i in picks)


@torch.no_grad()
def modulation_strip(
    masker: FilterMasker,
    item: EvalItem,
    rankings: Mapping[str, np.ndarray],
    *,
    proportion: float = 1.0,
    lambdas: Sequence[float] = (0.0, 0.5, 1.0, 1.5),
    crop: int | None = 128,
) -> dict[str, torch.Tensor]:
    """Per ranked degradation: the outputs on that degradation's input of ``item`` with its top filters modulated,
    one per lambda, as a (len(lambdas), 3, H, W) float tensor in [0, 1] on the CPU (centre ``crop`` of the SR
    output, None for all of it)."""
    dev = next(masker.net.parameters()).device
    out = {}
    for deg, order in rankings.items():
        x = item["lq"][deg][None].to(dev)
        frames = []
        for lam in lambdas:
            with masker.masked(order[: masker.index.top_k(proportion)], float(lam)) as net:
                frames.append(quantize(net(x))[0].float().cpu())
        stack = torch.stack(frames)
        if crop is not None:
            h, w = stack.shape[-2:]
            top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
            stack = stack[..., top : top + crop, left : left + crop]
        out[deg] = stack
    return out

