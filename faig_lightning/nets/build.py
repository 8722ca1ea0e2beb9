"""Networks from their Hydra spec: the project's nets and any importable ``nn.Module`` (``model=custom``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
