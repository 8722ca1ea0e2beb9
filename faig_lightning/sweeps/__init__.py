"""Cross-run summaries of sweeps: tables, plots and an optional W&B summary run (``faig-summarize``)."""

from faig_lightning.sweeps.records import Overlap, RunRecord, find_runs, load_run
from faig_lightning.sweeps.summarize import log_to_wandb, overlaps, summarize, swept_keys

__all__ = [
    "Overlap",
    "RunRecord",
    "find_runs",
    "load_run",
    "log_to_wandb",
    "overlaps",
    "summarize",
    "swept_keys",
]
