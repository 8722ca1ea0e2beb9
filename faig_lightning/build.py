"""The pieces of a ``faig-train`` stage, built from its typed config: the stage's settings, the module's
arguments, the data module, the trainer and its callbacks; each refuses, in one line, config keys it would ignore.
"""

from __future__ import annotations

import dataclasses
import inspect
import io
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from lightning_fabric.plugins import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from faig_lightning.atomic import atomic_path
from faig_lightning.callbacks import ForeachEMA
from faig_lightning.config import plain
from faig_lightning.data.device_crops import DeviceCrops
from faig_lightning.errors import FaigError
from faig_lightning.module import SRModule
from faig_lightning.run_folder import BEST_CKPT_PREFIX, StageFolder
from faig_lightning.schemas import EvalConfig, RetrainConfig, StageConfig

log = logging.getLogger(__name__)

TRAINER_KEYS_SET_HERE = {
    "max_steps": "set it per stage: baseline.max_steps=N / target.max_steps=N",
    "max_epochs": "training length is per stage: baseline.max_steps=N / target.max_steps=N",
    "check_val_every_n_epoch": "validation runs every <stage>.val_every steps: baseline.val_every / target.val_every",
    "val_check_interval": "validation runs every <stage>.val_every steps: baseline.val_every / target.val_every",
    "logger": "choose the logger with logger=wandb|csv|none",
    "callbacks": "faig-train sets the callbacks (EMA, checkpoints, attribution); attribution=none turns FAIG off",
    "default_root_dir": "the run folder is hydra.run.dir",
    "num_sanity_val_steps": "faig-train validates only after training steps",
}
"""Trainer arguments ``build_trainer`` sets itself, with what to set instead."""

DATA_KEYS_SET_HERE = {
    "scale": "the scale is the top-level scale=N",
    "iters_per_epoch": "an epoch is <stage>.val_every steps: set baseline.val_every / target.val_every",
    "seed": "the crops follow the run's seed: set the top-level seed=N",
    "on_device": "crops are cut on the training device with the top-level fast=true",
}
"""Data-module arguments ``build_datamodule`` sets itself, with what to set instead."""


def _keys(schema: type) -> list[str]:
    return [f.name for f in dataclasses.fields(schema)]


def check_trainer(trainer_cfg: dict[str, Any]) -> None:
    """Refuse Trainer arguments that faig-train sets itself or that Trainer lacks, and devices this machine lacks."""
    for key, fix in TRAINER_KEYS_SET_HERE.items():
        if key in trainer_cfg:
            raise FaigError(f"trainer.{key} would be ignored: {fix}")
    if trainer_cfg.get("_target_") == "pytorch_lightning.Trainer":
        known = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
        unknown = sorted(set(trainer_cfg) - known - {"_target_"})
        if unknown:
            raise FaigError(f"unknown Trainer argument(s) {unknown}: check the spelling (pytorch_lightning.Trainer)")
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda"):
        if not torch.cuda.is_available():
            raise FaigError(f"trainer.accelerator={accelerator} (trainer=gpu, also set by experiment=paper_*) but no "
                            "CUDA GPU is visible; add trainer=cpu to train on the CPU")
        devices = trainer_cfg.get("devices", 1)
        if isinstance(devices, int) and devices > torch.cuda.device_count():
            raise FaigError(f"trainer.devices={devices} but this machine has {torch.cuda.device_count()} CUDA GPU(s); "
                            f"use trainer.devices={torch.cuda.device_count()}")
    elif accelerator == "mps" and not torch.backends.mps.is_available():
        raise FaigError("trainer.accelerator=mps but MPS is not available; use trainer=cpu")


def check_data(data_cfg: DictConfig) -> None:
    """Refuse data-module arguments that faig-train sets itself."""
    for key, fix in DATA_KEYS_SET_HERE.items():
        if key in data_cfg:
            raise FaigError(f"data.{key} would be ignored: {fix}")


def eval_config(cfg: DictConfig) -> EvalConfig:
    """The typed ``eval`` section; keys it lacks (added with ``+eval.<key>``) refused."""
    unknown = sorted(set(cfg.eval) - set(_keys(EvalConfig)))
    if unknown:
        raise FaigError(f"unknown key(s) {unknown} in eval: would be ignored; valid keys are {_keys(EvalConfig)} (the "
                        "eval set itself is data.eval.*)")
    return OmegaConf.to_object(cfg.eval)


