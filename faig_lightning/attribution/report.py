"""Write an AttributionResult into a run folder: rankings, scores, masking table, analyses, figures and the results
summary, each file atomically and the summary last."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from faig_lightning.atomic import atomic_write_text
from faig_lightning.attribution.engine import AttributionResult
from faig_lightning.attribution.figures import (
    curves_figure,
    locations_figure,
    modulation_figure,
    prediction_figure,
    strip_figure,
)
from faig_lightning.attribution.headline import headline
from faig_lightning.attribution.locations import unit_types
from faig_lightning.attribution.tables import masking_csv, prediction_csv, rows_csv
from faig_lightning.plotting import save_png
from faig_lightning.run_folder import RunFolder


def summary(result: AttributionResult) -> dict:
    """JSON-ready summary: settings, weight fingerprints, FAIG completeness and steps, timings, filter count,
    unmasked metrics. With reused rankings, FAIG details and completeness are those of the run that ranked."""
    source = result.reused or {}
    return {
        "settings": result.settings,
        "fingerprints": result.fingerprints,
        "num_filters": len(result.index),
        "units": result.index.describe(),
        "steps_used": result.steps if result.reused is None else source.get("steps_used"),
        "faig": source.get("faig")
        if result.faig is None
        else {
            "rule": result.faig.rule,
            "steps_used": result.faig.steps,
            "converged": result.faig.converged,
            "stop_reason": result.faig.stop_reason,
            "gradient_evaluations": result.faig.gradient_evaluations,
            "max_batch": result.faig.max_batch,
        },
        "completeness": source.get("completeness", {})
        if result.reused is not None
        else {d: {"estimate": c.estimate, "exact": c.exact, "gap": c.gap, "floor": c.floor}
              for d, c in result.completeness.items()},
        "rankings_from": result.settings.get("rankings_from"),
        "headline": headline(result),
        "timings_s": result.timings,
        "unmasked": result.unmasked,
    }


def write_results(result: AttributionResult, out_dir: str | os.PathLike,
                  provenance: dict[str, Any] | None = None) -> Path:
    """Write the result under ``out_dir`` and return it; the set of files appears complete or not at all.

    Results already in ``out_dir`` are removed first, ``summary.json`` before anything else, so that a folder
    never mixes two runs' files and a missing ``summary.json`` always means "incomplete":

    - ``attribution/<method>/<degradation>_index.txt``: every filter index, one per line, most discriminative
      first (the official format);
    - ``attribution/<method>/<degradation>_scores.npy``: float32 scores;
    - ``masking.csv`` and ``curves.png`` (if masked);
    - ``filter_locations.csv``/``.png`` and ``unit_types.csv`` (per unit type), ``modulation.csv``/``.png``/
      ``modulation_strip.png`` and
      ``degradation_prediction.json``/``.csv``/``.png`` (the analyses that ran);
    - ``summary.json`` (with ``provenance``: where the nets came from), written last.
    """
    folder = RunFolder(out_dir)
    folder.clear_results()
    for method, per in result.rankings.items():
        for deg, order in per.items():
            folder.write_ranking(method, deg, order, result.scores[method][deg])
    if result.masking:
        atomic_write_text(folder.masking, masking_csv(result.masking))
        save_png(curves_figure(result), folder.curves)
    if result.locations:
        atomic_write_text(folder.filter_locations_csv, rows_csv(result.locations))
        atomic_write_text(folder.unit_types_csv, rows_csv(unit_types(result.locations)))
        save_png(locations_figure(result), folder.filter_locations_png)
    if result.modulation:
        atomic_write_text(folder.modulation_csv, rows_csv(result.modulation))
        save_png(modulation_figure(result), folder.modulation_png)
        save_png(strip_figure(result), folder.modulation_strip_png)
    if result.prediction is not None:
        atomic_write_text(folder.prediction_json, json.dumps(result.prediction.to_dict(), indent=2) + "\n")
        atomic_write_text(folder.prediction_csv, prediction_csv(result.prediction))
        save_png(prediction_figure(result.prediction), folder.prediction_png)
    folder.write_results_summary({**summary(result), "provenance": provenance or {}})
    return folder.path
