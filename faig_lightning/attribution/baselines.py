"""The paper's comparison rankings, as the official code computes them: IG, |theta - theta_bar|, random."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from faig_lightning.attribution.drops import CLEAN
from faig_lightning.attribution.evalset import EvalItem, size_groups, stack
from faig_lightning.attribution.faig import Progress, ReduceFn
from faig_lightning.attribution.filters import FilterIndex
from faig_lightning.attribution.functional import eval_mode, resolve_device
from faig_lightning.attribution.quadrature import quadrature
from faig_lightning.attribution.validation import (
    check_choice,
    check_eval_set,
    check_finite,
    check_pair,
    check_positive_int,
    require_clean,
    resolve_degradations,
)

IG_VARIANTS = ("srresnet", "srcnn", "gauss_legendre")
# Points per input path when not given: the official scripts' 100; 8 Gauss-Legendre nodes matched their top-1 %
# filters (overlap 1.000 blur, 0.993 noise on the quick-start pair, 13x faster; README).
IG_DEFAULT_STEPS = {"srresnet": 100, "srcnn": 100, "gauss_legendre": 8}


def ig_path(variant: str, steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Input-path nodes ``alpha`` (0 = clean LR, 1 = degraded LR) and the weight of each node's gradient.

    ``srresnet`` (official SRResNet script): ``alpha = s/steps`` for ``s = 0..steps-1``, weights ``1/steps``.
    ``srcnn`` (official SRCNN-style script): ``s = 0..steps`` — ``steps + 1`` nodes including both ends — and
    weights 1 (no division). The two differ by a constant factor and the degraded endpoint, so rankings nearly agree.
    ``gauss_legendre``: ``steps`` Gauss-Legendre nodes on [0, 1], weights summing to 1: the integral the
    ``srresnet`` sum approximates, exact for polynomials of degree ``2 steps - 1`` (few nodes suffice on a smooth
    path, as for FAIG). Unchecked: :func:`compute_ig` and ``AttributionSettings`` check ``variant`` and ``steps``.
    """
    steps = IG_DEFAULT_STEPS[variant] if steps is None else steps
    if variant == "srresnet":
        return np.arange(steps) / steps, np.full(steps, 1.0 / steps)
    if variant == "srcnn":
        return np.arange(steps + 1) / steps, np.ones(steps + 1)
    alphas, weights = quadrature("gauss_legendre", steps)
    return alphas[::-1].copy(), weights[::-1].copy()


def default_ig_batch(device: torch.device) -> int:
    """Input-path nodes per forward/backward call (one weight set, so a plain batch)."""
    return 4 if device.type == "cpu" else 32


def compute_ig(
    target: nn.Module,
    eval_set: Sequence[EvalItem],
    *,
    scale: int,
    degradations: Sequence[str] | None = None,
    variant: str = "gauss_legendre",
    steps: int | None = None,
    max_batch: int | None = None,
    device: str | torch.device | None = None,
    reduce_fn: ReduceFn | None = None,
    progress: Progress | None = None,
    extra_units: Sequence[str] = (),
    per_weight: bool = False,
) -> dict[str, np.ndarray]:
    """IG scores per degradation: ``sum_n sum_kernel | sum_k w_k d(sum F(theta, x_alpha_k)) / dW |`` (``ig_path``).

    Only the TARGET is used; ``x_alpha = clean + alpha (degraded - clean)`` runs in input space from
    ``item["lq"]["clean"]``; gradients are taken w.r.t. the unit weights (``extra_units`` as in
    ``FilterIndex.from_model``; ``per_weight`` as in ``FilterIndex.per_filter``); scores are summed over images.
    Not discriminative: each degradation's ranking only sees its own clean-to-degraded paths.
    """
    check_finite(target, "target")
    available = check_eval_set(eval_set, scale)
    require_clean(available)
    degs = resolve_degradations(degradations, available)
    check_choice("IG variant", variant, IG_VARIANTS)
    if steps is not None:
        check_positive_int("IG steps", steps)
    dev = resolve_device(device, target)
    if max_batch is not None:
        check_positive_int("max_batch", max_batch)
    return ig_unchecked(target, eval_set, FilterIndex.from_model(target, extra_units), degs, variant=variant,
                        steps=steps, max_batch=max_batch, device=dev, reduce_fn=reduce_fn, progress=progress,
                        per_weight=per_weight)