def stage_config(cfg: DictConfig, stage: str) -> StageConfig:
    """The typed settings of ``stage`` (a ``RetrainConfig`` for ``retrain``), with unknown keys and bad values
    refused; ``freeze`` as a list."""
    valid = _keys(RetrainConfig if stage == "retrain" else StageConfig)
    unknown = sorted(set(cfg[stage]) - set(valid))
    if unknown:
        raise FaigError(f"unknown key(s) {unknown} in {stage}: would be ignored; valid keys are {valid}")
    scfg = OmegaConf.to_object(cfg[stage])
    for key in ("max_steps", "val_every", "scheduler_period"):
        if getattr(scfg, key) < 1:
            raise FaigError(f"{stage}.{key} must be a positive integer, got {getattr(scfg, key)!r}")
    for key in ("lr", "eta_min", "weight_decay"):
        value = getattr(scfg, key)
        if value < 0 or (key == "lr" and value == 0):
            raise FaigError(f"{stage}.{key} must be a number {'> 0' if key == 'lr' else '>= 0'}, got {value!r}")
    freeze = scfg.freeze or []
    scfg.freeze = [freeze] if isinstance(freeze, str) else freeze
    if not isinstance(scfg.freeze, list) or not all(isinstance(f, str) and f for f in scfg.freeze):
        raise FaigError(f"{stage}.freeze must list module or parameter names, e.g. [conv_first,conv_last]; "
                        f"got {freeze!r}")
    if not 0 <= scfg.ema_decay < 1:
        raise FaigError(f"{stage}.ema_decay must lie in [0, 1), got {scfg.ema_decay!r}; the paper uses 0.999")
    return scfg


def module_kwargs(cfg: DictConfig, stage: str, scfg: StageConfig, evalc: EvalConfig, baseline_ckpt: str | None,
                  seed: int) -> dict[str, Any]:
    """``SRModule``'s arguments for ``stage``: plain values, so that its checkpoints load with
    ``weights_only=True``; ``seed`` is the stage's own."""
    degradation = cfg.baseline_degradation if stage == "baseline" else cfg.degradation
    return {"net": plain(cfg.model), "degradation": plain(degradation), "stage": stage, "lr": scfg.lr,
            "betas": list(scfg.betas), "weight_decay": scfg.weight_decay, "scheduler_period": scfg.scheduler_period,
            "eta_min": scfg.eta_min, "crop_border": evalc.crop_border, "test_y_channel": evalc.y_channel,
            "log_images": evalc.log_images, "baseline_ckpt": baseline_ckpt, "seed": seed, "freeze": scfg.freeze,
            "compile": cfg.compile, "sync_free": cfg.fast}


def build_datamodule(cfg: DictConfig, module: SRModule, scfg: StageConfig) -> pl.LightningDataModule:
    """The stage's data, prepared and set up for fitting: crops for ``module``'s scale and degradation margin,
    drawn from the stage's seed; an epoch is one validation period. With ``fast`` on a GPU, the training images
    are checked to fit in its memory."""
    datamodule = instantiate(cfg.data, _convert_="all", scale=module.scale, iters_per_epoch=scfg.val_every,
                             seed=module.hparams.seed, margin=module.degrade.margin, on_device=cfg.fast)
    datamodule.prepare_data()
    datamodule.setup("fit")
    if cfg.fast and torch.cuda.is_available() and cfg.trainer.get("accelerator", "auto") in ("auto", "gpu", "cuda"):
        DeviceCrops(datamodule.train_set).check_fits("cuda")  # the image store on the GPU, before training
    return datamodule


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file that is renamed onto the checkpoint's name: a save cut
    short (full disk, killed process) never leaves a truncated file under a name a rerun would trust."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getbuffer())


class CheckpointOnSignal(Callback):
    """Save ``last.ckpt`` when SIGTERM (SLURM's time limit or preemption) or SIGINT stop training: Lightning then
    raises ``SIGTERMException`` after the current step and calls ``on_exception`` (``faig_lightning.cli`` passes
    Ctrl-C to Lightning as SIGTERM)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            trainer.save_checkpoint(self.path)
            log.info("stopped at step %d: saved %s", trainer.global_step, self.path)


def training_callbacks(scfg: StageConfig, folder: StageFolder, on_device: bool,
                       attribution: Callback | None) -> list[Callback]:
    """The EMA of the weights, the best and the last checkpoint, the checkpoint on SIGTERM and, after the EMA (its
    weights are in place when it runs), the ``attribution`` callback when there is one."""
    callbacks: list[Callback] = [
        ForeachEMA(decay=scfg.ema_decay, on_device=on_device),
        ModelCheckpoint(dirpath=folder.checkpoints, filename=f"{BEST_CKPT_PREFIX}{{step}}", monitor=scfg.monitor,
                        mode="max", save_top_k=1, auto_insert_metric_name=False),
        # the latest state after every validation, whether or not it is the best: what a restart resumes from
        ModelCheckpoint(dirpath=folder.checkpoints, filename=folder.last_ckpt.stem, monitor=None, save_top_k=1,
                        enable_version_counter=False),
        CheckpointOnSignal(folder.last_ckpt),
    ]
    if attribution is not None:
        callbacks.append(attribution)
    return callbacks


def build_trainer(cfg: DictConfig, scfg: StageConfig, folder: StageFolder, logger: Any,
                  callbacks: list[Callback]) -> pl.Trainer:
    """The configured Trainer with what faig-train sets itself: the stage's length, one validation per epoch (an
    epoch is ``val_every`` steps), no sanity validation, atomic checkpoint writes."""
    return instantiate(cfg.trainer, max_steps=scfg.max_steps, logger=logger if logger is not None else False,
                       callbacks=callbacks, default_root_dir=str(folder.path), check_val_every_n_epoch=1,
                       num_sanity_val_steps=0, plugins=[AtomicCheckpointIO()])
