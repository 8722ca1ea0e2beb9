"""``faig-train``: Hydra entry point that trains the baseline, the target, or both, in one run folder.

Everything a run needs is built and checked before the first training step (``prepare``): every stage's
degradation pipeline, model, checkpoint to start or resume from, data, eval set, trainer, logger and the
attribution settings. A run restarted in its folder finishes what it lacks: it resumes training cut short,
recomputes the final metrics of a stage already at ``max_steps``, and runs the attribution when its results
are missing, incomplete or were computed on other weights or settings.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig
from pytorch_lightning.utilities.exceptions import SIGTERMException

from faig_lightning import loggers
from faig_lightning.atomic import atomic_write_text
from faig_lightning.attribution.filters import FilterIndex
from faig_lightning.attribution.settings import AttributionSettings
from faig_lightning.build import (
    build_datamodule,
    build_trainer,
    check_data,
    check_trainer,
    eval_config,
    module_kwargs,
    stage_config,
    training_callbacks,
)
from faig_lightning.callbacks import AttributionCallback
from faig_lightning.checkpoints import check_compatible, export_basicsr, load_weights, read_lightning_checkpoint
from faig_lightning.cli import Interrupted, is_rank_zero, main_with_exit_code, received_signal, run_job, run_names
from faig_lightning.config import plain
from faig_lightning.data.eval_set import PairedEvalSet
from faig_lightning.data.images import image_size
from faig_lightning.errors import FaigError
from faig_lightning.module import STAGES, SRModule
from faig_lightning.nets.build import build_net, check_model
from faig_lightning.retrain import RetrainPlan, resolve_retrain, retrain_markdown
from faig_lightning.run_folder import LAST_CKPT_FILE, NET_G_FILE, RunFolder, StageFolder
from faig_lightning.schemas import CONF_DIR, StageConfig
from faig_lightning.seeding import check_seed, derive_seed

log = logging.getLogger(__name__)


@dataclass
class StagePlan:
    """One stage, built and checked: its settings, module, data, and where it resumes from (None = a fresh
    start)."""

    stage: str
    settings: StageConfig
    module_kwargs: dict[str, Any]
    datamodule: pl.LightningDataModule
    folder: StageFolder
    resume_step: int | None
    retrain: RetrainPlan | None = None


def _resume_step(module: SRModule, last: Path, seed: int) -> int:
    """The step of ``last.ckpt`` after checking it loads into ``module`` and was trained with the run's ``seed``;
    one line suggesting resume=false if not."""
    try:
        ckpt = read_lightning_checkpoint(last)
    except FaigError:
        raise FaigError(f"cannot resume: {last} is empty, truncated or corrupt (an interrupted save?); add "
                        "resume=false to start this stage afresh") from None
    try:
        check_compatible(module, ckpt["state_dict"], f"{last}")
    except FaigError as err:
        raise FaigError(f"cannot resume: {err} — or add resume=false to start this stage afresh") from None
    if ckpt.get("hyper_parameters", {}).get("seed") != module.hparams.seed:
        raise FaigError(f"cannot resume: {last} was trained with another seed than seed={seed}; rerun with that "
                        "run's seed, or add resume=false to start this stage afresh")
    return int(ckpt.get("global_step", 0))


def _check_crop_border(border: int, eval_set: PairedEvalSet) -> None:
    """The border cut from each side before PSNR / SSIM must leave pixels of every eval image."""
    for name, path in zip(eval_set.names, eval_set.gt_paths, strict=True):
        h, w = (n - n % eval_set.scale for n in image_size(path))
        if 2 * border >= min(h, w):
            raise FaigError(f"eval.crop_border={border} cuts all of eval image '{name}' ({h}x{w}): the border is cut "
                            f"from each side — use eval.crop_border={eval_set.scale} (the paper's) or below "
                            f"{(min(h, w) + 1) // 2}")


def _check_processes(trainer_cfg: dict[str, Any], num_images: int) -> None:
    """The attribution after the target stage gives every DDP process at least one eval image."""
    devices = trainer_cfg.get("devices", 1)
    per_node = len(devices) if isinstance(devices, list) else devices if isinstance(devices, int) else 1
    processes = per_node * int(trainer_cfg.get("num_nodes", 1))
    if processes > num_images:
        raise FaigError(f"{processes} training processes (trainer.devices={devices}) but the eval set has "
                        f"{num_images} image(s): the attribution gives each process at least one — use "
                        f"trainer.devices={num_images} or more eval images (data.eval.photos / data.eval.gt_dir)")


def _monitor_names(eval_names: list[str]) -> list[str]:
    return ["val/psnr/mean", *(f"val/{m}/{d}" for d in eval_names for m in ("psnr", "ssim"))]


def prepare(cfg: DictConfig, run: RunFolder) -> tuple[list[StagePlan], AttributionSettings | None]:
    """Build and check everything the run needs, before any training step; raise one FaigError if anything is off."""
    seed = check_seed(cfg.seed)
    stages = list(cfg.stage.stages)
    if not stages or any(s not in STAGES for s in stages):
        raise FaigError(f"stage.stages must list stages among {STAGES}, got {stages} — use stage=baseline|target|both")
    check_trainer(plain(cfg.trainer))
    check_data(cfg.data)
    evalc = eval_config(cfg)
    loggers.check_logger(plain(cfg.logger))
    settings = None
    if "target" in stages and cfg.attribution.enabled:
        settings = AttributionSettings.from_mapping(plain(cfg.attribution))
        if settings.rankings_from is not None:
            raise FaigError("attribution.rankings_from is for faig-attribute (reusing a finished run's rankings); "
                            "faig-train ranks the target it trains — remove it")
    if "target" in stages and "baseline" not in stages and not cfg.baseline_ckpt:
        raise FaigError(f"stage=target needs baseline_ckpt=PATH (a baseline {NET_G_FILE}, .ckpt or BasicSR .pth) — "
                        "or run stage=both to train the baseline first")
    if "retrain" in stages and stages != ["retrain"]:
        raise FaigError(f"stage.stages={stages}: retrain runs on its own (stage=retrain retrain.from_run=RUN), "
                        "after the run whose filters it re-trains has finished")
    plans: list[StagePlan] = []
    for stage in stages:
        scfg = stage_config(cfg, stage)
        baseline_ckpt, retrain = None, None
        if stage == "target":
            baseline_ckpt = str(run.stage("baseline").last_ckpt) if plans else cfg.baseline_ckpt
        elif stage == "retrain":
            retrain = resolve_retrain(scfg, cfg.baseline_ckpt)
            baseline_ckpt = retrain.baseline_ckpt
        kwargs = module_kwargs(cfg, stage, scfg, evalc, baseline_ckpt, derive_seed(seed, stage))
        if retrain is not None:
            with torch.random.fork_rng():
                index = FilterIndex.from_model(build_net(plain(cfg.model)), retrain.extra_units)
            kwargs["train_filters"] = retrain.filters(index)
            kwargs["extra_units"] = list(retrain.extra_units)
        with torch.random.fork_rng():  # a throw-away module for the checks: the run's RNG stream stays untouched
            module = SRModule(**kwargs)
        check_model(module.net, cfg.scale)
        if stage in ("target", "retrain") and not plans:
            load_weights(module.net, baseline_ckpt, key="ema")
        if retrain is not None and retrain.target_ckpt:
            load_weights(copy.deepcopy(module.net), retrain.target_ckpt, key="ema")
        if settings is not None and stage == "target":
            settings.check_filters(len(settings.index(module.net)))
        folder = run.stage(stage)
        if is_rank_zero():
            _adopt_hpc_checkpoint(folder, keep=cfg.resume)
        resume = cfg.resume and folder.last_ckpt.is_file()
        resume_step = _resume_step(module, folder.last_ckpt, seed) if resume else None
        datamodule = build_datamodule(cfg, module, scfg)
        eval_names = datamodule.eval_set.degradation_names
        if scfg.monitor not in _monitor_names(eval_names):
            raise FaigError(f"{stage}.monitor={scfg.monitor} is not a validation metric; use one of "
                            f"{_monitor_names(eval_names)}")
        if settings is not None and stage == "target":
            settings.check_inputs(eval_names)
            _check_processes(plain(cfg.trainer), len(datamodule.eval_set))
        _check_crop_border(module.crop_border, datamodule.eval_set)
        plans.append(StagePlan(stage, scfg, kwargs, datamodule, folder, resume_step, retrain))
    return plans, settings


def _adopt_hpc_checkpoint(folder: StageFolder, keep: bool) -> None:
    """Lightning's SLURM auto-requeue leaves ``<stage>/hpc_ckpt_<n>.ckpt`` (saved at SIGUSR1): the newest of these
    becomes ``last.ckpt`` when it is further on (``keep``), and all are removed, so that every restart resumes
    from ``last.ckpt`` alone (Lightning would otherwise prefer them under SLURM when no checkpoint is given)."""
    hpc, last = folder.hpc_ckpts(), folder.last_ckpt
    if keep and hpc:
        newest = read_lightning_checkpoint(hpc[-1]).get("global_step", 0)
        if newest > _step_or(last, default=-1):
            last.parent.mkdir(parents=True, exist_ok=True)
            os.replace(hpc.pop(), last)
            log.info("resuming from Lightning's SLURM checkpoint (step %d), now %s", newest, last)
    for path in hpc:
        path.unlink()


def _step_or(path: Path, default: int) -> int:
    """The ``global_step`` of a checkpoint; ``default`` when it is missing or unreadable."""
    try:
        return int(read_lightning_checkpoint(path).get("global_step", 0)) if path.is_file() else default
    except FaigError:
        return default


@contextmanager
def _slurm_requeue(trainer: pl.Trainer) -> Iterator[None]:
    """Under SLURM with auto-requeue (Lightning's default there), SIGUSR1 is Lightning's while it trains: it saves
    ``hpc_ckpt_<n>.ckpt`` and requeues the job (``scontrol requeue``); SLURM then ends the job with SIGTERM, which
    stops training with ``last.ckpt`` saved and status ``interrupted``. Elsewhere SIGUSR1 stops like SIGTERM."""
    env = trainer._accelerator_connector.cluster_environment  # what Lightning's signal handling reads
    if not (isinstance(env, SLURMEnvironment) and env.auto_requeue and env.requeue_signal is not None):
        yield
        return
    ours = signal.signal(env.requeue_signal, signal.SIG_DFL)  # Lightning installs its handler only over the default
    try:
        yield
    finally:
        signal.signal(env.requeue_signal, ours)


def _start_afresh(plan: StagePlan, run: RunFolder) -> None:
    """``resume=false`` over an earlier run: its checkpoints (and, for the target, its attribution) are stale."""
    shutil.rmtree(plan.folder.checkpoints, ignore_errors=True)
    if plan.stage == "target":
        run.results_summary.unlink(missing_ok=True)


def _stop_if_signalled(trainer: pl.Trainer, stage: str, saved: bool) -> None:
    """Raise ``Interrupted`` when a SIGTERM / SIGINT reached the trainer (it stopped, or it came after the last
    step)."""
    if trainer.received_sigterm:
        saved_note = f" with {LAST_CKPT_FILE} saved" if saved else ""
        where = f"the {stage} stage stopped at step {trainer.global_step}{saved_note}"
        raise Interrupted(received_signal() or signal.SIGTERM, where)


def run_stage(cfg: DictConfig, plan: StagePlan, run: RunFolder, job: str, group: str, baseline_ckpt: str | None,
              settings: AttributionSettings | None) -> dict[str, Any]:
    """Fit one stage in ``<run>/<stage>`` (or finish what it lacks); export ``net_g.pth``; return its summary."""
    stage, scfg, folder, last = plan.stage, plan.settings, plan.folder, plan.folder.last_ckpt
    pl.seed_everything(plan.module_kwargs["seed"], workers=True, verbose=False)  # the net's initialisation
    module = SRModule(**plan.module_kwargs)
    if plan.resume_step is None and folder.checkpoints.exists():
        _start_afresh(plan, run)
    if baseline_ckpt:
        load_weights(module.net, baseline_ckpt, key="ema")
    attribution = None
    if settings is not None and stage == "target":
        attribution = AttributionCallback(settings, baseline_ckpt, str(run.path),
                                          provenance={"baseline_ckpt": str(Path(baseline_ckpt).resolve()),
                                                      "target_ckpt": str(last.resolve()),
                                                      "model": plain(cfg.model), "scale": cfg.scale})
    logger = loggers.build_logger(plain(cfg.logger), str(run.path), f"{job}-{stage}",
                                  loggers.wandb_group(group, baseline_ckpt),
                                  loggers.run_config(plain(cfg), stage, plan.module_kwargs["seed"], baseline_ckpt),
                                  stage_dir=str(folder.path), tags=loggers.run_tags(stage, plain(cfg.model)))
    try:
        done = plan.resume_step is not None and plan.resume_step >= scfg.max_steps
        if not done:
            trainer = build_trainer(cfg, scfg, folder, logger, training_callbacks(scfg, folder, cfg.fast, attribution))
            resume = str(last) if plan.resume_step is not None else None
            try:
                with _slurm_requeue(trainer):
                    trainer.fit(module, datamodule=plan.datamodule, ckpt_path=resume)
            except SIGTERMException:
                _stop_if_signalled(trainer, stage, saved=True)
                raise
            _stop_if_signalled(trainer, stage, saved=False)
            if trainer.global_step < scfg.max_steps or trainer.interrupted:
                raise FaigError(f"the {stage} stage stopped at step {trainer.global_step} of {scfg.max_steps}; "
                                f"rerun the same command to resume from {LAST_CKPT_FILE}")
            best = trainer.checkpoint_callback.best_model_path
            best_score = _item(trainer.checkpoint_callback.best_model_score)
        else:
            log.info("%s: %s is at step %d (max_steps %d): training is done; recomputing its final metrics",
                     stage, LAST_CKPT_FILE, plan.resume_step, scfg.max_steps)
            load_weights(module.net, last, key="ema")
            module.start_step = plan.resume_step
            trainer = build_trainer(cfg, scfg, folder, logger, [])
            try:
                trainer.validate(module, datamodule=plan.datamodule, verbose=False)
            except SIGTERMException:
                _stop_if_signalled(trainer, stage, saved=False)
                raise
            _stop_if_signalled(trainer, stage, saved=False)
            best = folder.best_ckpt()
            best_score = _item(_read_best_score(best, scfg.monitor))
            if attribution is not None:
                attribution.run(trainer, module)
        final = {k: _item(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        summary = {
            "stage": stage,
            "start_step": module.start_step,
            "global_step": int(plan.resume_step if done else trainer.global_step),
            "fit": "skipped (already at max_steps)" if done else ("resumed" if plan.resume_step is not None else
                                                                    "fresh"),
            "seed": cfg.seed,
            "stage_seed": plan.module_kwargs["seed"],
            "monitor": scfg.monitor,
            "best_score": best_score,
            "best_ckpt": str(Path(best).resolve()) if best else None,
            "final_metrics": final,
            "net_g": str(folder.net_g.resolve()),
            "last_ckpt": str(last.resolve()),
        }
        if plan.retrain is not None:
            ema = load_weights(copy.deepcopy(module.net), last, key="ema")
            summary["retrain"] = plan.retrain.compare(ema, plan.datamodule.eval_set, module.scale)
            log.info("retrain (%d filters of %s): PSNR (dB) and share of the target's gain recovered\n%s",
                     len(plan.module_kwargs["train_filters"]), plan.retrain.source,
                     retrain_markdown(summary["retrain"]))
        if trainer.is_global_zero:
            export_basicsr(last, folder.net_g)
            atomic_write_text(folder.summary, json.dumps(summary, indent=2))
        trainer.strategy.barrier()
        if attribution is not None and not attribution.complete():
            raise FaigError(f"the attribution after the target stage left no complete results in {run.path}; rerun "
                            "the same command to compute them")
        log.info("%s: steps %d -> %d, %s", stage, summary["start_step"], summary["global_step"],
                 ", ".join(f"{k} {v:.3f}" for k, v in final.items() if v is not None))
        return summary
    finally:
        loggers.finish(logger)


def _read_best_score(best: Path | None, monitor: str) -> Any:
    if best is None:
        return None
    for cb in read_lightning_checkpoint(best).get("callbacks", {}).values():
        if isinstance(cb, dict) and cb.get("monitor") == monitor:
            return cb.get("best_model_score")
    return None


def _item(v: Any) -> float | None:
    return float(v) if isinstance(v, torch.Tensor | float | int) else None


def train(cfg: DictConfig, run_dir: Path, job: str, group: str) -> float | None:
    """Check everything, then run the configured stages; return the last stage's best monitored metric."""
    run = RunFolder(run_dir)
    plans, settings = prepare(cfg, run)
    baseline_ckpt = plans[0].module_kwargs["baseline_ckpt"] if plans[0].stage == "retrain" else cfg.baseline_ckpt
    summary: dict[str, Any] = {}
    for plan in plans:
        summary = run_stage(cfg, plan, run, job, group, baseline_ckpt, settings)
        if plan.stage == "baseline":
            baseline_ckpt = summary["last_ckpt"]
    return summary.get("best_score")


@hydra.main(config_path=CONF_DIR, config_name="train", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> float | None:
    run_dir, job, group, multirun = run_names()
    return run_job("faig-train", run_dir, multirun, lambda: train(cfg, run_dir, job, group))


def main() -> None:
    """Console script ``faig-train``; bad input ends with one line and exit code 2."""
    main_with_exit_code("faig-train", _hydra_main)


if __name__ == "__main__":  # python -m: call the importable module's main, which submitit can pickle by reference
    from faig_lightning import train

    train.main()
