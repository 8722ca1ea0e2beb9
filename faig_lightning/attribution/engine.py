"""The one high-level entry point: rank filters with every method, then mask them and measure what changes."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from faig_lightning.attribution.evalset import EvalItem
from faig_lightning.attribution.faig import Completeness, FaigResult, Progress, ReduceFn
from faig_lightning.attribution.filters import FilterIndex, ranking
from faig_lightning.attribution.functional import resolve_device, tf32_allowed
from faig_lightning.attribution.locations import LocationRow, filter_locations
from faig_lightning.attribution.masking import FilterMasker, filter_set_key
from faig_lightning.attribution.methods import AttributionContext, get_method
from faig_lightning.attribution.metrics import Evaluator, default_eval_batch
from faig_lightning.attribution.modulation import ModulationRow, modulation_curves, modulation_strip, strip_lambdas
from faig_lightning.attribution.prediction import PREDICTABLE, PredictionResult, predict_degradations, predictable
from faig_lightning.attribution.settings import AttributionSettings
from faig_lightning.attribution.validation import check_eval_set, check_pair, state_fingerprint
from faig_lightning.errors import FaigError
from faig_lightning.run_folder import RunFolder, check_same_nets

__all__ = ["AttributionResult", "MaskingRow", "run_attribution"]

log = logging.getLogger(__name__)


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
    """Rankings (int64, most discriminative first; ranked on float64 scores) and scores (float32) per method and
    degradation, the masking table, unmasked metrics ``{"target"|"baseline": {input: {"psnr", "ssim",
    "grad_mse_x1000"}}}`` (gradient-map difference vs the target, so 0 for the target), FAIG details, timings,
    settings. ``fingerprints`` identify the baseline and target weights; ``reused`` is the summary of the run whose
    rankings were reused, if any; ``locations`` and ``modulation`` hold the analyses' rows (empty when off) and
    ``modulation_strip`` the first eval image's outputs per modulated degradation (see ``modulation_strip``);
    ``prediction`` the degradation-prediction analysis (None when off)."""

    index: FilterIndex
    rankings: dict[str, dict[str, np.ndarray]]
    scores: dict[str, dict[str, np.ndarray]]
    masking: list[MaskingRow]
    unmasked: dict[str, dict[str, dict[str, float]]]
    faig: FaigResult | None
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)
    reused: dict[str, Any] | None = None
    locations: list[LocationRow] = field(default_factory=list)
    modulation: list[ModulationRow] = field(default_factory=list)
    modulation_strip: dict[str, torch.Tensor] = field(default_factory=dict)
    prediction: PredictionResult | None = None

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


def run_attribution(
    baseline: nn.Module,
    target: nn.Module,
    eval_set: Sequence[EvalItem],
    *,
    scale: int,
    settings: AttributionSettings | None = None,
    reduce_fn: ReduceFn | None = None,
    progress: Progress | None = None,
    pipeline: Mapping[str, Any] | None = None,
    **changes: Any,
) -> AttributionResult:
    """Rank every filter (unit, ``FilterIndex``) of ``target`` for each degradation with each method, then mask
    and measure.

    ``settings`` (default ``AttributionSettings()``) says what to compute; keyword ``changes`` are applied to it
    (``run_attribution(b, t, s, scale=2, methods=["faig"], steps=8)``) and validated. The ranked degradations
    default to every eval name but ``"clean"``; the masking table covers every input degradation of the eval set,
    clean included. With ``settings.rankings_from`` the rankings of that run folder are reused (after checking
    they were computed on the same baseline and target weights) and only masking is computed.
    ``reduce_fn`` sums tensors over DDP processes (each holds its shard; the prediction analysis uses each
    process's own shard). ``pipeline``: the target's training ``DegradationPipeline`` arguments, which the
    prediction analysis synthesises its test inputs with (kernel size, resize) and marks levels seen in training.
    The user's modules are not modified: masking works on one copy of the target made once.
    """
    cfg = settings or AttributionSettings()
    if changes:
        cfg = cfg.replace(**changes)
    with tf32_allowed(cfg.tf32):
        return _run(baseline, target, eval_set, scale, cfg, reduce_fn, progress, pipeline)


def _run(baseline: nn.Module, target: nn.Module, eval_set: Sequence[EvalItem], scale: int, cfg: AttributionSettings,
         reduce_fn: ReduceFn | None, progress: Progress | None,
         pipeline: Mapping[str, Any] | None) -> AttributionResult:
    t_start = time.perf_counter()
    eval_set = [eval_set[i] for i in range(len(eval_set))]  # read (decode) every image once, not per pass
    check_pair(baseline, target)
    inputs = check_eval_set(eval_set, scale)
    index = cfg.index(target)
    cfg.check_filters(len(index))
    fingerprints = {"baseline": state_fingerprint(baseline), "target": state_fingerprint(target)}
    dev = resolve_device(cfg.device, target)
    timings: dict[str, float] = {}
    faig_result, reused = None, None

    if cfg.rankings_from is not None:
        source = RunFolder(cfg.rankings_from)
        reused = source.read_results_summary()
        check_same_nets(reused, fingerprints, len(index), cfg.rankings_from)
        rankings, scores, methods, degs = source.read_rankings(reused, cfg.methods, cfg.degradations)
    else:
        methods, degs = list(cfg.methods), cfg.check_inputs(inputs)
        ctx = AttributionContext(baseline, target, eval_set, scale, degs, index, cfg, dev, reduce_fn, progress)
        scores, details = {}, {}
        for method in methods:
            t0 = time.perf_counter()
            out = get_method(method).attribute(ctx)
            scores[method], details[method] = out.checked(method, degs, len(index)), out.detail
            timings[method] = time.perf_counter() - t0
        faig_result = details.get("faig")
        # rank on the float64 scores (differences and ratios are never rounded first), keep float32 copies
        rankings = {m: {d: ranking(torch.from_numpy(s)).numpy() for d, s in per.items()} for m, per in scores.items()}
        scores = {m: {d: s.astype(np.float32) for d, s in per.items()} for m, per in scores.items()}

    moved = cfg.analysis_method or ("faig" if "faig" in rankings else next(iter(rankings)))  # analysed method
    if {"modulation", "prediction"} & set(cfg.analyses) and moved not in rankings:
        raise FaigError(f"attribution.analysis_method={moved} has no rankings in {cfg.rankings_from}; it has "
                        f"{list(rankings)}")
    t0 = time.perf_counter()
    evaluator = Evaluator(
        eval_set, scale=scale, degradations=inputs, device=dev, channel=cfg.channel,
        max_batch=default_eval_batch(dev), reduce_fn=reduce_fn,
    )  # fmt: skip
    masker = FilterMasker(baseline, target, device=dev, index=index)
    masking, unmasked, measured = _masking_table(baseline, masker, evaluator, rankings, index, cfg.proportions,
                                                 progress)
    timings["masking"] = time.perf_counter() - t0
    locations: list[LocationRow] = []
    modulation: list[ModulationRow] = []
    strip: dict[str, torch.Tensor] = {}
    if "locations" in cfg.analyses:
        locations = filter_locations(index, rankings, cfg.proportions)
    if "modulation" in cfg.analyses:
        t0 = time.perf_counter()
        # lam = 0 is a masked net and lam = 1 the target (bit-identical weights): reuse what masking measured
        known = {(key, 0.0): metrics for key, metrics in measured.items()}
        modulation = modulation_curves(masker, evaluator, rankings[moved],
                                       method=moved, proportion=cfg.analysis_proportion,
                                       lambdas=cfg.lambdas, known=known, unmasked=unmasked["target"],
                                       progress=progress)
        strip = modulation_strip(masker, eval_set[0], rankings[moved],
                                 proportion=cfg.analysis_proportion, lambdas=strip_lambdas(cfg.lambdas))
        timings["modulation"] = time.perf_counter() - t0
    prediction = None
    if "prediction" in cfg.analyses:
        if predictable(list(rankings[moved])):
            t0 = time.perf_counter()
            prediction = predict_degradations(
                masker, eval_set, rankings[moved], scale=scale, method=moved, proportion=cfg.analysis_proportion,
                levels={"blur": cfg.prediction_blur, "noise": cfg.prediction_noise}, pipeline=pipeline,
                progress=progress,
            )  # fmt: skip
            timings["prediction"] = time.perf_counter() - t0
        else:
            log.warning("degradation prediction skipped: it tests %s at other levels, the ranked degradations are %s",
                        list(PREDICTABLE), list(rankings[moved]))
    timings["total"] = time.perf_counter() - t_start
    settings_out = {
        **cfg.to_dict(),
        "requested": cfg.to_dict(),
        "scale": scale,
        "methods": methods,
        "degradations": degs,
        "inputs": inputs,
        "steps_used": faig_result.steps if faig_result is not None else None,
        "device": str(dev),
        "max_batch": faig_result.max_batch if faig_result is not None else cfg.max_batch,
        "num_images": len(eval_set),
        "num_filters": len(index),
    }
    return AttributionResult(index, rankings, scores, masking, unmasked, faig_result, timings, settings_out,
                             fingerprints, reused, locations, modulation, strip, prediction)


def _masking_table(
    baseline: nn.Module,
    masker: FilterMasker,
    evaluator: Evaluator,
    rankings: dict[str, dict[str, np.ndarray]],
    index: FilterIndex,
    proportions: tuple[float, ...],
    progress: Progress | None,
) -> tuple[list[MaskingRow], dict[str, dict[str, dict[str, float]]], dict[bytes, dict[str, dict[str, float]]]]:
    """Metrics of the unmasked nets and of every (method, ranked degradation, proportion) substitution; also the
    metrics per masked filter set (``filter_set_key``)."""
    evaluator.set_reference(masker.net)
    device = next(masker.net.parameters()).device
    unmasked = {
        "target": evaluator.evaluate(masker.net),
        "baseline": evaluator.evaluate(copy.deepcopy(baseline).to(device).eval()),
    }
    jobs = [(m, d, p) for m, per in rankings.items() for d in per for p in proportions]
    rows: list[MaskingRow] = []
    done: dict[bytes, dict[str, dict[str, float]]] = {}
    for n, (method, deg, p) in enumerate(jobs, start=1):
        top = rankings[method][deg][: index.top_k(p)]
        key = filter_set_key(top)
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
    return rows, unmasked, done
