"""Degradation prediction without ground truth, from the discovered filters alone.

Rule (the *masking response*): a degradation's discriminative filters do their restoration only when the input
carries that degradation, so masking them (copying the baseline's kernels back) changes the target's output much
on such inputs and little on others. For an LR input ``x``, a ranked degradation ``d`` and each LR patch::

    r_d = log10( mean over the patch of (T(x) - T_{-d}(x))^2 )

where ``T`` is the target and ``T_{-d}`` the target with ``d``'s top filters masked; ``d`` is predicted present
when ``r_d > tau_d``, independently per degradation (so blur + noise is predicted when both are). Only the
degraded input and the two nets are used: no ground truth, no clean reference, no trained classifier.

``tau_d`` is the one number per degradation the rule needs: the midpoint between the mean response of patches
whose input carries ``d`` and of patches whose input does not, measured on the eval set's own degraded inputs
(``clean``, ``blur``, ``noise`` at the target's training levels). Every eval image is tested with thresholds taken
from the *other* images (leave one image out), so calibration and test never share an image. Test inputs are
synthesised from each held-out image's GT at every combination of blur and noise levels (levels the target never
saw included), so the four classes clean / blur / noise / blur+noise are covered.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from faig_lightning.attribution.evalset import EvalItem
from faig_lightning.attribution.faig import Progress
from faig_lightning.attribution.masking import FilterMasker
from faig_lightning.degradations import PAPER_LEVELS, Blur, DegradationPipeline, DegradationSpec, Noise
from faig_lightning.errors import FaigError

PREDICTABLE = ("blur", "noise")
"""Ranked degradations the rule can test at other levels (the pipeline's blur sigma and noise sigma)."""
PATCH = 48
"""LR patch side (pixels): each patch of a test image is one prediction."""
_EPS = 1e-12
_TEST_SEED = 10_007  # noise of the synthesised test inputs: seed + image position (the eval set uses its own seeds)


@dataclass(frozen=True)
class Condition:
    """One synthesised test input kind: a level per degradation (0 = absent), its class and whether the target
    was trained on it (None when the training pipeline is unknown)."""

    levels: tuple[tuple[str, float], ...]
    seen: bool | None

    @property
    def label(self) -> str:
        """The true class: the present degradations joined by ``+``, or ``clean``."""
        return class_name([d for d, v in self.levels if v > 0])

    @property
    def name(self) -> str:
        """E.g. ``blur2+noise0.1`` or ``clean``."""
        present = [f"{d}{v:g}" for d, v in self.levels if v > 0]
        return "+".join(present) or "clean"


@dataclass
class PredictionResult:
    """Per-condition prediction counts, the confusion matrix over classes and the thresholds used per image."""

    method: str
    proportion: float
    degradations: tuple[str, ...]
    classes: tuple[str, ...]
    conditions: list[dict[str, Any]]
    confusion: dict[str, dict[str, int]]
    thresholds: dict[str, dict[str, float]]
    calibration: str
    patch: int
    num_images: int
    settings: dict[str, Any] = field(default_factory=dict)

    def accuracy(self, seen: bool | None = None, label: str | None = None) -> float | None:
        """Share of correctly classified patches, over every condition or those with ``seen`` / class ``label``."""
        rows = [c for c in self.conditions
                if (seen is None or c["seen"] is seen) and (label is None or c["class"] == label)]
        total = sum(c["patches"] for c in rows)
        return sum(c["correct"] for c in rows) / total if total else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the rule and its settings, thresholds, confusion matrix, accuracies and per-condition rows."""
        per_class = {c: self.accuracy(label=c) for c in self.classes}
        return {
            "rule": "masking response: log10 mean squared change of the target's output when a degradation's top "
                    "filters are masked, per LR patch; present when above that degradation's threshold",
            "method": self.method,
            "proportion": self.proportion,
            "degradations": list(self.degradations),
            "classes": list(self.classes),
            "patch_lr_pixels": self.patch,
            "calibration": self.calibration,
            "num_images": self.num_images,
            "thresholds_log10": self.thresholds,
            "settings": self.settings,
            "accuracy": {"all": self.accuracy(), "seen": self.accuracy(seen=True), "unseen": self.accuracy(seen=False),
                         "per_class": per_class, "chance": 1 / len(self.classes)},
            "confusion": self.confusion,
            "conditions": self.conditions,
        }


def class_name(present: Sequence[str]) -> str:
    """``clean`` or the present degradations in ``PREDICTABLE`` order joined by ``+``."""
    return "+".join(d for d in PREDICTABLE if d in present) or "clean"


def predictable(degradations: Sequence[str]) -> tuple[str, ...]:
    """The ranked degradations the rule can predict (those in ``PREDICTABLE``), in ``PREDICTABLE`` order."""
    return tuple(d for d in PREDICTABLE if d in degradations)


def training_spec(pipeline: Mapping[str, Any] | DegradationSpec | None) -> DegradationSpec | None:
    """The target's training degradation as a spec (``pipeline``: ``DegradationSpec`` or its config mapping)."""
    if pipeline is None or isinstance(pipeline, DegradationSpec):
        return pipeline
    return DegradationSpec.from_config(pipeline)


def conditions(levels: Mapping[str, Sequence[float]],
               pipeline: Mapping[str, Any] | DegradationSpec | None = None) -> list[Condition]:
    """Every combination of one level per degradation, 0 (absent) included; ``seen`` when each present level lies
    within the training degradation's range for it (``pipeline``: see ``training_spec``)."""
    spec = training_spec(pipeline)
    names = list(levels)
    out = []
    for combo in itertools.product(*[(0.0, *sorted(set(map(float, levels[d])))) for d in names]):
        seen = None
        if spec is not None:
            seen = all(v == 0 or _in_range(getattr(spec, d), v) for d, v in zip(names, combo, strict=True))
        out.append(Condition(tuple(zip(names, combo, strict=True)), seen))
    return out


def _in_range(op: Blur | Noise | None, level: float) -> bool:
    if op is None or not op.active:
        return False
    lo, hi = op.bounds
    return lo - 1e-9 <= level <= hi + 1e-9


def synthesise(gt: torch.Tensor, condition: Condition, *, scale: int,
               pipeline: Mapping[str, Any] | DegradationSpec | None, seed: int) -> torch.Tensor:
    """The LR input of ``condition`` from a (3, H, W) GT: the training degradation's order, kernel size, resize and
    quantisation (``pipeline``, see ``training_spec``; the defaults of ``DegradationSpec`` when None), each present
    op always applied, noise seeded with ``seed``."""
    train = training_spec(pipeline) or DegradationSpec(scale=scale)
    level = dict(condition.levels)
    kernel_size = train.blur.kernel_size if train.blur is not None else PAPER_LEVELS.kernel_size
    spec = DegradationSpec(
        scale=scale, downsample=train.downsample, quantize=train.quantize,
        blur=Blur(kernel_size=kernel_size, sigma=level["blur"]) if level.get("blur", 0) > 0 else None,
        noise=Noise(sigma=level["noise"]) if level.get("noise", 0) > 0 else None,
    )
    return DegradationPipeline.from_spec(spec).deterministic(gt, seed=seed)


@torch.no_grad()
def responses(masker: FilterMasker, filters: Mapping[str, np.ndarray], lq: torch.Tensor, *, patch: int = PATCH,
              scale: int) -> torch.Tensor:
    """Masking responses ``(patches, len(filters))`` of one (3, h, w) LR input: per LR patch of side ``patch``
    (non-overlapping, the remainder at the right/bottom dropped), ``log10`` of the mean squared change of the
    target's output when each entry's filters are masked."""
    dev = next(masker.net.parameters()).device
    x = lq[None].to(dev)
    if min(x.shape[-2:]) < patch:
        raise FaigError(f"an LR input of {x.shape[-2]}x{x.shape[-1]} pixels is smaller than the patch ({patch})")
    ref = masker.net(x).float()
    cols = []
    for top in filters.values():
        with masker.masked(top) as net:
            change = (net(x).float() - ref).pow(2).mean(dim=1, keepdim=True)
        side = patch * scale
        cols.append(F.avg_pool2d(change, side, stride=side).reshape(-1))
    return torch.log10(torch.stack(cols, dim=1) + _EPS).double().cpu()


def thresholds(features: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Per column: the midpoint between the mean feature of rows where that degradation is present and of rows
    where it is absent (``present``: bool, same shape). Raises when a column lacks either kind."""
    out = []
    for j in range(features.shape[1]):
        on, off = features[present[:, j], j], features[~present[:, j], j]
        if not len(on) or not len(off):
            raise FaigError("degradation prediction needs eval inputs with and without each ranked degradation "
                            "(e.g. clean, blur and noise); add them to the eval set or drop prediction from "
                            "attribution.analyses")
        out.append((on.mean() + off.mean()) / 2)
    return torch.stack(out)


def predict_degradations(
    masker: FilterMasker,
    eval_set: Sequence[EvalItem],
    rankings: Mapping[str, np.ndarray],
    *,
    scale: int,
    method: str,
    proportion: float = 1.0,
    levels: Mapping[str, Sequence[float]] | None = None,
    pipeline: Mapping[str, Any] | None = None,
    patch: int = PATCH,
    progress: Progress | None = None,
) -> PredictionResult:
    """Classify synthesised test inputs of every eval image as clean / blur / noise / blur+noise with the masking
    response rule (module docstring), thresholds calibrated on the *other* eval images' own degraded inputs.

    ``rankings``: degradation -> ranking of ``method`` (only ``PREDICTABLE`` degradations are used); ``levels``:
    the test levels per degradation (default ``PAPER_LEVELS.prediction_blur`` and ``prediction_noise``, every
    combination plus clean); ``pipeline``: the target's training degradation (``DegradationSpec`` arguments: kernel
    size, resize, which levels it saw). With one eval image, calibration and test share it (said in ``calibration``).
    ``patch`` shrinks to the smallest eval input's side when that is smaller.
    """
    degs = predictable(list(rankings))
    if not degs:
        raise FaigError(f"degradation prediction tests {list(PREDICTABLE)} at other levels but the ranked "
                        f"degradations are {list(rankings)}; drop prediction from attribution.analyses")
    levels = dict(levels or {"blur": PAPER_LEVELS.prediction_blur, "noise": PAPER_LEVELS.prediction_noise})
    train = training_spec(pipeline)
    conds = conditions({d: levels[d] for d in degs}, train)
    smallest = min(min(lq.shape[-2:]) for item in eval_set for lq in item["lq"].values())
    patch = min(patch, smallest)  # eval images smaller than a patch are one patch each
    filters = {d: rankings[d][: masker.index.top_k(proportion)] for d in degs}
    calib_inputs = [name for name in eval_set[0]["lq"] if name == "clean" or name in degs]

    # calibration features: every eval image's own inputs, labelled by their name
    calib: list[tuple[torch.Tensor, torch.Tensor]] = []
    tests: list[list[torch.Tensor]] = []
    steps, done = len(eval_set) * (len(calib_inputs) + len(conds)), 0
    for pos, item in enumerate(eval_set):
        feats, labels = [], []
        for name in calib_inputs:
            f = responses(masker, filters, item["lq"][name], patch=patch, scale=scale)
            feats.append(f)
            labels.append(torch.tensor([[d == name for d in degs]]).expand(len(f), -1))
            done += 1
            if progress is not None:
                progress("prediction", done, steps)
        calib.append((torch.cat(feats), torch.cat(labels)))
        per_cond = []
        for cond in conds:
            lq = synthesise(item["gt"], cond, scale=scale, pipeline=train, seed=_TEST_SEED + pos)
            per_cond.append(responses(masker, filters, lq, patch=patch, scale=scale))
            done += 1
            if progress is not None:
                progress("prediction", done, steps)
        tests.append(per_cond)

    held_out = len(eval_set) > 1
    classes = tuple(class_name(c) for r in range(len(degs) + 1) for c in itertools.combinations(degs, r))
    confusion = {c: dict.fromkeys(classes, 0) for c in classes}
    counts = [dict.fromkeys(classes, 0) for _ in conds]
    used: dict[str, dict[str, float]] = {}
    for pos, item in enumerate(eval_set):
        others = [calib[i] for i in range(len(eval_set)) if i != pos or not held_out]
        tau = thresholds(torch.cat([f for f, _ in others]), torch.cat([lab for _, lab in others]))
        used[item["name"]] = {d: float(t) for d, t in zip(degs, tau, strict=True)}
        for k, (cond, feats) in enumerate(zip(conds, tests[pos], strict=True)):
            for row in (feats > tau).tolist():
                predicted = class_name([d for d, on in zip(degs, row, strict=True) if on])
                counts[k][predicted] += 1
                confusion[cond.label][predicted] += 1
    rows = []
    for cond, count in zip(conds, counts, strict=True):
        total = sum(count.values())
        rows.append({"condition": cond.name, "class": cond.label, **{f"{d}_sigma": v for d, v in cond.levels},
                     "seen": cond.seen, "patches": total, "correct": count[cond.label],
                     "accuracy": count[cond.label] / total if total else None, "predicted": count})
    calibration = ("leave one image out: each image is tested with thresholds from the other eval images' "
                   f"{'/'.join(calib_inputs)} inputs") if held_out else \
        "one eval image: thresholds from its own inputs (calibration and test share the image)"
    return PredictionResult(method, float(proportion), degs, classes, rows, confusion, used, calibration, patch,
                            len(eval_set), {"levels": {d: sorted(set(map(float, levels[d]))) for d in degs},
                                            "pipeline": dict(pipeline) if pipeline is not None else None})
