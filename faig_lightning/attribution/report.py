"""Write an AttributionResult to disk: index files, scores, masking table, curves and a summary, each atomically."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from faig_lightning.atomic import atomic_path, atomic_write_text
from faig_lightning.attribution.engine import AttributionResult, MaskingRow
from faig_lightning.attribution.locations import unit_types
from faig_lightning.attribution.modulation import strip_lambdas
from faig_lightning.attribution.prediction import PredictionResult
from faig_lightning.attribution.stored import SUMMARY
from faig_lightning.plotting import save_png, style_masking_axis

MASKING_COLUMNS = [f.name for f in fields(MaskingRow)]
ANALYSIS_FILES = ("filter_locations.csv", "filter_locations.png", "unit_types.csv", "modulation.csv", "modulation.png",
                  "modulation_strip.png", "degradation_prediction.json", "degradation_prediction.csv",
                  "degradation_prediction.png")

log = logging.getLogger(__name__)


def _write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: np.save would append ".npy" to a name
        np.save(fh, array)


def row_columns(rows: Sequence[Any]) -> list[str]:
    """Column names of dataclass rows: their field names, ``lam`` written ``lambda``."""
    return ["lambda" if f.name == "lam" else f.name for f in fields(rows[0])]


def rows_csv(rows: Sequence[Any]) -> str:
    """Dataclass rows as CSV text with a header of ``row_columns``."""
    buffer = io.StringIO()
    names = [f.name for f in fields(rows[0])]
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(row_columns(rows))
    for row in rows:
        writer.writerow([getattr(row, n) for n in names])
    return buffer.getvalue()


def modulation_figure(result: AttributionResult) -> Figure:
    """PSNR vs lambda, a panel per input degradation, a line per modulated degradation's filters; the unmasked
    target dashed (lambda = 1) — the modulated degradation's own input should follow lambda, the others stay."""
    rows = result.modulation
    inputs = list(dict.fromkeys(r.input_degradation for r in rows))
    fig = Figure(figsize=(3.6 * len(inputs), 3.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(inputs), squeeze=False)[0]
    for ax, inp in zip(axes, inputs, strict=True):
        for deg in dict.fromkeys(r.degradation for r in rows):
            pts = sorted((r.lam, r.psnr) for r in rows if r.degradation == deg and r.input_degradation == inp)
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=f"{deg} filters")
        ax.axhline(result.unmasked["target"][inp]["psnr"], color="grey", linestyle="--", label="target")
        ax.set_title(f"{inp} input", fontsize=9)
        ax.set_xlabel("lambda (0 = baseline filters, 1 = target)")
        ax.set_ylabel("PSNR (dB)")
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.grid(alpha=0.3)
    first = rows[0]
    axes[0].legend(fontsize=7, title=f"{first.method} top {first.proportion:g} %", title_fontsize=7)
    return fig


