"""Run FAIG after the target stage: baseline checkpoint vs the trained target (EMA weights), on the eval set."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import WandbLogger

from faig_lightning.attribution import AttributionResult, figure2_panel, run_attribution, write_results
from faig_lightning.attribution.report import drop_markdown, print_progress
from faig_lightning.checkpoints import load_weights


class AttributionCallback(Callback):
    """After fit, rank and mask the target's filters and write the results into ``out_dir``.

    Attach it after ``EMAWeightAveraging`` so that the EMA weights are in place when it runs. Under DDP each
    process takes every ``world_size``-th eval image, the engine sums scores and metrics across processes, and
    rank 0 writes the files and logs to W&B.
    """

    def __init__(self, settings: Mapping[str, Any], baseline_ckpt: str, out_dir: str,
                 panel_proportion: float = 1.0) -> None:
        self.settings = dict(settings)
        self.baseline_ckpt = baseline_ckpt
        self.out_dir = Path(out_dir)
        self.panel_proportion = panel_proportion
        self.result: AttributionResult | None = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        target = pl_module.net
        was_training = target.training
        target.eval()
        baseline = load_weights(copy.deepcopy(target), self.baseline_ckpt, key="ema").eval()
        eval_set = trainer.datamodule.eval_set
        rank, world = trainer.global_rank, trainer.world_size
        shard = [eval_set[i] for i in range(rank, len(eval_set), world)]

        def reduce_sum(t: torch.Tensor) -> torch.Tensor:
            return trainer.strategy.reduce(t, reduce_op="sum")

        with torch.inference_mode(False), torch.enable_grad():
            result = run_attribution(baseline, target, shard, scale=pl_module.scale,
                                     reduce_fn=reduce_sum if world > 1 else None,
                                     progress=print_progress if trainer.is_global_zero else None, **self.settings)
        result.settings.update(num_images=len(eval_set), world_size=world, images_per_process=len(shard))
        self.result = result
        if trainer.is_global_zero:
            write_results(result, self.out_dir)
            print(f"FAIG results in {self.out_dir}; PSNR drop (dB) when the top filters are masked:")
            print(drop_markdown(result.masking))
            if isinstance(trainer.logger, WandbLogger):
                self._log_wandb(trainer.logger, result, baseline, target, eval_set[0], pl_module.scale)
        trainer.strategy.barrier()
        target.train(was_training)

    def _log_wandb(self, logger: WandbLogger, result: AttributionResult, baseline: torch.nn.Module,
                   target: torch.nn.Module, item: Mapping[str, Any], scale: int) -> None:
        """Masked-PSNR curves, the masking table, Figure-2 panels and completeness gaps."""
        import wandb

        rows = [list(vars(r).values()) for r in result.masking]
        columns = list(vars(result.masking[0])) if result.masking else []
        table = wandb.Table(columns=columns, data=rows)
        payload: dict[str, Any] = {"attribution/masking": table,
                                   "attribution/curves": wandb.Image(str(self.out_dir / "curves.png"))}
        for mdeg in {r.masked_degradation for r in result.masking}:
            for inp in {r.input_degradation for r in result.masking}:
                sel = [r for r in result.masking if r.masked_degradation == mdeg and r.input_degradation == inp]
                methods = sorted({r.method for r in sel})
                props = sorted({r.proportion for r in sel})
                ys = [[next(r.psnr for r in sel if r.method == m and r.proportion == p) for p in props]
                      for m in methods]
                role = "targeted" if inp == mdeg else "other"
                payload[f"attribution/psnr_mask_{mdeg}_on_{inp}"] = wandb.plot.line_series(
                    xs=props, ys=ys, keys=methods, title=f"mask {mdeg} filters, {inp} input ({role})",
                    xname="masked filters (%)")
        if "faig" in result.rankings:
            panel = figure2_panel(baseline, target, item, result.rankings["faig"], scale=scale,
                                  proportion=self.panel_proportion)
            for inp, row in panel.rows.items():
                grid = torch.cat(list(row), dim=2)
                payload[f"attribution/figure2/{inp}"] = wandb.Image(grid, caption=" | ".join(panel.columns))
        for deg, comp in result.completeness.items():
            payload[f"attribution/completeness_gap/{deg}"] = comp.gap
        logger.experiment.log(payload)
