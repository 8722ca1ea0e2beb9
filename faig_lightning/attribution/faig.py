"""FAIG: filter attribution by integrated gradients along the straight path from baseline to target weights.

For an image ``x`` with ground truth ``y`` and ``L(theta) = sum((F(theta, x) - y) ** 2)`` (sum, not mean),

    FAIG_j(x) = sum over the kernel of filter j of | dtheta * sum_k w_k dL/dtheta (theta_bar + alpha_k dtheta) |

with ``dtheta = theta - theta_bar`` and a quadrature rule ``(alpha_k, w_k)`` on [0, 1]. The
per-degradation score is ``S_d = mean_n FAIG(x_n^d)`` and the discriminative score is ``D_d = S_d - S_other``
for two ranked degradations; with more it is one-vs-rest, ``D_d = S_d - mean_{e != d} S_e``, and with one
it is ``S_d`` itself.

Every (image, degradation, node) gradient is computed once and serves every ranking (the official code
computes each twice, once per direction). Gradients come from ``torch.func.functional_call`` on the
interpolated parameters, one sample at a time or ``vmap``-batched over up to ``max_batch`` (image,
degradation, node) samples of the same size (grouped convolutions; the fast path on GPUs).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from faig_lightning.attribution.evalset import EvalItem, size_groups, stack
from faig_lightning.attribution.filters import FilterIndex
from faig_lightning.attribution.functional import ParameterPath, eval_mode, resolve_device
from faig_lightning.attribution.quadrature import quadrature
from faig_lightning.attribution.validation import check_eval_set, check_pair, check_positive_int, resolve_degradations
from faig_lightning.errors import FaigError

Progress = Callable[[str, int, int], None]
ReduceFn = Callable[[torch.Tensor], torch.Tensor]

# Defaults, from benchmarks/attribution_speed.py (MSRResNet 32x4, random and quick-start pairs, 3 photos of
# 128x128, see README): Gauss-Legendre with 8 nodes matched the converged integral (64 nodes) on the top-1 %
# filters at least as well as the official 100-step rule does, 22-28x faster than the official pipeline;
# 4 nodes (completeness gap > 1e-2) lost 1.5-3 % of the top-1 % filters.
# Hence "auto" from 8 nodes with tol 1e-2: 8 nodes on smooth paths, doubling on rough ones, never more nodes in
# all than the paper's 100 steps (8 + 16 + 32), and no further once the gap stops shrinking (numerical noise).
# The paper preset is rule="official", steps=100.
DEFAULT_RULE = "gauss_legendre"
DEFAULT_STEPS = "auto"
DEFAULT_TOL = 1e-2
AUTO_START_STEPS = 8
AUTO_BUDGET = 100
FLOAT32_EPS = float(np.finfo(np.float32).eps)


@dataclass(frozen=True)
class Completeness:
    """Completeness check of one degradation, summed over images.

    ``estimate = sum_n sum_params dtheta * G_n`` (signed, no abs) approximates
    ``exact = sum_n L_n(theta) - L_n(theta_bar)``; they agree for the exact integral.
    """

    estimate: float
    exact: float
    magnitude: float = 0.0  # sum_n sum_params |dtheta * G_n| + |L_n(theta)| + |L_n(theta_bar)|

    @property
    def gap(self) -> float:
        """Relative quadrature error ``|estimate - exact| / |exact|``."""
        return abs(self.estimate - self.exact) / max(abs(self.exact), 1e-30)

    @property
    def floor(self) -> float:
        """Numerical floor of ``gap``: a worst-case bound, float32 rounding of every summed term relative to the
        difference. When the loss barely changes along the path the terms cancel, and float32 gradients and losses
        cannot resolve the difference better than this, whatever the number of nodes (typical errors are smaller).
        """
        return FLOAT32_EPS * self.magnitude / max(abs(self.exact), 1e-30)


@dataclass
class FaigResult:
    """FAIG scores: ``per_degradation[d]`` = S_d and ``discriminative[d]`` = D_d, float64 arrays of length N.

    S_d and D_d stay in float64 from the per-filter sums on: where S_blur and S_noise nearly cancel, a float32
    rounding before the difference would lose digits (files store them as float32, rankings use these)."""

    per_degradation: dict[str, np.ndarray]
    discriminative: dict[str, np.ndarray]
    completeness: dict[str, Completeness]
    steps: int
    rule: str
    converged: bool  # every completeness gap < tol
    gradient_evaluations: int
    stop_reason: str = "fixed steps"  # auto: "converged", "noise floor", "not shrinking" or "budget"
    max_batch: int = 1  # samples per gradient call that were used
    timings: dict[str, float] = field(default_factory=dict)


MAX_BATCH_CAP = 32  # an H200 measured 8.9 s at 8 and 8.7 s at 32 samples per call (MSRResNet 64x16): no gain beyond


def default_max_batch(device: torch.device) -> int:
    """Samples per gradient call without a memory probe: 1 on CPU, where a plain loop beat vmap's grouped
    convolutions by 20-40 % on 2 cores; 8 on other accelerators (CUDA probes its free memory instead)."""
    return 1 if device.type == "cpu" else 8


def discriminative_scores(per_degradation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``D_d = S_d - mean of the other S_e`` (eq. 7; exactly ``S_d - S_other`` for two degradations), in float64."""
    names = list(per_degradation)
    scores = {d: np.asarray(s, dtype=np.float64) for d, s in per_degradation.items()}
    if len(names) == 1:
        return {names[0]: scores[names[0]].copy()}
    out = {}
    for d in names:
        others = [scores[e] for e in names if e != d]
        out[d] = scores[d] - (others[0] if len(others) == 1 else np.mean(others, axis=0))
    return out