def strip_figure(result: AttributionResult) -> Figure:
    """The first eval image's output on each degradation's input, its filters modulated across lambda."""
    lambdas = strip_lambdas(result.settings["lambdas"])
    degs = list(result.modulation_strip)
    fig = Figure(figsize=(2.0 * len(lambdas), 2.2 * len(degs)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(degs), len(lambdas), squeeze=False)
    for r, deg in enumerate(degs):
        for c, lam in enumerate(lambdas):
            ax = axes[r][c]
            ax.imshow(result.modulation_strip[deg][c].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"lambda {lam:g}", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"{deg} filters, {deg} input", fontsize=8)
    return fig


def locations_figure(result: AttributionResult) -> Figure:
    """Per method, the share of each layer's filters among a degradation's top filters (smallest proportion)."""
    rows = result.locations
    proportion = min(r.proportion for r in rows)
    methods = list(dict.fromkeys(r.method for r in rows))
    fig = Figure(figsize=(4.2 * len(methods), 3.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(methods), squeeze=False, sharey=True)[0]
    for ax, method in zip(axes, methods, strict=True):
        for deg in dict.fromkeys(r.degradation for r in rows):
            pts = [(r.layer_index, 100 * r.share) for r in rows
                   if r.method == method and r.degradation == deg and r.proportion == proportion]
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker=".", label=deg)
        ax.set_title(f"{method}: top {proportion:g} % per layer", fontsize=9)
        ax.set_xlabel("layer (module order)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of the layer's filters (%)")
    axes[0].legend(fontsize=7)
    return fig


def prediction_csv(prediction: PredictionResult) -> str:
    """One row per test condition: its levels and class, whether the target saw it, patches, correct, accuracy and
    how many patches went to each class (``predicted_<class>``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    level_keys = [f"{d}_sigma" for d in prediction.degradations]
    writer.writerow(["method", "proportion", "condition", "class", *level_keys, "seen", "patches", "correct",
                     "accuracy", *(f"predicted_{c}" for c in prediction.classes)])
    for row in prediction.conditions:
        writer.writerow([prediction.method, prediction.proportion, row["condition"], row["class"],
                         *(row[k] for k in level_keys), row["seen"], row["patches"], row["correct"], row["accuracy"],
                         *(row["predicted"][c] for c in prediction.classes)])
    return buffer.getvalue()


def prediction_figure(prediction: PredictionResult) -> Figure:
    """The confusion matrix (rows: true class, share of its patches per predicted class) and the accuracy of every
    test condition (seen in training or not)."""
    classes = list(prediction.classes)
    fig = Figure(figsize=(4.0 + 0.28 * len(prediction.conditions), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2, width_ratios=[1, max(1.0, 0.09 * len(prediction.conditions))])
    counts = np.array([[prediction.confusion[t][p] for p in classes] for t in classes], dtype=float)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    left.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (r, c), v in np.ndenumerate(shares):
        left.text(c, r, f"{100 * v:.0f}", ha="center", va="center", fontsize=8,
                  color="white" if v > 0.5 else "black")
    left.set_xticks(range(len(classes)), classes, rotation=30, fontsize=7)
    left.set_yticks(range(len(classes)), classes, fontsize=7)
    left.set_xlabel("predicted")
    left.set_ylabel("true")
    left.set_title(f"{prediction.method} top {prediction.proportion:g} %: % of patches", fontsize=9)
    rows = prediction.conditions
    colours = ["tab:blue" if r["seen"] else "tab:orange" for r in rows]
    right.bar(range(len(rows)), [100 * (r["accuracy"] or 0) for r in rows], color=colours)
    right.axhline(100 / len(classes), color="grey", linestyle="--", linewidth=1)
    right.set_xticks(range(len(rows)), [r["condition"] for r in rows], rotation=60, ha="right", fontsize=6)
    right.set_ylabel("accuracy (%)")
    right.set_ylim(0, 100)
    right.set_title("per test condition (blue: levels seen in training, orange: unseen; dashed: chance)",
                    fontsize=8)
    return fig


def masking_csv(rows: list[MaskingRow]) -> str:
    """The masking table as CSV text with a header of ``MASKING_COLUMNS``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MASKING_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row))
    return buffer.getvalue()


def masking_markdown(rows: list[MaskingRow]) -> str:
    """The masking table as a Markdown table (for consoles and notebooks); metrics to 4 significant digits."""
    lines = ["| " + " | ".join(MASKING_COLUMNS) + " |", "|" + "---|" * len(MASKING_COLUMNS)]
    for row in rows:
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in asdict(row).values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


class ProgressBars:
    """A ``progress`` callback for ``run_attribution``: one tqdm bar (with ETA) per stage, on the console when it is
    a terminal; each finished stage leaves one line with its time in the log."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None
        self._stage: tuple[str, int] | None = None
        self._last = 0
        self._start = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self._bar is None or self._stage != (stage, total) or done < self._last:
            self.close()
            self._bar = tqdm(total=total, desc=stage, unit="step", dynamic_ncols=True, disable=None, leave=False)
            self._stage, self._last, self._start = (stage, total), 0, time.perf_counter()
        self._bar.update(done - self._last)
        self._last = done
        if done >= total:
            self.close()

    def close(self) -> None:
        """End the current bar and log its stage's time."""
        if self._bar is not None:
            self._bar.close()
            elapsed = time.perf_counter() - self._start
            log.info("  %s: %d/%d in %.1f s", self._stage[0], self._last, self._stage[1], elapsed)
            self._bar = None


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
    drop = {(r.method, r.proportion, r.masked_degradation, r.input_degradation): r.psnr_drop for r in result.masking}
    ranked = list(dict.fromkeys(r.masked_degradation for r in result.masking))
    inputs = list(dict.fromkeys(r.input_degradation for r in result.masking))
    out: dict[str, float | int | None] = {}
    for method, prop, deg in dict.fromkeys((m, p, d) for m, p, d, _ in drop):
        targeted = drop.get((method, prop, deg, deg))
        pool = [e for e in ranked if e != deg] or [e for e in inputs if e != deg]
        others = [drop[(method, prop, deg, e)] for e in pool if (method, prop, deg, e) in drop]
        other = sum(others) / len(others) if others else None
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


