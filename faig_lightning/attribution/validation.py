"""Checks of the engine's inputs: every problem becomes one FaigError that names it and the fix."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from faig_lightning.attribution.drops import CLEAN
from faig_lightning.errors import FaigError

_MAX_LISTED = 10


def _listed(lines: list[str]) -> str:
    """At most ``_MAX_LISTED`` lines, then a count of the rest."""
    shown = lines[:_MAX_LISTED]
    if len(lines) > _MAX_LISTED:
        shown.append(f"... and {len(lines) - _MAX_LISTED} more")
    return "; ".join(shown)


def check_finite(model: nn.Module, role: str) -> None:
    """Raise if any floating tensor of ``model``'s state dict holds NaN or Inf."""
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise FaigError(
                f"the {role} model's tensor {name!r} contains NaN or Inf; load a checkpoint saved before training "
                "diverged"
            )


def state_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes and values): identifies the weights of a run."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def check_pair(baseline: nn.Module, target: nn.Module) -> None:
    """Raise unless baseline and target share the architecture, hold finite weights and differ somewhere."""
    b_state, t_state = baseline.state_dict(), target.state_dict()
    problems = [f"{k} only in the target" for k in t_state if k not in b_state]
    problems += [f"{k} only in the baseline" for k in b_state if k not in t_state]
    problems += [
        f"{k}: baseline {tuple(b_state[k].shape)} vs target {tuple(t_state[k].shape)}"
        for k in t_state
        if k in b_state and b_state[k].shape != t_state[k].shape
    ]
    if problems:
        raise FaigError(
            "baseline and target must be the same architecture with the same tensor shapes; mismatches: "
            f"{_listed(problems)}. Build both nets with the same class and arguments."
        )
    check_finite(baseline, "baseline")
    check_finite(target, "target")
    if all(torch.equal(b_state[k], t_state[k]) for k in t_state):
        raise FaigError(
            "nothing to attribute: the target equals the baseline — pass the fine-tuned checkpoint as the target"
        )


def check_eval_set(eval_set: Sequence[Mapping[str, Any]], scale: int) -> list[str]:
    """Validate the items ``{"name", "gt": (3,H,W), "lq": {deg: (3,H/s,W/s)}}``; return the degradation names."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise FaigError(f"scale must be a positive integer (the SR factor, e.g. 2), got {scale!r}")
    if len(eval_set) == 0:
        raise FaigError("no eval images: pass at least one item {'name', 'gt', 'lq': {degradation: LR image}}")
    names: list[str] | None = None
    for pos, item in enumerate(eval_set):
        missing = [key for key in ("name", "gt", "lq") if key not in item]
        if missing:
            raise FaigError(f"eval item #{pos} lacks {missing}; each item needs 'name', 'gt' and 'lq'")
        name, gt, lq = item["name"], item["gt"], item["lq"]
        if not isinstance(gt, torch.Tensor) or gt.dim() != 3:
            raise FaigError(f"image {name!r}: 'gt' must be a (C, H, W) tensor")
        if not isinstance(lq, Mapping) or not lq:
            raise FaigError(f"image {name!r}: 'lq' must be a non-empty mapping {{degradation: (C, h, w) tensor}}")
        if names is None:
            names = list(lq)
        elif set(lq) != set(names):
            raise FaigError(
                f"image {name!r} has degradations {sorted(lq)} but the first image has {sorted(names)}; "
                "give every image the same degradations"
            )
        for deg, lr in lq.items():
            if not isinstance(lr, torch.Tensor) or lr.dim() != 3 or lr.shape[0] != gt.shape[0]:
                raise FaigError(f"image {name!r}, degradation {deg!r}: expected a ({gt.shape[0]}, h, w) tensor")
            if (lr.shape[1] * scale, lr.shape[2] * scale) != (gt.shape[1], gt.shape[2]):
                raise FaigError(
                    f"image {name!r}, degradation {deg!r}: LR size {tuple(lr.shape[1:])} x scale {scale} does not "
                    f"match the GT size {tuple(gt.shape[1:])}; crop the GT to a multiple of the scale (mod-crop) "
                    "or fix the scale"
                )
    assert names is not None
    return names


def resolve_degradations(requested: Iterable[str] | None, available: Sequence[str]) -> list[str]:
    """The degradations to rank: ``requested`` (checked) or every available one except ``"clean"``."""
    if requested is None:
        chosen = [d for d in available if d != CLEAN]
        if not chosen:
            raise FaigError(
                f"the eval set only has {list(available)}: add degraded inputs (e.g. 'blur', 'noise') to rank "
                "filters for"
            )
        return chosen
    chosen = list(dict.fromkeys(requested))
    unknown = [d for d in chosen if d not in available]
    if unknown or not chosen:
        raise FaigError(f"degradations {unknown or chosen} are not in the eval set; it has {list(available)}")
    return chosen


def require_clean(available: Sequence[str]) -> None:
    """IG starts its input path at the clean LR image: raise unless the eval set has ``"clean"``."""
    if CLEAN not in available:
        raise FaigError(
            "IG needs a clean LR image per item (item['lq']['clean']: the plain downsampled GT) as the start of its "
            f"input path, but the eval set only has {list(available)}; add 'clean' or drop 'ig' from the methods"
        )


def check_positive_int(name: str, value: object) -> int:
    """Raise unless ``value`` is an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FaigError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_choice(kind: str, value: str, choices: Sequence[str]) -> str:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise FaigError(f"unknown {kind} {value!r}; choose one of {', '.join(choices)}")
    return value
