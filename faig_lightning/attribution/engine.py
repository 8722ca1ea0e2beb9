"""The one high-level entry point: rank filters with every method, then mask them and measure what changes."""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from faig_lightning.attribution.baselines import IG_VARIANTS, abs_filter_change, compute_ig, random_scores
from faig_lightning.attribution.evalset import EvalItem
from faig_lightning.attribution.faig import (
    DEFAULT_RULE,
    DEFAULT_STEPS,
    DEFAULT_TOL,
    Completeness,
    FaigResult,
    Progress,
    ReduceFn,
    compute_faig,
    default_max_batch,
    step_levels,
)
from faig_lightning.attribution.filters import FilterIndex, ranking
from faig_lightning.attribution.functional import resolve_device
from faig_lightning.attribution.masking import FilterMasker
from faig_lightning.attribution.metrics import CHANNELS, Evaluator, default_eval_batch
from faig_lightning.attribution.quadrature import quadrature
from faig_lightning.attribution.validation import (
    check_choice,
    check_eval_set,
    check_pair,
    check_proportions,
    require_clean,
    resolve_degradations,
)
from faig_lightning.errors import FaigError

METHODS = ("faig", "ig", "abs_filter_change", "random")


@dataclass(frozen=True)
class MaskingRow:
    """Metrics on ``input_degradation`` inputs of the target with ``method``'s top filters for
    ``masked_degradation`` replaced by the baseline's (``proportion`` % = ``num_masked`` filters)."""

    method: str
    masked_degradation: str
    proportion: float
    num_masked: int
    input_degradation: str
    psnr: float
    ssim: float
    psnr_drop: float
    grad_mse_x1000: float


@dataclass
class AttributionResult:
    """Rankings (int64, most discriminative first) and scores (float32) per method and degradation, the masking
    table, unmasked metrics ``{"target"|"baseline": {input: {"psnr", "ssim", "grad_mse_x1000"}}}`` (gradient-map
    difference vs the target, so 0 for the target), FAIG details, timings, settings."""

    index: FilterIndex
    rankings: dict[str, dict[str, np.ndarray]]
    scores: dict[str, dict[str, np.ndarray]]
    masking: list[MaskingRow]
    unmasked: dict[str, dict[str, dict[str, float]]]
    faig: FaigResult | None
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def completeness(self) -> dict[str, Completeness]:
        """FAIG completeness per ranked degradation (empty without FAIG)."""
        return self.faig.completeness if self.faig is not None else {}

    @property
    def steps(self) -> int | None:
        """Quadrature steps FAIG used (after ``steps="auto"``), None without FAIG."""
        return self.faig.steps if self.faig is not None else None

    def top(self, method: str, degradation: str, proportion: float) -> np.ndarray:
        """The top ``proportion`` % filters of ``method`` for ``degradation``."""
        return self.rankings[method][degradation][: self.index.top_k(proportion)]


def _check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(methods))
    if not chosen:
        raise FaigError(f"no attribution method chosen; pick some of {', '.join(METHODS)}")
    for m in chosen:
        check_choice("method", m, METHODS)
    return chosen


