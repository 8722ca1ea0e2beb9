"""The runs of a sweep as records: find the run folders, read their status, overrides and stored results.

Reads what ``faig-train`` / ``faig-attribute`` leave in a run folder (through ``RunFolder``: ``.hydra/overrides.yaml``,
``status.json``, ``summary.json``, ``masking.csv``, ``wandb_run.json``). The tables, plots and criterion of the
sweep summary are computed from these records.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from faig_lightning.attribution.drops import DropKey, targeted_other_drops
from faig_lightning.errors import FaigError
from faig_lightning.run_folder import (
    MASKING_FILE,
    SETUP_KEYS,
    STATUS_FILE,
    SUMMARY_FILE,
    RunFolder,
    UnreadableRecord,
)

COMPLETE, FAILED, INCOMPLETE = "complete", "failed", "incomplete"
ATTRIBUTION_JOBS = ("attribute", "target")
"""W&B job types of a run folder that log an attribution, in order of preference."""


def float_or_none(text: str | None) -> float | None:
    """The number in a stored string; None when it is empty, missing or not a number."""
    try:
        return float(text) if text else None
    except ValueError:
        return None


@dataclass
class RunRecord:
    """One run folder: its name in the tables, status, overrides and (when complete) attribution results."""

    name: str
    path: Path
    status: str
    reason: str = ""
    overrides: dict[str, str] = field(default_factory=dict)
    masking_columns: list[str] = field(default_factory=list)
    masking: list[dict[str, str]] = field(default_factory=list)  # masking.csv rows, values as the exact strings
    summary: dict[str, Any] = field(default_factory=dict)  # the attribution summary.json
    wandb: dict[str, Any] = field(default_factory=dict)  # its W&B record (RunFolder.read_wandb_record), or empty

    @property
    def folder(self) -> RunFolder:
        """The run folder, which names its files."""
        return RunFolder(self.path)

    @property
    def complete(self) -> bool:
        return self.status == COMPLETE

    @property
    def wandb_run(self) -> dict[str, Any]:
        """The W&B run that logged this run's attribution (``attribute`` or the ``target`` stage), else its last."""
        runs = self.wandb.get("runs") or {}
        return next((runs[k] for k in ATTRIBUTION_JOBS if k in runs), list(runs.values())[-1] if runs else {})

    @property
    def source(self) -> str | None:
        """The run whose rankings this one reused (``attribution.rankings_from``), if any."""
        return self.summary.get("rankings_from")

    @property
    def num_filters(self) -> int | None:
        return self.summary.get("num_filters")

    @property
    def proportions(self) -> list[float]:
        return [float(p) for p in self.summary.get("settings", {}).get("proportions", [])]

    @property
    def degradations(self) -> list[str]:
        """The degradations the run ranked."""
        return [str(d) for d in self.summary.get("settings", {}).get("degradations", [])]

    def drops(self) -> dict[DropKey, tuple[float | None, float | None]]:
        """``(method, proportion, masked) -> (targeted drop, mean drop on the other ranked inputs but clean)`` of
        the masking table (``targeted_other_drops``, ``others="ranked"``)."""
        return targeted_other_drops(
            ((row["method"], float_or_none(row.get("proportion")), row["masked_degradation"],
              row["input_degradation"], float_or_none(row.get("psnr_drop"))) for row in self.masking),
            others="ranked")


@dataclass(frozen=True)
class Overlap:
    """Jaccard overlap of two runs' top-``proportion`` % FAIG filter sets; ``None`` when not comparable."""

    degradation: str
    proportion: float
    run_a: str
    run_b: str
    jaccard: float | None
    top_k: int | None


def _job_order(folder: Path) -> tuple[int, int, str]:
    return (0, int(folder.name), "") if folder.name.isdigit() else (1, 0, folder.name)


def find_runs(dirs: Sequence[str | os.PathLike]) -> list[RunRecord]:
    """The runs in ``dirs``, each a run folder (with ``.hydra/``) or a sweep folder holding run folders.

    Runs keep the order of ``dirs``; a sweep's jobs are sorted numerically. A run is named by its path relative to
    the common parent of all runs' folders (a sweep's job number when there is one sweep). Raises ``FaigError`` for
    a missing folder or one without runs.
    """
    if not dirs:
        raise FaigError("no folder given — pass a sweep folder (with 0/, 1/, …) or run folders (with .hydra/)")
    paths: list[Path] = []
    for d in map(Path, dirs):
        if not d.is_dir():
            raise FaigError(f"no such folder: {d} — pass a sweep folder (with 0/, 1/, …) or a run folder")
        found = [d] if RunFolder(d).is_run() else sorted(
            (s for s in d.iterdir() if s.is_dir() and RunFolder(s).is_run()), key=_job_order)
        if not found:
            raise FaigError(f"no runs in {d}: neither it nor its subfolders have .hydra/ — pass the folder that "
                            "faig-train or faig-attribute wrote (a run folder, or a multirun folder with 0/, 1/, …)")
        paths += [p.resolve() for p in found if p.resolve() not in paths]
    parent = Path(os.path.commonpath([p.parent for p in paths]))
    return [load_run(p, p.relative_to(parent).as_posix()) for p in paths]


def _run_status(folder: RunFolder) -> tuple[str, str]:
    """``(status, reason)`` of a run folder; the reason is empty for a complete run."""
    try:
        info = folder.read_status()
    except UnreadableRecord:
        return INCOMPLETE, f"{STATUS_FILE} is unreadable"
    if info is not None:
        recorded = info.get("status")
        if recorded == FAILED:
            return FAILED, str(info.get("error") or f"failed ({STATUS_FILE} records no error)")
        if recorded == "running":
            return INCOMPLETE, f"interrupted or still running ({STATUS_FILE} says running)"
        if recorded == "interrupted":
            where = f": {info['detail']}" if info.get("detail") else ""
            return INCOMPLETE, f"interrupted by {info.get('signal') or 'a signal'}{where} — rerun its command to resume"
        if recorded != COMPLETE:
            return INCOMPLETE, f"unknown status {recorded!r} in {STATUS_FILE}"
    if not folder.results_summary.is_file():
        return INCOMPLETE, f"no attribution results ({SUMMARY_FILE} missing)"
    if not folder.masking.is_file():
        return INCOMPLETE, f"no attribution results ({MASKING_FILE} missing)"
    return COMPLETE, ""


def load_run(run_dir: str | os.PathLike, name: str) -> RunRecord:
    """Read one run folder: overrides, status and, when complete, ``summary.json`` and ``masking.csv``; a run on
    another run's rankings has that run's overrides, and of its own those of other settings."""
    folder = RunFolder(run_dir)
    status, reason = _run_status(folder)
    run = RunRecord(name=name, path=folder.path, status=status, reason=reason, overrides=folder.read_overrides(),
                    wandb=folder.read_wandb_record() or {})
    if status != COMPLETE:
        return run
    summary = folder.results_summary_record()
    if summary is None or "num_filters" not in summary:
        run.status, run.reason = INCOMPLETE, f"{SUMMARY_FILE} is not an attribution summary"
        return run
    run.masking_columns, run.masking = folder.read_masking_rows()
    run.summary = summary
    if run.source:  # masked on another run's rankings: that run's settings are this one's (faig-attribute refuses
        # a model, eval set or degradation that differs, so its own overrides of those say nothing new)
        own = {k: v for k, v in run.overrides.items() if k.split(".")[0] not in SETUP_KEYS}
        run.overrides = {**RunFolder(run.source).read_overrides(), **own}
    return run
