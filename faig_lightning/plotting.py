"""Matplotlib helpers shared by a run's report and the sweep plots: atomic PNGs and the masked-PSNR axis style."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from faig_lightning.atomic import atomic_path


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` as a PNG at ``path`` atomically; return ``path``."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return Path(path)


def style_masking_axis(ax: Any, masked: str, inp: str, prefix: str = "") -> None:
    """Title ("targeted" when the input carries the masked degradation, else "other"), labels and grid of a
    masked-PSNR-vs-proportion panel."""
    role = "targeted" if inp == masked else "other"
    ax.set_title(f"{prefix}mask {masked} filters, {inp} input ({role})", fontsize=9)
    ax.set_xlabel("masked filters (%)")
    ax.set_ylabel("PSNR (dB)")
    ax.ticklabel_format(axis="y", useOffset=False)
    ax.grid(alpha=0.3)