def run_attribution(
    baseline: nn.Module,
    target: nn.Module,
    eval_set: Sequence[EvalItem],
    *,
    scale: int,
    methods: Sequence[str] = METHODS,
    degradations: Sequence[str] | None = None,
    steps: int | str = DEFAULT_STEPS,
    rule: str = DEFAULT_RULE,
    tol: float = DEFAULT_TOL,
    proportions: Sequence[float] = (1, 3, 5, 10),
    seed: int = 0,
    ig_variant: str = "srresnet",
    channel: str = "grey",
    device: str | torch.device | None = None,
    max_batch: int | None = None,
    reduce_fn: ReduceFn | None = None,
    progress: Progress | None = None,
) -> AttributionResult:
    """Rank every Conv2d filter of ``target`` for each degradation with each method, then mask and measure.

    ``degradations`` are the ones to rank (default: every name in the eval set except ``"clean"``); the masking
    table covers every input degradation of the eval set, clean included. ``steps``/``rule``/``tol`` configure
    FAIG's quadrature (``rule="official", steps=100`` reproduces the paper's code). ``proportions`` (percent)
    may be empty to skip masking. ``max_batch`` caps the samples per gradient call (FAIG: (degradation, node)
    samples of one image, vmap-batched; IG: input-path nodes); None picks a per-device default.
    ``reduce_fn`` sums tensors over DDP processes (each holds its shard).
    The user's modules are not modified: masking works on one copy of the target made once.
    """
    t_start = time.perf_counter()
    chosen = _check_methods(methods)
    check_pair(baseline, target)
    inputs = check_eval_set(eval_set, scale)
    degs = resolve_degradations(degradations, inputs)
    props = check_proportions(proportions)
    check_choice("gradient-map channel", channel, CHANNELS)
    check_choice("IG variant", ig_variant, IG_VARIANTS)
    quadrature(rule, step_levels(steps)[0])  # validates rule and steps before any work
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise FaigError(f"seed must be a non-negative integer, got {seed!r}")
    if "ig" in chosen:
        require_clean(inputs)
    dev = resolve_device(device, target)
    index = FilterIndex.from_model(target)
    timings: dict[str, float] = {}
    scores: dict[str, dict[str, np.ndarray]] = {}
    faig_result = None

    for method in chosen:
        t0 = time.perf_counter()
        if method == "faig":
            faig_result = compute_faig(
                baseline, target, eval_set, scale=scale, degradations=degs, steps=steps, rule=rule, tol=tol,
                max_batch=max_batch, device=dev, reduce_fn=reduce_fn, progress=progress,
            )  # fmt: skip
            scores[method] = faig_result.discriminative
        elif method == "ig":
            scores[method] = compute_ig(
                target, eval_set, scale=scale, degradations=degs, variant=ig_variant, max_batch=max_batch,
                device=dev, reduce_fn=reduce_fn, progress=progress,
            )  # fmt: skip
        elif method == "abs_filter_change":
            change = abs_filter_change(baseline, target)
            scores[method] = {d: change for d in degs}
        else:
            scores[method] = random_scores(len(index), degs, seed)
        timings[method] = time.perf_counter() - t0
    rankings = {m: {d: ranking(torch.from_numpy(s)).numpy() for d, s in per.items()} for m, per in scores.items()}

    t0 = time.perf_counter()
    masking, unmasked = _masking_table(
        baseline, target, eval_set, rankings, index, scale=scale, inputs=inputs, proportions=props,
        channel=channel, device=dev, reduce_fn=reduce_fn, progress=progress,
    )  # fmt: skip
    timings["masking"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start
    settings = {
        "scale": scale,
        "methods": list(chosen),
        "degradations": degs,
        "inputs": inputs,
        "steps": steps,
        "steps_used": faig_result.steps if faig_result is not None else None,
        "rule": rule,
        "tol": tol,
        "proportions": list(props),
        "seed": seed,
        "ig_variant": ig_variant,
        "channel": channel,
        "device": str(dev),
        "max_batch": max_batch if max_batch is not None else default_max_batch(dev),
        "num_images": len(eval_set),
        "num_filters": len(index),
    }
    return AttributionResult(index, rankings, scores, masking, unmasked, faig_result, timings, settings)


def _masking_table(
    baseline: nn.Module,
    target: nn.Module,
    eval_set: Sequence[EvalItem],
    rankings: dict[str, dict[str, np.ndarray]],
    index: FilterIndex,
    *,
    scale: int,
    inputs: list[str],
    proportions: tuple[float, ...],
    channel: str,
    device: torch.device,
    reduce_fn: ReduceFn | None,
    progress: Progress | None,
) -> tuple[list[MaskingRow], dict[str, dict[str, dict[str, float]]]]:
    """Metrics of the unmasked nets and of every (method, ranked degradation, proportion) substitution."""
    evaluator = Evaluator(
        eval_set, scale=scale, degradations=inputs, device=device, channel=channel,
        max_batch=default_eval_batch(device), reduce_fn=reduce_fn,
    )  # fmt: skip
    masker = FilterMasker(baseline, target, device=device)
    evaluator.set_reference(masker.net)
    unmasked = {
        "target": evaluator.evaluate(masker.net),
        "baseline": evaluator.evaluate(copy.deepcopy(baseline).to(device).eval()),
    }
    jobs = [(m, d, p) for m, per in rankings.items() for d in per for p in proportions]
    rows: list[MaskingRow] = []
    done: dict[bytes, dict[str, dict[str, float]]] = {}
    for n, (method, deg, p) in enumerate(jobs, start=1):
        top = rankings[method][deg][: index.top_k(p)]
        key = np.sort(top).tobytes()
        if key not in done:  # identical filter sets (|dtheta| ranks every degradation alike) are measured once
            with masker.masked(top) as net:
                done[key] = evaluator.evaluate(net)
        for inp, metrics in done[key].items():
            rows.append(
                MaskingRow(
                    method=method,
                    masked_degradation=deg,
                    proportion=float(p),
                    num_masked=len(top),
                    input_degradation=inp,
                    psnr=metrics["psnr"],
                    ssim=metrics["ssim"],
                    psnr_drop=unmasked["target"][inp]["psnr"] - metrics["psnr"],
                    grad_mse_x1000=metrics["grad_mse_x1000"],
                )
            )
        if progress is not None:
            progress("masking", n, len(jobs))
    return rows, unmasked
