"""Helpers between Hydra configs and plain Python: the config folder, plain containers, engine settings."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from faig_lightning.errors import FaigError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
"""The repository's ``conf/`` folder (the package is installed in editable mode)."""

ENGINE_KEYS = ("methods", "degradations", "rule", "steps", "tol", "proportions", "seed", "ig_variant", "channel",
               "max_batch", "device")
"""Keys of an ``attribution`` config node that are keyword arguments of ``run_attribution``."""


def plain(cfg: Any) -> Any:
    """A resolved plain ``dict``/``list`` for OmegaConf containers; anything else unchanged."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig | ListConfig) else cfg


def engine_settings(attribution: DictConfig | dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``run_attribution`` from an ``attribution`` config node."""
    node = plain(attribution)
    return {k: node[k] for k in ENGINE_KEYS if k in node}


def user_error(exc: BaseException) -> FaigError | None:
    """The FaigError behind ``exc`` (Hydra's ``instantiate`` wraps the errors of the objects it builds), if any."""
    while exc is not None:
        if isinstance(exc, FaigError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


@contextmanager
def exit_on_user_error(prog: str) -> Iterator[None]:
    """Turn a user error (a FaigError, possibly wrapped by Hydra) into one line ``<prog>: error: …`` and exit 1."""
    try:
        yield
    except Exception as exc:
        err = user_error(exc)
        if err is None:
            raise
        raise SystemExit(f"{prog}: error: {err}") from None
