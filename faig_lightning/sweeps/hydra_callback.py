"""Hydra callback: summarise a multirun (``faig-train -m`` / ``faig-attribute -m``) into its sweep folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from faig_lightning.cli import record_failure, report_user_error, user_error


class SummarizeSweep(Callback):
    """After the last job, run ``faig-summarize`` on the sweep folder (failed and incomplete jobs are listed)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from faig_lightning.sweeps.summarize import summarize

        try:
            summarize([Path(config.hydra.sweep.dir)], wandb="auto")
        except Exception as exc:
            err = user_error(exc)
            if err is None:
                raise
            record_failure("sweep summary", report_user_error("faig-summarize", err))