class _Integrator:
    """Accumulates quadrature-weighted gradients per (image, degradation) and reduces them to FAIG sums."""

    def __init__(
        self,
        net: nn.Module,
        path: ParameterPath,
        index: FilterIndex,
        eval_set: Sequence[EvalItem],
        degradations: list[str],
        device: torch.device,
        max_batch: int,
        per_weight: bool = False,
    ) -> None:
        self.net, self.path, self.index = net, path, index
        self.eval_set, self.degradations = eval_set, degradations
        self.device, self.max_batch = device, max_batch
        self.per_weight = per_weight
        self.names = list(path.base)
        # nn.MultiheadAttention takes a fused kernel without a derivative under vmap: one sample per call there
        self.vmappable = not any(isinstance(m, nn.MultiheadAttention) for m in net.modules())

    def _loss(self, params: dict[str, torch.Tensor], x: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return ((functional_call(self.net, params, (x,)) - gt) ** 2).sum(dtype=torch.float64)

    def _gradients(
        self, x: torch.Tensor, gt: torch.Tensor, alphas: list[float]
    ) -> tuple[list[list[torch.Tensor]], list[torch.Tensor]]:
        """Per-sample gradients of every parameter (one list per sample) and the per-sample (detached) losses."""
        if len(alphas) == 1:
            params = self.path.params(alphas[0])
            loss = self._loss({**params, **self.path.buffers(alphas[0])}, x, gt)
            return [list(torch.autograd.grad(loss, list(params.values())))], [loss.detach()]
        if not self.vmappable:
            pairs = [self._gradients(x[b : b + 1], gt[b : b + 1], [a]) for b, a in enumerate(alphas)]
            return [g[0] for g, _ in pairs], [loss[0] for _, loss in pairs]
        params = self.path.stacked_params(alphas)
        buffers = self.path.stacked_buffers(alphas)

        def one(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
            return self._loss(p, xi.unsqueeze(0), yi.unsqueeze(0))

        losses = vmap(one)({**params, **buffers}, x, gt)
        stacked = torch.autograd.grad(losses.sum(), list(params.values()))
        return [[g[b] for g in stacked] for b in range(len(alphas))], list(losses.detach())

    def run(self, alphas: np.ndarray, weights: np.ndarray, progress: Progress | None) -> dict[str, torch.Tensor]:
        """One pass over the eval set; returns local sums: scores (D, N), counts, estimates and exact differences."""
        num_d, num_k = len(self.degradations), len(alphas)
        sums = {
            "scores": torch.zeros(num_d, len(self.index), dtype=torch.float64, device=self.device),
            "counts": torch.zeros(num_d, dtype=torch.float64, device=self.device),
            "estimate": torch.zeros(num_d, dtype=torch.float64, device=self.device),
            "exact": torch.zeros(num_d, dtype=torch.float64, device=self.device),
            "magnitude": torch.zeros(num_d, dtype=torch.float64, device=self.device),
        }
        total, done = len(self.eval_set) * num_d * num_k, 0
        dtype = self.path.dtype
        for group in size_groups(self.eval_set):
            for pos in group:
                gt = stack(self.eval_set, [pos], None, self.device, dtype)
                inputs = torch.cat([stack(self.eval_set, [pos], d, self.device, dtype) for d in self.degradations])
                # the (degradation, node) units of this image, in chunks of max_batch samples
                units = [(d, k) for d in range(num_d) for k in range(num_k)]
                # weighted gradient sums, the products and the kernel sums in float64 (gradients are float32)
                acc = {d: [torch.zeros_like(self.path.base[n], dtype=torch.float64) for n in self.names]
                       for d in range(num_d)}
                endpoint_loss: dict[tuple[int, float], torch.Tensor] = {}
                for start in range(0, len(units), self.max_batch):
                    chunk = units[start : start + self.max_batch]
                    x = inputs[[d for d, _ in chunk]]
                    y = gt.expand(len(chunk), *gt.shape[1:])
                    grads, losses = self._gradients(x, y, [float(alphas[k]) for _, k in chunk])
                    for (d, k), sample, loss in zip(chunk, grads, losses, strict=True):
                        for slot, g in zip(acc[d], sample, strict=True):
                            slot.add_(g, alpha=float(weights[k]))
                        if alphas[k] in (0.0, 1.0):
                            endpoint_loss[d, float(alphas[k])] = loss
                    done += len(chunk)
                    if progress is not None:
                        progress("faig", done, total)
                for d in range(num_d):
                    for a in (1.0, 0.0):  # endpoints the nodes did not visit: plain forward passes
                        if (d, a) not in endpoint_loss:
                            endpoint_loss[d, a] = self._loss_at(a, inputs[d : d + 1], gt)
                    sums["exact"][d] += endpoint_loss[d, 1.0] - endpoint_loss[d, 0.0]
                    products = {n: self.path.delta64[n] * g for n, g in zip(self.names, acc[d], strict=True)}
                    # completeness is linear in the gradients: sum_k w_k dtheta.g_k = dtheta.G over all parameters
                    sums["estimate"][d] += sum(p.sum(dtype=torch.float64) for p in products.values())
                    sums["magnitude"][d] += sum(p.abs().sum(dtype=torch.float64) for p in products.values())
                    sums["magnitude"][d] += endpoint_loss[d, 1.0].abs() + endpoint_loss[d, 0.0].abs()
                    sums["scores"][d] += self.index.per_filter(products, self.per_weight)
                    sums["counts"][d] += 1
        return sums

    def memory_max_batch(self, cap: int = MAX_BATCH_CAP) -> int:
        """CUDA: samples per call that fit in half the free memory, from the peak of a 2-sample probe on the
        largest eval image (vmap's memory grows linearly with the samples)."""
        largest = max(range(len(self.eval_set)), key=lambda i: self.eval_set[i]["gt"].numel())
        dtype = self.path.dtype
        gt = stack(self.eval_set, [largest], None, self.device, dtype).expand(2, -1, -1, -1)
        x = stack(self.eval_set, [largest], self.degradations[0], self.device, dtype).expand(2, -1, -1, -1)
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        base = torch.cuda.memory_allocated(self.device)
        self._gradients(x, gt, [0.5, 0.5])
        per_sample = max((torch.cuda.max_memory_allocated(self.device) - base) / 2, 1.0)
        free, _ = torch.cuda.mem_get_info(self.device)
        return max(1, min(cap, int(0.5 * free / per_sample)))

    @torch.no_grad()
    def _loss_at(self, alpha: float, x: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """The loss at one point of the path, without gradients."""
        return self._loss(self.path.endpoint(alpha), x, gt)


def step_levels(steps: int | str, budget: int = AUTO_BUDGET) -> list[int]:
    """The step counts to try: ``[steps]``, or for ``"auto"`` 8, 16, 32, ... while their sum stays within
    ``budget`` (each level is computed afresh, so ``budget`` bounds the nodes evaluated in all)."""
    if steps != "auto":
        if isinstance(steps, str):
            raise FaigError(f"steps must be an integer >= 1 or 'auto', got {steps!r}")
        return [steps]
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < AUTO_START_STEPS:
        raise FaigError(f"the steps='auto' budget must be an integer >= {AUTO_START_STEPS}, got {budget!r}")
    levels, n = [], AUTO_START_STEPS
    while sum(levels) + n <= budget:
        levels.append(n)
        n *= 2
    return levels


def _stop_reason(completeness: dict[str, Completeness], worst_gaps: Sequence[float], tol: float) -> str | None:
    """Why ``steps="auto"`` stops at this level, or None to go on: every gap below ``tol`` (converged), every gap
    within its numerical floor (noise floor), or two doublings in a row that did not improve the best worst
    gap so far by 10 % (not shrinking: on paths with ReLU kinks the error is not monotone, so one bad level is
    not enough). ``worst_gaps`` holds the worst gap of every level so far, this one last."""
    if all(c.gap < tol for c in completeness.values()):
        return "converged"
    if all(c.gap <= c.floor for c in completeness.values()):
        return "noise floor"
    if len(worst_gaps) >= 3 and min(worst_gaps[-2:]) > 0.9 * min(worst_gaps[:-2]):
        return "not shrinking"
    return None


def compute_faig(
    baseline: nn.Module,
    target: nn.Module,
    eval_set: Sequence[EvalItem],
    *,
    scale: int,
    degradations: Sequence[str] | None = None,
    steps: int | str = DEFAULT_STEPS,
    rule: str = DEFAULT_RULE,
    tol: float = DEFAULT_TOL,
    budget: int = AUTO_BUDGET,
    max_batch: int | None = None,
    device: str | torch.device | None = None,
    reduce_fn: ReduceFn | None = None,
    progress: Progress | None = None,
    extra_units: Sequence[str] = (),
    per_weight: bool = False,
) -> FaigResult:
    """FAIG scores of every filter for each degradation in ``degradations`` (default: all but ``"clean"``).

    ``steps`` is the number of quadrature intervals/nodes, or ``"auto"``: start at 8 and double (recomputing)
    until every degradation's completeness gap is below ``tol``, the gaps sit at their numerical floor, two
    doublings in a row did not improve the worst gap, or the next level would exceed ``budget`` nodes in all (the
    paper's 100 by default); ``stop_reason`` says which, and a warning names the gap and its floor when not converged.
    ``rule="official", steps=100`` reproduces the official code's discretisation.
    ``reduce_fn`` (DDP) receives one float64 tensor of local sums and must return its sum over processes;
    pass each process its shard of the eval set. ``extra_units``: parameter-name patterns scored as whole-tensor
    units after the weights (``FilterIndex.from_model``); ``per_weight``: score a unit by the mean over its weights
    instead of the sum (``FilterIndex.per_filter``), for nets whose units differ in size.
    """
    check_pair(baseline, target)
    available = check_eval_set(eval_set, scale)
    degs = resolve_degradations(degradations, available)
    levels = step_levels(steps, budget)
    for n in {levels[0], levels[-1]}:
        quadrature(rule, n)  # validates rule and steps before any work
    if not (isinstance(tol, float | int) and math.isfinite(tol) and tol > 0):
        raise FaigError(f"tol must be a positive number (relative completeness gap), got {tol!r}")
    dev = resolve_device(device, target)
    if max_batch is not None:
        check_positive_int("max_batch", max_batch)
    return faig_unchecked(
        baseline, target, eval_set, FilterIndex.from_model(target, extra_units), degs, steps=steps, rule=rule,
        tol=tol, budget=budget, max_batch=max_batch, device=dev, reduce_fn=reduce_fn, progress=progress,
        per_weight=per_weight,
    )  # fmt: skip


def faig_unchecked(
    baseline: nn.Module,
    target: nn.Module,
    eval_set: Sequence[EvalItem],
    index: FilterIndex,
    degradations: list[str],
    *,
    steps: int | str,
    rule: str,
    tol: float,
    budget: int,
    max_batch: int | None,
    device: torch.device,
    reduce_fn: ReduceFn | None,
    progress: Progress | None,
    per_weight: bool,
) -> FaigResult:
    """:func:`compute_faig` on inputs checked before (the engine checks a run's once): the target's ``index``, the
    ranked ``degradations`` of the eval set, valid settings and a resolved ``device``; checks nothing itself."""
    levels = step_levels(steps, budget)
    batch = default_max_batch(device) if max_batch is None else max_batch
    path = ParameterPath(baseline, target, device)
    integrator = _Integrator(target, path, index, eval_set, degradations, device, batch, per_weight)
    reduce = reduce_fn if reduce_fn is not None else (lambda t: t)
    if max_batch is None and device.type == "cuda":
        with eval_mode(target):
            integrator.max_batch = integrator.memory_max_batch()

    start = time.perf_counter()
    evaluations = 0
    worst_gaps: list[float] = []
    reason = "fixed steps"
    with eval_mode(target):
        for n in levels:
            alphas, weights = quadrature(rule, n)
            sums = integrator.run(alphas, weights, progress)
            evaluations += len(eval_set) * len(degradations) * len(alphas)
            packed = reduce(torch.cat([t.reshape(-1) for t in sums.values()]))
            scores, rest = packed[: sums["scores"].numel()], packed[sums["scores"].numel() :]
            counts, estimate, exact, magnitude = rest.reshape(4, len(degradations))
            completeness = {d: Completeness(float(estimate[i]), float(exact[i]), float(magnitude[i]))
                            for i, d in enumerate(degradations)}
            if steps != "auto":
                break
            worst_gaps.append(max(c.gap for c in completeness.values()))
            stop = _stop_reason(completeness, worst_gaps, tol)
            reason = stop or "budget"
            if stop is not None:
                break
    converged = all(c.gap < tol for c in completeness.values())
    if steps == "auto" and not converged:
        worst = max(completeness.values(), key=lambda c: c.gap)
        advice = {
            "budget": "the gap was still shrinking: raise attribution.auto_budget (or tol) for a closer integral",
            "noise floor": "the gap is within float32 rounding of the loss difference (the nets' losses barely "
                           "differ): more nodes cannot reduce it",
            "not shrinking": "doubling the nodes no longer reduced it (float32 noise or kinks in the path); raise "
                             "attribution.auto_budget to keep doubling anyway",
        }[reason]
        warnings.warn(
            f"FAIG steps='auto' stopped at {n} steps ({reason}) with completeness gap {worst.gap:.2e} >= tol {tol}, "
            f"numerical floor about {worst.floor:.1e}; {advice}",
            stacklevel=3,
        )
    means = (scores.reshape(len(degradations), -1) / counts.unsqueeze(1)).cpu().numpy()  # float64 until written
    per_degradation = {d: means[i] for i, d in enumerate(degradations)}
    return FaigResult(
        per_degradation=per_degradation,
        discriminative=discriminative_scores(per_degradation),
        completeness=completeness,
        steps=n,
        rule=rule,
        converged=converged,
        gradient_evaluations=evaluations,
        stop_reason=reason,
        max_batch=integrator.max_batch,
        timings={"faig": time.perf_counter() - start},
    )
