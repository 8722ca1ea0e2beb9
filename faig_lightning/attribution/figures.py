"""The figures of an attribution result: masking curves, modulation curves and strip, filter locations and the
degradation prediction (matplotlib ``Figure`` objects, drawn off-screen; ``plotting.save_png`` writes them)."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from faig_lightning.attribution.engine import AttributionResult
from faig_lightning.attribution.modulation import strip_lambdas
from faig_lightning.attribution.prediction import PredictionResult
from faig_lightning.plotting import style_masking_axis


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
