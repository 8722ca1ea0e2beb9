"""Run FAIG after the target stage: baseline checkpoint vs the trained target (EMA weights), on the eval set."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import WandbLogger

from faig_lightning.attribution import (
    AttributionResult,
    Figure2Panel,
    figure2_panel,
    run_attribution,
    write_results,
)
from faig_lightning.attribution.headline import headline
from faig_lightning.attribution.locations import unit_types
from faig_lightning.attribution.progress import ProgressBars
from faig_lightning.attribution.settings import AttributionSettings
from faig_lightning.attribution.tables import drop_markdown, row_columns
from faig_lightning.attribution.validation import state_fingerprint
from faig_lightning.checkpoints import load_weights
from faig_lightning.run_folder import RunFolder

log = logging.getLogger(__name__)


class AttributionCallback(Callback):
    """After fit, rank and mask the target's filters and write the results into ``out_dir``.

    Attach it after the EMA callback (``ForeachEMA``) so that the EMA weights are in place when it runs. It runs only
    when training reached ``max_steps`` and the results in ``out_dir`` are not already complete for these weights and
    settings. Under DDP each process takes every ``world_size``-th eval image, the engine sums scores and
    metrics across processes, and rank 0 writes the files and logs to W&B.
    """

    def __init__(self, settings: AttributionSettings, baseline_ckpt: str, out_dir: str,
                 provenance: Mapping[str, Any] | None = None) -> None:
        self.settings = settings
        self.baseline_ckpt = baseline_ckpt
        self.folder = RunFolder(out_dir)
        self.provenance = dict(provenance or {})
        self.fingerprints: dict[str, str] | None = None
        self.result: AttributionResult | None = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.max_steps > 0 and trainer.global_step < trainer.max_steps:
            log.warning("training stopped at step %d of %d: no attribution on an unfinished target",
                        trainer.global_step, trainer.max_steps)
            return
        self.run(trainer, pl_module)

    def complete(self) -> bool:
        """Whether the run folder holds complete results for the nets and settings of the last ``run``."""
        return self.fingerprints is not None and self.folder.results_complete(self.settings.to_dict(),
                                                                              self.fingerprints)

    def run(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> AttributionResult | None:
        """Attribute ``pl_module.net`` against the baseline unless complete results exist; returns the result."""
        target = pl_module.net
        was_training = target.training
        target.eval()
        baseline = load_weights(copy.deepcopy(target), self.baseline_ckpt, key="ema").eval()
        self.fingerprints = {"baseline": state_fingerprint(baseline), "target": state_fingerprint(target)}
        if self.folder.results_complete(self.settings.to_dict(), self.fingerprints):
            log.info("attribution results in %s are complete for this target and these settings; not recomputed",
                     self.folder.path)
            target.train(was_training)
            return None
        eval_set = trainer.datamodule.eval_set
        rank, world = trainer.global_rank, trainer.world_size
        shard = [eval_set[i] for i in range(rank, len(eval_set), world)]

        def reduce_sum(t: torch.Tensor) -> torch.Tensor:
            return trainer.strategy.reduce(t, reduce_op="sum")

        with torch.inference_mode(False), torch.enable_grad():
            result = run_attribution(baseline, target, shard, scale=pl_module.scale, settings=self.settings,
                                     reduce_fn=reduce_sum if world > 1 else None,
                                     progress=ProgressBars() if trainer.is_global_zero else None,
                                     pipeline=dict(pl_module.hparams.get("degradation") or {}) or None)
        result.settings.update(num_images=len(eval_set), world_size=world, images_per_process=len(shard))
        self.result = result
        if trainer.is_global_zero:
            write_results(result, self.folder.path, self.provenance)
            log.info("FAIG results in %s; PSNR drop (dB) when the top filters are masked:\n%s", self.folder.path,
                     drop_markdown(result.masking))
            if isinstance(trainer.logger, WandbLogger):
                log_attribution(trainer.logger.experiment, result, self.folder.path, baseline, target, eval_set[0],
                                pl_module.scale, self.settings.panel_proportion)
        trainer.strategy.barrier()
        target.train(was_training)
        return result


def log_attribution(run: Any, result: AttributionResult, out_dir: str | Path, baseline: torch.nn.Module,
                    target: torch.nn.Module, item: Mapping[str, Any], scale: int, panel_proportion: float) -> None:
    """Log an attribution result to the W&B run ``run`` (a ``wandb.Run``).

    The masking table as scalars over ``attribution/masked_percent`` (W&B overlays them across runs), the
    ``headline`` numbers in the run summary, the tables, the plots written in ``out_dir``, the Figure-2 panel of
    ``item`` (one 8-bit image per input degradation, FAIG's top ``panel_proportion`` % filters masked) and the
    result files as an artifact of type ``attribution``.
    """
    import wandb

    folder = RunFolder(out_dir)
    # each curve by name (a glob would lose to the logger's own "*"), plotted over the proportion, kept out of the
    # run summary (the headline numbers are there)
    run.define_metric("attribution/masked_percent", summary="none")
    curves = {f"attribution/{r.method}/mask_{r.masked_degradation}/{r.input_degradation}/{m}"
              for r in result.masking for m in ("psnr_drop", "psnr")}
    for key in sorted(curves):
        run.define_metric(key, step_metric="attribution/masked_percent", summary="none")
    for prop in sorted({r.proportion for r in result.masking}):
        row: dict[str, Any] = {"attribution/masked_percent": prop}
        for r in (r for r in result.masking if r.proportion == prop):
            key = f"attribution/{r.method}/mask_{r.masked_degradation}/{r.input_degradation}"
            row[f"{key}/psnr_drop"] = r.psnr_drop
            row[f"{key}/psnr"] = r.psnr
        run.log(row)
    columns = list(vars(result.masking[0])) if result.masking else []
    payload: dict[str, Any] = {
        "attribution/masking": wandb.Table(columns=columns, data=[list(vars(r).values()) for r in result.masking])
    }
    for rows, key in ((result.modulation, "modulation"), (result.locations, "filter_locations"),
                      (unit_types(result.locations), "unit_types")):
        if rows:
            payload[f"attribution/{key}"] = wandb.Table(columns=row_columns(rows),
                                                        data=[list(vars(r).values()) for r in rows])
    if result.prediction is not None:
        classes = list(result.prediction.classes)
        payload["attribution/prediction/confusion"] = wandb.Table(
            columns=["true", *classes], data=[[t, *(result.prediction.confusion[t][c] for c in classes)]
                                              for t in classes])
    plots = (folder.modulation_png, folder.filter_locations_png, folder.prediction_png)
    for png in (folder.curves, folder.modulation_png, folder.modulation_strip_png, folder.filter_locations_png,
                folder.prediction_png):
        if png.is_file():
            payload[f"attribution/{png.stem}" + ("_plot" if png in plots else "")] = wandb.Image(str(png))
    if "faig" in result.rankings:
        panel = figure2_panel(baseline, target, item, result.rankings["faig"], scale=scale,
                              proportion=panel_proportion)
        for inp, images in panel.rows.items():
            row_panel = Figure2Panel(columns=panel.columns, rows={inp: images})
            payload[f"attribution/figure2/{inp}"] = wandb.Image(row_panel.grid(), caption=" | ".join(panel.columns))
    run.log(payload)
    run.summary.update(headline(result))
    artifact = wandb.Artifact(f"attribution-{run.id}", type="attribution",
                              description="FAIG rankings, scores, masking table and summary of this run")
    for path in folder.result_files():
        if path.is_file():
            artifact.add_file(str(path))
    artifact.add_dir(str(folder.rankings_dir), name=folder.rankings_dir.name)
    run.log_artifact(artifact)
