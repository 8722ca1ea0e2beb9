"""``faig-train``: Hydra entry point that trains the baseline, the target, or both, in one run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import Callback, EMAWeightAveraging, ModelCheckpoint

from faig_lightning import loggers
from faig_lightning.atomic import atomic_write_text
from faig_lightning.callbacks import AttributionCallback
from faig_lightning.checkpoints import export_basicsr, load_weights
from faig_lightning.config import CONF_DIR, engine_settings, exit_on_user_error, plain
from faig_lightning.errors import FaigError
from faig_lightning.module import STAGES, SRModule


def _run_names() -> tuple[Path, str, str]:
    """(run folder, job name, W&B group): a multirun groups its jobs by sweep folder."""
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    if hc.mode == RunMode.MULTIRUN:
        return run_dir, f"{Path(hc.sweep.dir).name}-{hc.job.num}", Path(hc.sweep.dir).name
    return run_dir, run_dir.name, run_dir.name


def _callbacks(cfg: DictConfig, stage: str, stage_dir: Path, baseline_ckpt: str | None) -> list[Callback]:
    scfg = cfg[stage]
    callbacks: list[Callback] = [
        EMAWeightAveraging(decay=scfg.ema_decay),
        ModelCheckpoint(dirpath=stage_dir / "checkpoints", filename="best-step{step}", monitor=scfg.monitor,
                        mode="max", save_top_k=1, auto_insert_metric_name=False),
        # the latest state after every validation, whether or not it is the best: what a restart resumes from
        ModelCheckpoint(dirpath=stage_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
                        enable_version_counter=False),
    ]
    if stage == "target" and cfg.attribution.enabled:
        callbacks.append(AttributionCallback(engine_settings(cfg.attribution), baseline_ckpt, str(stage_dir.parent),
                                             panel_proportion=cfg.attribution.panel_proportion))
    return callbacks


def run_stage(cfg: DictConfig, stage: str, run_dir: Path, job: str, group: str,
              baseline_ckpt: str | None) -> dict[str, Any]:
    """Fit one stage in ``run_dir/<stage>``; export ``net_g.pth``; return its summary."""
    scfg = cfg[stage]
    stage_dir = run_dir / stage
    degradation = cfg.baseline_degradation if stage == "baseline" else cfg.degradation
    if stage == "target" and not baseline_ckpt:
        raise FaigError("stage=target needs baseline_ckpt=PATH (a baseline net_g.pth, .ckpt or BasicSR .pth) — "
                        "or run stage=both to train the baseline first")
    module = SRModule(net=plain(cfg.model), degradation=plain(degradation), stage=stage, lr=scfg.lr,
                      betas=list(scfg.betas), weight_decay=scfg.weight_decay, scheduler_period=scfg.scheduler_period,
                      eta_min=scfg.eta_min, crop_border=cfg.eval.crop_border, test_y_channel=cfg.eval.y_channel,
                      log_images=cfg.eval.log_images, baseline_ckpt=baseline_ckpt)
    if baseline_ckpt:
        load_weights(module.net, baseline_ckpt, key="ema")
    datamodule = instantiate(cfg.data, _convert_="all", scale=module.scale, iters_per_epoch=scfg.val_every)
    logger = loggers.build_logger(plain(cfg.logger), str(run_dir), f"{job}-{stage}", group, plain(cfg))
    try:
        trainer: pl.Trainer = instantiate(
            cfg.trainer, max_steps=scfg.max_steps, logger=logger if logger is not None else False,
            callbacks=_callbacks(cfg, stage, stage_dir, baseline_ckpt), default_root_dir=str(stage_dir),
            check_val_every_n_epoch=1, num_sanity_val_steps=0)
        last = stage_dir / "checkpoints" / "last.ckpt"
        resume = str(last) if cfg.resume and last.is_file() else None
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume)
        summary = {
            "stage": stage,
            "start_step": module.start_step,
            "global_step": trainer.global_step,
            "monitor": scfg.monitor,
            "best_score": _item(trainer.checkpoint_callback.best_model_score),
            "best_ckpt": trainer.checkpoint_callback.best_model_path,
            "final_metrics": {k: _item(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
            "net_g": str(stage_dir / "net_g.pth"),
            "last_ckpt": str(last),
        }
        if trainer.is_global_zero:
            export_basicsr(last, stage_dir / "net_g.pth")
            atomic_write_text(stage_dir / "summary.json", json.dumps(summary, indent=2))
        trainer.strategy.barrier()
        return summary
    finally:
        loggers.finish(logger)


def _item(v: Any) -> float | None:
    return float(v) if isinstance(v, torch.Tensor | float | int) else None


def train(cfg: DictConfig) -> float | None:
    """Run the configured stages; return the last stage's best monitored metric (for sweepers)."""
    stages = list(cfg.stage.stages)
    if not stages or any(s not in STAGES for s in stages):
        raise FaigError(f"stage.stages must list stages among {STAGES}, got {stages} — use stage=baseline|target|both")
    pl.seed_everything(cfg.seed, workers=True)
    run_dir, job, group = _run_names()
    baseline_ckpt = cfg.baseline_ckpt
    summary: dict[str, Any] = {}
    for stage in stages:
        summary = run_stage(cfg, stage, run_dir, job, group, baseline_ckpt)
        if stage == "baseline":
            baseline_ckpt = summary["last_ckpt"]
    return summary.get("best_score")


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Console script ``faig-train``; bad input ends with one clear message."""
    with exit_on_user_error("faig-train"):
        return train(cfg)


if __name__ == "__main__":
    main()
