"""Where the discriminative filters live: per layer, how many of a ranking's top filters it holds, and per unit
type (convolutions, attention projections, other Linear layers, whole-tensor extra units)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from faig_lightning.attribution.filters import KINDS, FilterIndex


@dataclass(frozen=True)
class LocationRow:
    """Of ``method``'s top ``proportion`` % filters for ``degradation``, ``selected`` lie in layer ``layer_index``
    (``layer_name``, ``filters_in_layer`` filters, unit type ``kind``); ``share = selected / filters_in_layer``."""

    method: str
    degradation: str
    proportion: float
    layer_index: int
    layer_name: str
    filters_in_layer: int
    selected: int
    share: float
    kind: str = "conv"


@dataclass(frozen=True)
class UnitTypeRow:
    """Of ``method``'s top ``proportion`` % units for ``degradation``, ``selected`` are of type ``kind`` (of which
    the net has ``units``): ``share`` of that type is selected, and they make ``of_selection`` of the selection.
    ``enrichment = of_selection / (units / all units)``: above 1, the type is over-represented."""

    method: str
    degradation: str
    proportion: float
    kind: str
    units: int
    selected: int
    share: float
    of_selection: float
    enrichment: float


def unit_types(rows: Sequence[LocationRow]) -> list[UnitTypeRow]:
    """The layer rows of :func:`filter_locations` summed per unit type (``KINDS`` order, types the net has)."""
    out = []
    for key in dict.fromkeys((r.method, r.degradation, r.proportion) for r in rows):
        mine = [r for r in rows if (r.method, r.degradation, r.proportion) == key]
        total_units, total_selected = sum(r.filters_in_layer for r in mine), sum(r.selected for r in mine)
        for kind in (k for k in KINDS if any(r.kind == k for r in mine)):
            units = sum(r.filters_in_layer for r in mine if r.kind == kind)
            selected = sum(r.selected for r in mine if r.kind == kind)
            of_selection = selected / total_selected if total_selected else 0.0
            out.append(UnitTypeRow(*key, kind, units, selected, selected / units, of_selection,
                                   of_selection / (units / total_units)))
    return out


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
                    # a layer by its module's name; a whole-tensor unit by the parameter's (norm.weight vs norm.bias)
                    name = layer.name if layer.kind == "tensor" else layer.name.removesuffix(".weight")
                    rows.append(LocationRow(method, deg, float(p), pos, name,
                                            layer.count, counts[pos], counts[pos] / layer.count, layer.kind))
    return rows
