"""Checkpoint I/O: BasicSR ``.pth`` files and our Lightning ``.ckpt`` files, in both directions.

- BasicSR files hold ``params_ema`` and/or ``params`` (or are a bare state dict); keys may carry ``module.``.
- Our Lightning checkpoints hold the EMA weights in ``state_dict`` (the EMA callback, a Lightning
  ``WeightAveraging``, moves the raw weights to ``current_model_state``); the network lives under the ``net.`` prefix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from faig_lightning.atomic import atomic_write
from faig_lightning.errors import FaigError
from faig_lightning.run_folder import RunFolder

NET_PREFIX = "net."


def _read(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        stage = RunFolder("<run>").stage("<stage>")
        raise FaigError(f"checkpoint not found: {p} — check the path (a run writes {stage.net_g} and "
                        f"{stage.last_ckpt})")
    if p.stat().st_size == 0:
        raise FaigError(f"checkpoint {p} is empty (0 bytes; an interrupted save?) — re-export or re-download it")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types for files that are not (whole) checkpoints
        first = next(iter(str(exc).splitlines()), "")[:200]
        raise FaigError(f"checkpoint {p} is corrupt, truncated or not a PyTorch file ({type(exc).__name__}"
                        f"{': ' + first if first else ''}) — re-export or re-download it") from exc
    if not isinstance(obj, Mapping):
        raise FaigError(f"checkpoint {p} holds a {type(obj).__name__}, not a state dict — save weights with "
                        f"torch.save({{'params_ema': net.state_dict()}}, path)")
    return dict(obj)


def _strip(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def _tensors_only(state: Mapping, path: str | os.PathLike) -> dict[str, torch.Tensor]:
    out = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not out:
        raise FaigError(f"checkpoint {path} contains no weight tensors — is it a network checkpoint?")
    return out


def read_lightning_checkpoint(path: str | os.PathLike) -> dict:
    """One of our Lightning ``.ckpt`` files (``state_dict``, ``global_step``, …), read with ``weights_only=True``."""
    obj = _read(path)
    if not isinstance(obj.get("state_dict"), Mapping):
        raise FaigError(f"{path} is not a Lightning checkpoint (no state_dict) — pass a .ckpt written by faig-train")
    return obj


def read_state_dict(path: str | os.PathLike, key: str = "ema") -> dict[str, torch.Tensor]:
    """Network weights from a BasicSR ``.pth`` or a Lightning ``.ckpt`` of ours.

    ``key="ema"`` prefers the EMA weights (``params_ema``; our ``state_dict``), ``key="raw"`` the raw ones
    (``params``; our ``current_model_state``). Falls back to what exists.
    """
    if key not in ("ema", "raw"):
        raise ValueError(f"key must be 'ema' or 'raw', got {key!r}")
    obj = _read(path)
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):  # Lightning checkpoint
        state = obj["state_dict"]
        if key == "raw" and isinstance(obj.get("current_model_state"), Mapping):
            state = obj["current_model_state"]
        state = {k[len(NET_PREFIX):]: v for k, v in state.items() if k.startswith(NET_PREFIX)} or dict(state)
    else:
        order = ("params_ema", "params") if key == "ema" else ("params", "params_ema")
        state = next((obj[k] for k in order if isinstance(obj.get(k), Mapping)), obj)
    return _strip(_tensors_only(state, path), "module.")


def check_compatible(net: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise one FaigError listing missing/unexpected keys and shape mismatches between ``net`` and ``state``."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if not (missing or unexpected or shapes):
        return

    def _few(items: list[str]) -> str:
        return ", ".join(items[:6]) + (f" … (+{len(items) - 6} more)" if len(items) > 6 else "")

    parts = []
    if missing:
        parts.append(f"missing keys: {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_few(unexpected)}")
    if shapes:
        parts.append(f"shape mismatches: {_few(shapes)}")
    raise FaigError(f"{source} does not match the {type(net).__name__} architecture — " + "; ".join(parts)
                    + ". Pick the matching model (e.g. model=srresnet / model=srcnn_style), its size "
                    "(num_feat, num_block, cfg) and scale")


def check_finite(state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise a FaigError naming the first tensor holding NaN or Inf."""
    for k, v in state.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise FaigError(f"{source} has NaN/Inf values in {k} — the training diverged; use an earlier checkpoint")


def load_weights(net: nn.Module, path: str | os.PathLike, key: str = "ema") -> nn.Module:
    """Load a BasicSR ``.pth`` or our ``.ckpt`` into ``net`` after checking architecture and finiteness."""
    state = read_state_dict(path, key)
    check_compatible(net, state, f"checkpoint {path}")
    check_finite(state, f"checkpoint {path}")
    net.load_state_dict(state)
    return net


def save_basicsr(path: str | os.PathLike, params: Mapping[str, torch.Tensor],
                 params_ema: Mapping[str, torch.Tensor] | None = None) -> Path:
    """Write a BasicSR-format file ``{'params': ..., 'params_ema': ...}`` atomically; the same weights give the same
    bytes (saved through a file object, the archive is not named after the temporary file)."""
    payload = {"params": {k: v.detach().cpu() for k, v in params.items()}}
    payload["params_ema"] = {k: v.detach().cpu() for k, v in (params_ema or params).items()}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)

    return atomic_write(path, write)


def export_basicsr(ckpt_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Convert one of our Lightning checkpoints into a BasicSR ``net_g.pth`` (raw ``params`` + ``params_ema``)."""
    return save_basicsr(out_path, read_state_dict(ckpt_path, "raw"), read_state_dict(ckpt_path, "ema"))


def load_run_pair(run_dir: str | os.PathLike) -> tuple[nn.Module, nn.Module, int]:
    """The baseline and target nets (EMA weights, eval mode) and the scale of a finished run of ``faig-train`` or
    ``faig-attribute``, from the model spec and checkpoints its results summary records."""
    from faig_lightning.nets import build_net

    folder = RunFolder(run_dir)
    provenance = folder.read_results_summary(option="run_dir").get("provenance", {})
    if not {"model", "scale", "baseline_ckpt", "target_ckpt"} <= set(provenance):
        raise FaigError(f"{folder.results_summary} does not record the model and checkpoints; rerun that run's "
                        "attribution")
    nets = [load_weights(build_net(provenance["model"]), provenance[key]).eval()
            for key in ("baseline_ckpt", "target_ckpt")]
    return nets[0], nets[1], int(provenance["scale"])