def drop_markdown(rows: list[MaskingRow]) -> str:
    """PSNR drop (dB) per method and proportion: for each masked degradation, on its own input (targeted) and on
    the other ranked inputs. Large targeted and small other drops mean the filters carry that one function."""
    masked = list(dict.fromkeys(r.masked_degradation for r in rows))
    drop = {(r.method, r.proportion, r.masked_degradation, r.input_degradation): r.psnr_drop for r in rows}
    cols = [(m, i) for m in masked for i in [m, *(d for d in masked if d != m)]]
    head = ["method", "masked %"] + [f"mask {m}: {i} input" for m, i in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, prop in dict.fromkeys((r.method, r.proportion) for r in rows):
        cells = [f"{drop[(method, prop, m, i)]:.2f}" if (method, prop, m, i) in drop else "" for m, i in cols]
        lines.append(f"| {method} | {prop:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curves_figure(result: AttributionResult) -> Figure:
    """Masked PSNR vs proportion: a panel per (masked degradation, input degradation), a line per method.

    The unmasked target's PSNR is the dashed line. A panel is "targeted" when the input carries the degradation
    whose filters were masked (the PSNR should drop), else "other" (it should stay).
    """
    masked = list(dict.fromkeys(r.masked_degradation for r in result.masking))
    inputs = list(dict.fromkeys(r.input_degradation for r in result.masking))
    methods = list(dict.fromkeys(r.method for r in result.masking))
    fig = Figure(figsize=(3.6 * max(len(inputs), 1), 3.0 * max(len(masked), 1)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(max(len(masked), 1), max(len(inputs), 1), squeeze=False)
    for r, mdeg in enumerate(masked):
        for c, inp in enumerate(inputs):
            ax = axes[r][c]
            for method in methods:
                pts = sorted(
                    (row.proportion, row.psnr)
                    for row in result.masking
                    if row.method == method and row.masked_degradation == mdeg and row.input_degradation == inp
                )
                ax.plot([p for p, _ in pts], [v for _, v in pts], marker="o", label=method)
            ax.axhline(result.unmasked["target"][inp]["psnr"], color="grey", linestyle="--", label="target (unmasked)")
            style_masking_axis(ax, mdeg, inp)
    axes[0][0].legend(fontsize=7)
    return fig


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
    out = Path(out_dir)
    for name in (SUMMARY, "masking.csv", "curves.png", *ANALYSIS_FILES):
        (out / name).unlink(missing_ok=True)
    shutil.rmtree(out / "attribution", ignore_errors=True)
    for method, per in result.rankings.items():
        for deg, order in per.items():
            folder = out / "attribution" / method
            atomic_write_text(folder / f"{deg}_index.txt", "\n".join(map(str, order.tolist())) + "\n")
            _write_npy(folder / f"{deg}_scores.npy", np.asarray(result.scores[method][deg], dtype=np.float32))
    if result.masking:
        atomic_write_text(out / "masking.csv", masking_csv(result.masking))
        save_png(curves_figure(result), out / "curves.png")
    if result.locations:
        atomic_write_text(out / "filter_locations.csv", rows_csv(result.locations))
        atomic_write_text(out / "unit_types.csv", rows_csv(unit_types(result.locations)))
        save_png(locations_figure(result), out / "filter_locations.png")
    if result.modulation:
        atomic_write_text(out / "modulation.csv", rows_csv(result.modulation))
        save_png(modulation_figure(result), out / "modulation.png")
        save_png(strip_figure(result), out / "modulation_strip.png")
    if result.prediction is not None:
        atomic_write_text(out / "degradation_prediction.json", json.dumps(result.prediction.to_dict(), indent=2) + "\n")
        atomic_write_text(out / "degradation_prediction.csv", prediction_csv(result.prediction))
        save_png(prediction_figure(result.prediction), out / "degradation_prediction.png")
    payload = {**summary(result), "provenance": provenance or {}}
    text = json.dumps(payload, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    atomic_write_text(out / SUMMARY, text + "\n")
    return out
