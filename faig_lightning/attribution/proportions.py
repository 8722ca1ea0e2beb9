"""Masked proportions: the percentage check and the top-k rule (torch-free: readers of stored results use them)."""

from __future__ import annotations

import math
from collections.abc import Iterable

from faig_lightning.errors import FaigError


def check_proportions(proportions: Iterable[float], name: str = "attribution.proportions") -> tuple[float, ...]:
    """Masking proportions in percent as floats; each must lie in (0, 100]."""
    values = tuple(proportions)
    for p in values:
        if isinstance(p, bool) or not isinstance(p, int | float) or not math.isfinite(p) or not 0 < p <= 100:
            raise FaigError(f"{name} value {p!r} must be a percentage in (0, 100]; e.g. {name}=[1,3,5,10]")
    return tuple(float(p) for p in values)


def top_k(num_filters: int, proportion_percent: float) -> int:
    """Number of filters in the top ``proportion_percent`` % of ``num_filters``: ``int(N * p / 100)`` as in the
    official code (its index folders are named by it)."""
    if not 0 < proportion_percent <= 100:
        raise FaigError(f"proportion {proportion_percent} must be a percentage in (0, 100], e.g. 1, 3, 5 or 10")
    return int(num_filters * proportion_percent / 100)
