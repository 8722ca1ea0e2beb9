"""Where the discriminative filters live: per layer, how many of a ranking's top filters it holds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from faig_lightning.attribution.filters import FilterIndex


@dataclass(frozen=True)
class LocationRow:
    """Of ``method``'s top ``proportion`` % filters for ``degradation``, ``selected`` lie in layer ``layer_index``
    (``layer_name``, ``filters_in_layer`` filters); ``share = selected / filters_in_layer``."""

    method: str
    degradation: str
    proportion: float
    layer_index: int
    layer_name: str
    filters_in_layer: int
    selected: int
    share: float


def filter_locations(
    index: FilterIndex,
    rankings: Mapping[str, Mapping[str, np.ndarray]],
    proportions: Sequence[float],
) -> list[LocationRow]:
    """One row per (method, degradation, proportion, layer) of ``rankings[method][degradation]`` (most
    discriminative first), every layer included (``selected`` 0 where none lies)."""
    rows = []
    for method, per in rankings.items():
        for deg, order in per.items():
            for p in proportions:
                top = torch.as_tensor(np.asarray(order[: index.top_k(p)], dtype=np.int64))
                counts = torch.bincount(index.layer_ids(top), minlength=len(index.layers)).tolist()
                for pos, layer in enumerate(index.layers):
                    rows.append(LocationRow(method, deg, float(p), pos, layer.name.removesuffix(".weight"),
                                            layer.count, counts[pos], counts[pos] / layer.count))
    return rows
