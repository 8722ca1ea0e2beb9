"""Networks from their Hydra spec (the project's nets and any importable ``nn.Module``, ``model=custom``) and the
checks of a built net's scale."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from faig_lightning.errors import FaigError


def build_net(spec: Mapping[str, Any]) -> nn.Module:
    """Instantiate ``spec`` (``_target_`` plus keyword arguments); one line naming the problem when it cannot be
    built, e.g. a custom class path that does not import."""
    from hydra.utils import instantiate  # here, so that the attribution engine imports without Hydra

    target = spec.get("_target_")
    if not target or target == "???":
        raise FaigError("model._target_ is not set: model=custom needs model._target_=package.Class (an importable "
                        "nn.Module mapping an LR batch to an SR batch) and +model.<kwarg>=... for its arguments")
    try:
        net = instantiate(dict(spec))
    except Exception as err:  # Hydra wraps import errors and constructor errors alike
        cause = err.__cause__ or err
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise FaigError(f"model._target_={target} could not be built ({first}); check that the class imports from "
                        "PYTHONPATH and that model.* are its constructor's arguments") from None
    if not isinstance(net, nn.Module):
        raise FaigError(f"model._target_={target} built a {type(net).__name__}, not a torch nn.Module")
    return net


def model_scale(net: nn.Module) -> int | None:
    """The net's own SR factor: its ``scale`` or ``upscale`` attribute, None when it has neither."""
    own = getattr(net, "scale", getattr(net, "upscale", None))
    return own if isinstance(own, int) else None


def check_model(net: nn.Module, scale: int) -> None:
    """The net upscales a 1x3x8x8 batch by ``scale``; its own scale (:func:`model_scale`), if any, agrees."""
    own = model_scale(net)
    if own is not None and own != scale:
        raise FaigError(f"the model's scale is {own} but scale={scale}; set model.scale / scale to one value")
    device = next(net.parameters()).device
    training = net.training
    try:
        with torch.no_grad():
            out = net.eval()(torch.zeros(1, 3, 8, 8, device=device))
    except Exception as err:  # the user's forward: name the failure in one line
        raise FaigError(f"the model fails on a 1x3x8x8 LR batch ({type(err).__name__}: {err}); its forward must map "
                        "(N, 3, h, w) to (N, 3, scale*h, scale*w)") from None
    finally:
        net.train(training)
    if tuple(out.shape) != (1, 3, 8 * scale, 8 * scale):
        raise FaigError(f"the model maps a 1x3x8x8 batch to {tuple(out.shape)}, not 1x3x{8 * scale}x{8 * scale}; "
                        f"check model.* and scale={scale}")
