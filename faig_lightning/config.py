"""Helpers between Hydra configs and plain Python: plain and flat containers."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf


def plain(cfg: Any) -> Any:
    """A resolved plain ``dict``/``list`` for OmegaConf containers; anything else unchanged."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig | ListConfig) else cfg


def flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values): config keys a dashboard can group and filter by."""
    if not isinstance(tree, dict):
        return {prefix: tree} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(flat(value, name) if isinstance(value, dict) and value else {name: value})
    return out
