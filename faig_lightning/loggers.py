"""Experiment loggers: W&B (offline automatically when it cannot log in), CSV, or none.

A W&B run's config is one flat dict built by ``run_config`` (what the stage used); the LightningModule and
DataModule save their hyper-parameters without logging them. pytorch_lightning is imported when a logger is
built, so reading a run's W&B record (``faig-summarize``) does not load it. Each run folder records its W&B runs
(``run_folder.wandb_record``), which is how a target run finds its baseline's group.
"""

from __future__ import annotations

import logging
import netrc
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from hydra.core.hydra_config import HydraConfig

from faig_lightning.config import flat
from faig_lightning.errors import FaigError
from faig_lightning.run_folder import RunFolder, wandb_record

if TYPE_CHECKING:
    from pytorch_lightning.loggers import Logger, WandbLogger

WANDB_MODES = ("online", "offline", "disabled")
LOGGER_KINDS = ("wandb", "csv", "none")
STAGE_SECTIONS = ("baseline", "target", "retrain")

log = logging.getLogger(__name__)


def _wandb_host() -> str:
    return urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"


def _has_credentials(host: str) -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether the W&B server (``WANDB_BASE_URL``, its port or the scheme's) accepts a connection."""
    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def requested_wandb_mode(requested: str | None = None) -> str | None:
    """``WANDB_MODE`` (when set and not empty) or ``requested``, checked; None/"auto" means "decide"."""
    if os.environ.get("WANDB_MODE", None) == "":
        del os.environ["WANDB_MODE"]  # set but empty: W&B itself would fail on it; treat it as unset
    mode = os.environ.get("WANDB_MODE") or requested
    if mode in (None, "", "auto"):
        return None
    if mode == "dryrun":
        return "offline"
    if mode not in WANDB_MODES:
        raise FaigError(
            f"unknown W&B mode {mode!r} (from WANDB_MODE or logger.mode) — use one of {WANDB_MODES} or auto"
        )
    return mode


def resolve_wandb_mode(requested: str | None = None) -> str:
    """The W&B mode to use: ``WANDB_MODE`` or ``requested`` when set, else online only with credentials and network.

    Never lets ``wandb`` ask for a login: without credentials or network it returns ``offline`` and says so once.
    """
    mode = requested_wandb_mode(requested)
    if mode is not None:
        return mode
    host = _wandb_host()
    if not _has_credentials(host):
        log.info("W&B: no credentials (WANDB_API_KEY or `wandb login`) — logging offline; `wandb sync` uploads later")
        return "offline"
    if not _reachable(host):
        log.info("W&B: %s unreachable — logging offline; `wandb sync` uploads later", host)
        return "offline"
    return "online"


def check_logger(cfg: Mapping[str, Any] | None) -> None:
    """Validate a logger config (kind, W&B mode) without starting anything; W&B forced online needs credentials
    and a reachable server."""
    kind = (cfg or {}).get("kind", "none")
    if kind not in LOGGER_KINDS:
        raise FaigError(f"unknown logger kind {kind!r} — use logger=wandb, logger=csv or logger=none")
    if kind == "wandb" and requested_wandb_mode(cfg.get("mode")) == "online":
        host = _wandb_host()
        fix = "use logger.mode=offline or WANDB_MODE=offline"
        if not _has_credentials(host):
            raise FaigError(f"W&B mode online but no API key (WANDB_API_KEY or wandb login) — log in, or {fix}")
        if not _reachable(host):
            raise FaigError(f"W&B mode online but {host} unreachable — {fix}")


def run_config(cfg: Mapping[str, Any], stage: str, stage_seed: int, baseline_ckpt: str | None) -> dict[str, Any]:
    """The flat W&B config of one stage of a ``faig-train`` config ``cfg`` (a plain dict): what that stage used.

    ``degradation.*`` is the stage's training degradation (the baseline's is ``baseline_degradation``), ``train.*``
    its own optimisation settings (``<stage>`` section), ``seed`` the user's seed and ``stage_seed`` the one
    derived for the stage, ``baseline_ckpt`` the weights it started from, ``attribution.*`` only on the target
    stage (the one that runs it); ``stage`` names it and ``stages`` lists the run's stages.
    """
    tree = {k: v for k, v in cfg.items() if k not in (*STAGE_SECTIONS, "baseline_degradation", "stage")}
    tree["degradation"] = cfg["baseline_degradation"] if stage == "baseline" else cfg["degradation"]
    tree["train"] = cfg[stage]
    if stage != "target":
        tree.pop("attribution", None)
    tree.update(stage=stage, stages=list(cfg["stage"]["stages"]), seed=cfg["seed"], stage_seed=stage_seed,
                baseline_ckpt=baseline_ckpt)
    return flat(tree)


def run_tags(stage: str, model: Mapping[str, Any]) -> list[str]:
    """W&B tags of a stage: the stage, the model (its Hydra config name, else its class) and the experiment when
    one is chosen (``experiment=...``)."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    tags = [stage, choices.get("model") or str(model.get("_target_", "custom")).rsplit(".", 1)[-1]]
    if choices.get("experiment"):
        tags.append(str(choices["experiment"]))
    return tags


def wandb_group(group: str, baseline_ckpt: str | None) -> str:
    """The W&B group of the run folder holding ``baseline_ckpt`` when it is one with a W&B record, else ``group``:
    a target trained on a named baseline joins the baseline's group."""
    record = wandb_record(baseline_ckpt) if baseline_ckpt else None
    return record["group"] if record else group


def _record(save_dir: str, logger: WandbLogger, mode: str) -> None:
    """Add the logger's W&B run to the W&B record of the run folder ``save_dir`` under its job type."""
    run = logger.experiment
    RunFolder(save_dir).add_wandb_run(
        run.job_type, {"id": run.id, "name": run.name, "path": run.path, "dir": str(Path(run.dir).parent),
                       "mode": mode, "group": run.group, "tags": list(run.tags)},
        group=run.group, project=run.project, entity=run.entity or None)


def build_logger(cfg: Mapping[str, Any] | None, save_dir: str, name: str, group: str, config: Mapping[str, Any],
                 stage_dir: str | None = None, *, tags: Sequence[str] = (), job_type: str | None = None
                 ) -> Logger | None:
    """Build the logger named by ``cfg.kind`` (``wandb``, ``csv`` or ``none``).

    CSV metrics go to ``<stage_dir>/metrics.csv`` (``<save_dir>/csv/metrics.csv`` without a stage), so stages
    never overwrite each other. W&B gets ``config`` as flat keys (``degradation.blur.sigma``) and nothing else, so
    runs can be grouped and filtered by any setting; its tags are ``tags`` then ``cfg.tags``, its job type
    ``job_type`` (default: the part of ``name`` after its last ``-``). The run starts here and is recorded in
    the run folder ``save_dir`` (``run_folder.wandb_record``).
    """
    check_logger(cfg)
    kind = (cfg or {}).get("kind", "none")
    if kind == "none":
        return None
    from pytorch_lightning.loggers import CSVLogger, WandbLogger
    from pytorch_lightning.utilities.rank_zero import rank_zero_only

    if kind == "csv":
        return CSVLogger(save_dir=stage_dir or save_dir, name="" if stage_dir else "csv", version="")
    mode = resolve_wandb_mode(cfg.get("mode"))
    os.environ.setdefault("WANDB_SILENT", "true")
    logger = WandbLogger(
        project=cfg.get("project", "faig-lightning"), entity=cfg.get("entity"), name=name, group=group,
        save_dir=save_dir, mode=mode, config=flat(dict(config)), job_type=job_type or name.rsplit("-", 1)[-1],
        tags=list(dict.fromkeys([*tags, *(cfg.get("tags") or [])])))
    if rank_zero_only.rank == 0 and mode != "disabled":
        _record(save_dir, logger, mode)
    return logger


def finish(logger: Logger | None) -> None:
    """Close the W&B run so that the next job (multirun, next stage) starts its own run."""
    from pytorch_lightning.loggers import WandbLogger

    if isinstance(logger, WandbLogger):
        import wandb

        wandb.finish()
