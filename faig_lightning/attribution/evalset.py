"""The evaluation set: items ``{"name", "gt", "lq": {degradation: LR}}`` and their grouping by image size."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TypedDict

import torch


class EvalItem(TypedDict):
    """One evaluation image: RGB in [0, 1], ``gt`` (3, H, W), ``lq[deg]`` (3, H/scale, W/scale)."""

    name: str
    gt: torch.Tensor
    lq: Mapping[str, torch.Tensor]


def size_groups(eval_set: Sequence[EvalItem]) -> list[list[int]]:
    """Item positions grouped by GT size (first-seen order), so that each group can be batched."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for pos, item in enumerate(eval_set):
        groups.setdefault(tuple(item["gt"].shape), []).append(pos)
    return list(groups.values())


def batches(positions: Sequence[int], size: int) -> Iterator[list[int]]:
    """Consecutive chunks of at most ``size`` positions."""
    for start in range(0, len(positions), size):
        yield list(positions[start : start + size])


def stack(
    eval_set: Sequence[EvalItem],
    positions: Sequence[int],
    degradation: str | None,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Stack the LR inputs of ``degradation`` (or the GT when None) of same-size items onto ``device``."""
    tensors = [eval_set[p]["gt"] if degradation is None else eval_set[p]["lq"][degradation] for p in positions]
    return torch.stack(tensors).to(device=device, dtype=dtype)