def ig_unchecked(
    target: nn.Module,
    eval_set: Sequence[EvalItem],
    index: FilterIndex,
    degs: list[str],
    *,
    variant: str,
    steps: int | None,
    max_batch: int | None,
    device: torch.device,
    reduce_fn: ReduceFn | None,
    progress: Progress | None,
    per_weight: bool,
) -> dict[str, np.ndarray]:
    """:func:`compute_ig` on inputs checked before (the engine checks a run's once): the target's ``index``, the
    ranked degradations ``degs`` of an eval set with clean inputs, valid settings and a resolved ``device``."""
    alphas, weights = ig_path(variant, steps)
    batch = default_ig_batch(device) if max_batch is None else max_batch
    params = {n: p.detach().to(device) for n, p in target.named_parameters()}
    buffers = {n: b.detach().to(device) for n, b in target.named_buffers()}
    conv_names = index.weight_names
    sums = torch.zeros(len(degs), len(index), dtype=torch.float64, device=device)
    alpha_t = torch.tensor(alphas, device=device, dtype=next(iter(params.values())).dtype).view(-1, 1, 1, 1)
    # node weights as a weighted objective: one backward of sum_b w_b sum F(x_b) gives sum_b w_b dF(x_b)/dW
    uniform = bool(np.all(weights == weights[0]))
    weight_t = torch.tensor(weights, device=device, dtype=alpha_t.dtype).view(-1, 1, 1, 1)
    total, done = len(eval_set) * len(degs) * len(alphas), 0
    with eval_mode(target):
        for group in size_groups(eval_set):
            for pos in group:
                clean = stack(eval_set, [pos], CLEAN, device, alpha_t.dtype)
                for di, deg in enumerate(degs):
                    delta_x = stack(eval_set, [pos], deg, device, alpha_t.dtype) - clean
                    acc = [torch.zeros_like(params[n]) for n in conv_names]
                    for start in range(0, len(alphas), batch):
                        leaves = {n: params[n].clone().requires_grad_() for n in conv_names}
                        x = clean + alpha_t[start : start + batch] * delta_x
                        out = functional_call(target, {**params, **leaves, **buffers}, (x,))
                        objective = out.sum() if uniform else (out * weight_t[start : start + batch]).sum()
                        for slot, g in zip(acc, torch.autograd.grad(objective, list(leaves.values())), strict=True):
                            slot.add_(g)
                        done += x.shape[0]
                        if progress is not None:
                            progress("ig", done, total)
                    scale_by = float(weights[0]) if uniform else 1.0  # the official scripts divide the sum once
                    grads = {n: g * scale_by for n, g in zip(conv_names, acc, strict=True)}
                    sums[di] += index.per_filter(grads, per_weight).to(torch.float64)
    if reduce_fn is not None:
        sums = reduce_fn(sums)
    return {d: sums[i].cpu().numpy() for i, d in enumerate(degs)}  # float64 until written


def abs_filter_change(baseline: nn.Module, target: nn.Module, extra_units: Sequence[str] = ()) -> np.ndarray:
    """``sum_kernel |theta - theta_bar| / sum_kernel |theta_bar|`` per filter (float64, degradation-agnostic).

    Zero-norm baseline filters: the denominator is clamped at 1e-30 (float64), so 0/0 scores 0 and a filter
    that grew from zero gets a huge finite score and ranks first (the official numpy division gives inf).
    """
    check_pair(baseline, target)
    return abs_filter_change_unchecked(baseline, target, FilterIndex.from_model(target, extra_units))


def abs_filter_change_unchecked(baseline: nn.Module, target: nn.Module, index: FilterIndex) -> np.ndarray:
    """:func:`abs_filter_change` of a pair checked before (``check_pair``), over the target's ``index``."""
    b_state, t_state = baseline.state_dict(), target.state_dict()
    change = index.per_filter({n: t_state[n].double() - b_state[n].double() for n in index.weight_names})
    norm = index.per_filter({n: b_state[n].double() for n in index.weight_names})
    return (change / norm.clamp_min(1e-30)).cpu().numpy()


def random_scores(num_filters: int, degradations: Sequence[str], seed: int = 0) -> dict[str, np.ndarray]:
    """An independent seeded random permutation per degradation, as scores: descending sort gives it.

    Each degradation's generator is seeded with ``(seed, crc32(name))``, so its permutation does not depend on
    which other degradations are ranked. (The official permutations are unseeded.)
    """
    out = {}
    for deg in degradations:
        perm = np.random.default_rng([seed, zlib.crc32(deg.encode())]).permutation(num_filters)
        scores = np.empty(num_filters, dtype=np.float32)
        scores[perm] = np.arange(num_filters, 0, -1, dtype=np.float32)
        out[deg] = scores
    return out
