"""The headline numbers of an attribution result: flat scalars (drops, selectivity, completeness, unmasked PSNR,
filter depth, prediction accuracy) for the results summary and the W&B run summary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from faig_lightning.attribution.drops import targeted_other_drops
from faig_lightning.attribution.engine import AttributionResult


def headline(result: AttributionResult) -> dict[str, float | int | None]:
    """The run's headline numbers, flat keys under ``attribution/``; the same keys for every run of a config.

    Per method, proportion and masked degradation ``<method>/p<p>/<deg>/``:

    - ``targeted_drop``: PSNR drop (dB) on that degradation's own input when its top filters are masked;
    - ``other_drop``: mean PSNR drop on the inputs of the other ranked degradations (with a single ranked
      degradation, on every other input, e.g. clean);
    - ``selectivity = targeted_drop - other_drop`` (dB): a number whatever the signs, > 0 when the filters hurt
      their own degradation's input more than the others.

    Also the completeness gap per degradation, FAIG's steps, the unmasked PSNR of both nets per input, the mean
    depth of each method's selected filters at the smallest proportion (0 = first layer, 1 = last) and the
    degradation-prediction accuracy (all, seen, unseen). Values are None only where nothing was measured.
    """
    rows = ((r.method, r.proportion, r.masked_degradation, r.input_degradation, r.psnr_drop) for r in result.masking)
    out: dict[str, float | int | None] = {}
    for (method, prop, deg), (targeted, other) in targeted_other_drops(rows, others="ranked_else_all").items():
        key = f"attribution/{method}/p{prop:g}/{deg}"
        out[f"{key}/targeted_drop"] = targeted
        out[f"{key}/other_drop"] = other
        out[f"{key}/selectivity"] = targeted - other if targeted is not None and other is not None else None
    for deg, comp in result.completeness.items():
        out[f"attribution/completeness_gap/{deg}"] = comp.gap
    out["attribution/steps_used"] = result.steps
    for net, per in result.unmasked.items():
        for inp, metrics in per.items():
            out[f"attribution/unmasked/{net}/{inp}/psnr"] = metrics["psnr"]
    if result.locations:
        smallest = min(r.proportion for r in result.locations)
        for (method, deg, prop), depth in mean_depths(result.locations).items():
            if prop == smallest:
                out[f"attribution/locations/{method}/p{prop:g}/{deg}/mean_depth"] = depth
    if result.prediction is not None:
        accuracy = result.prediction.to_dict()["accuracy"]
        for key in ("all", "seen", "unseen"):
            out[f"attribution/prediction/accuracy/{key}"] = accuracy[key]
    return out


def mean_depths(rows: Sequence[Any]) -> dict[tuple[str, str, float], float]:
    """Per (method, degradation, proportion) of ``LocationRow`` s: the mean layer position of the selected
    filters, 0 = first layer, 1 = last (later = deeper in the net)."""
    out = {}
    for key in dict.fromkeys((r.method, r.degradation, r.proportion) for r in rows):
        mine = [r for r in rows if (r.method, r.degradation, r.proportion) == key]
        last = max(r.layer_index for r in mine) or 1
        total = sum(r.selected for r in mine)
        out[key] = sum(r.selected * r.layer_index for r in mine) / (total * last) if total else float("nan")
    return out
