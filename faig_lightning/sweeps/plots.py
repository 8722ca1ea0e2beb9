"""Cross-run plots of a sweep (matplotlib ``Figure`` objects, no pyplot), saved atomically as PNG."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from faig_lightning.plotting import style_masking_axis
from faig_lightning.sweeps.records import Overlap, RunRecord, float_or_none

PROPORTIONS_KEY = "attribution.proportions"
"""The masked proportions: the x axis of the curves, not a swept setting of their own."""
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "x"]


def _new_figure(rows: int, cols: int, width: float, height: float) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _masked_degradations(runs: Sequence[RunRecord]) -> list[str]:
    return list(dict.fromkeys(row["masked_degradation"] for r in runs for row in r.masking))


def drop_vs_figure(runs: Sequence[RunRecord], key: str) -> Figure:
    """PSNR drop vs the swept value of ``key``: a row per masked degradation, targeted and other drop side by side.

    A line per (method, proportion); several runs with the same value are averaged. The x axis is numeric when every
    value is a number, else the values in run order.
    """
    runs = [r for r in runs if key in r.overrides]
    values = [r.overrides[key] for r in runs]
    numeric = all(float_or_none(v) is not None for v in values)
    categories = list(dict.fromkeys(values))
    xs = [float(v) if numeric else float(categories.index(v)) for v in values]
    masked = _masked_degradations(runs)
    series: dict[tuple[str, float, str, int], dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run, x in zip(runs, xs, strict=True):
        for (method, prop, mdeg), pair in run.drops().items():
            for col, y in enumerate(pair):
                if y is not None:
                    series[method, prop, mdeg, col][x].append(y)
    methods = list(dict.fromkeys(k[0] for k in series))
    proportions = sorted({k[1] for k in series})
    averaged = len(set(xs)) < len(xs)
    fig, axes = _new_figure(max(len(masked), 1), 2, 4.5, 3.0)
    for r, mdeg in enumerate(masked):
        for col, role in enumerate([f"targeted drop ({mdeg} input)", "other drop (mean, clean excluded)"]):
            ax = axes[r][col]
            for (method, prop, m, c), points in series.items():
                if (m, c) != (mdeg, col):
                    continue
                px = sorted(points)
                j = proportions.index(prop)
                ax.plot(px, [sum(points[x]) / len(points[x]) for x in px], color=f"C{methods.index(method) % 10}",
                        linestyle=LINESTYLES[j % len(LINESTYLES)], marker=MARKERS[j % len(MARKERS)],
                        label=f"{method} {prop:g}%")
            ax.set_title(f"mask {mdeg}: {role}", fontsize=9)
            ax.set_xlabel(key + (" (mean over runs with equal value)" if averaged else ""), fontsize=8)
            ax.set_ylabel("PSNR drop (dB)")
            if not numeric:
                ax.set_xticks(range(len(categories)), categories, fontsize=8)
            ax.grid(alpha=0.3)
    if axes[0][0].has_data():
        axes[0][0].legend(fontsize=7)
    return fig


def _run_label(run: RunRecord, keys: Sequence[str]) -> str:
    values = ", ".join(f"{k}={run.overrides[k]}" for k in keys if k in run.overrides)
    return f"{run.name} ({values})" if values else run.name


def _curve_lines(runs: Sequence[RunRecord], keys: Sequence[str], sources: Mapping[str, RunRecord]
                 ) -> list[tuple[str, list[dict[str, str]], dict[str, str]]]:
    """``(label, masking rows, line style)`` per curve: a run each, except that runs masking new proportions on a
    source run's rankings (``sources``, by path) are one curve per source and other swept values, drawn after the
    source's own curve (grey, dashed) so that the new proportions lie over it."""
    lines, merged = [], {}
    ranked_there = {str(r.path) for r in sources.values()}
    for run in runs:
        if str(run.path) in ranked_there:
            continue  # drawn as its sweep's reference curve below
        if run.source in sources:
            values = ", ".join(f"{k}={run.overrides[k]}" for k in keys if k in run.overrides and k != PROPORTIONS_KEY)
            merged.setdefault((run.source, values), []).extend(run.masking)
        else:
            lines.append((_run_label(run, keys), run.masking, {}))
    for source in dict.fromkeys(s for s, _ in merged):
        lines.append((f"{sources[source].name} (where ranked)", sources[source].masking,
                      {"color": "grey", "linestyle": "--"}))
    for (source, values), rows in merged.items():
        lines.append((f"on {sources[source].name}'s rankings" + (f" ({values})" if values else ""), rows, {}))
    return lines


def curves_figure(runs: Sequence[RunRecord], method: str, keys: Sequence[str],
                  sources: Mapping[str, RunRecord] | None = None) -> Figure:
    """Masked PSNR vs proportion of ``method``: a panel per (masked, input degradation), a line per run.

    Lines are labelled with the run name and its values of the swept ``keys``; proportions masked on the rankings
    of a run in ``sources`` (path -> record) are drawn over that run's curve.
    """
    lines = _curve_lines(runs, keys, sources or {})
    rows = [row for _, masking, _ in lines for row in masking if row["method"] == method]
    masked = list(dict.fromkeys(row["masked_degradation"] for row in rows))
    inputs = list(dict.fromkeys(row["input_degradation"] for row in rows))
    fig, axes = _new_figure(max(len(masked), 1), max(len(inputs), 1), 3.6, 3.0)
    for r, mdeg in enumerate(masked):
        for c, inp in enumerate(inputs):
            ax = axes[r][c]
            for i, (label, masking, style) in enumerate(lines):
                pts = sorted(
                    (p, v)
                    for row in masking
                    if (row["method"], row["masked_degradation"], row["input_degradation"]) == (method, mdeg, inp)
                    and (p := float_or_none(row.get("proportion"))) is not None
                    and (v := float_or_none(row.get("psnr"))) is not None
                )
                if pts:
                    ax.plot([p for p, _ in pts], [v for _, v in pts], marker=MARKERS[i % len(MARKERS)],
                            **{"color": f"C{i % 10}", **style}, label=label)
            style_masking_axis(ax, mdeg, inp, prefix=f"{method}: ")
    if axes[0][0].has_data():
        axes[0][0].legend(fontsize=7)
    return fig


def overlap_figure(cells: Sequence[Overlap], title: str) -> Figure:
    """The run × run Jaccard matrix of ``cells`` as a heat map with the values written in; ``–`` where undefined."""
    names = list(dict.fromkeys(o.run_a for o in cells))
    matrix = np.full((len(names), len(names)), np.nan)
    for o in cells:
        if o.jaccard is not None:
            matrix[names.index(o.run_a), names.index(o.run_b)] = o.jaccard
    size = 2.5 + 0.6 * len(names)
    fig, axes = _new_figure(1, 1, size + 1.0, size)
    ax = axes[0][0]
    image = ax.imshow(np.ma.masked_invalid(matrix), vmin=0.0, vmax=1.0, cmap="viridis")
    fontsize = max(5.0, min(9.0, 60.0 / max(len(names), 1)))
    for (i, j), value in np.ndenumerate(matrix):
        text = "–" if math.isnan(value) else f"{value:.2f}"
        color = "black" if math.isnan(value) or value > 0.5 else "white"
        ax.text(j, i, text, ha="center", va="center", color=color, fontsize=fontsize)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("run b")
    ax.set_ylabel("run a")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="Jaccard |A∩B| / |A∪B|")
    return fig
