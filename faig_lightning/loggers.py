"""Experiment loggers: W&B (offline automatically when it cannot log in), CSV, or none."""

from __future__ import annotations

import logging
import netrc
import os
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

from faig_lightning.config import flat
from faig_lightning.errors import FaigError

WANDB_MODES = ("online", "offline", "disabled")
LOGGER_KINDS = ("wandb", "csv", "none")

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
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
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
    """Validate a logger config (kind, W&B mode) without starting anything."""
    kind = (cfg or {}).get("kind", "none")
    if kind not in LOGGER_KINDS:
        raise FaigError(f"unknown logger kind {kind!r} — use logger=wandb, logger=csv or logger=none")
    if kind == "wandb":
        requested_wandb_mode(cfg.get("mode"))


def build_logger(cfg: Mapping[str, Any] | None, save_dir: str, name: str, group: str,
                 config: Mapping[str, Any], stage_dir: str | None = None) -> Logger | None:
    """Build the logger named by ``cfg.kind`` (``wandb``, ``csv`` or ``none``).

    CSV metrics go to ``<stage_dir>/metrics.csv`` (``<save_dir>/csv/metrics.csv`` without a stage), so stages
    never overwrite each other. W&B gets the whole config as flat keys (``degradation.blur.sigma``) so runs can be
    grouped and filtered by any setting.
    """
    check_logger(cfg)
    kind = (cfg or {}).get("kind", "none")
    if kind == "none":
        return None
    if kind == "csv":
        return CSVLogger(save_dir=stage_dir or save_dir, name="" if stage_dir else "csv", version="")
    mode = resolve_wandb_mode(cfg.get("mode"))
    os.environ.setdefault("WANDB_SILENT", "true")
    return WandbLogger(project=cfg.get("project", "faig-lightning"), entity=cfg.get("entity"), name=name,
                       group=group, save_dir=save_dir, mode=mode, config=flat(dict(config)),
                       tags=list(cfg.get("tags") or []), job_type=name.rsplit("-", 1)[-1])


def finish(logger: Logger | None) -> None:
    """Close the W&B run so that the next job (multirun, next stage) starts its own run."""
    if isinstance(logger, WandbLogger):
        import wandb

        wandb.finish()
