"""EMA of the weights with one fused update per step and no host-device synchronisation."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn


class ForeachEMA(WeightAveraging):
    """Exponential moving average of the weights and buffers after every optimiser step — what Lightning's
    ``EMAWeightAveraging`` does with its defaults, to the bit — updated by one ``torch._foreach_lerp_`` over all
    floating-point tensors instead of a Python loop launching kernels per tensor (the loop is launch-bound on GPUs).
    The update never reads a device value on the host: the count of updates is read once per fit, then counted on the
    host.

    The average lives where the module was when training was set up (the CPU, as Lightning moves the module to its
    device later); ``on_device=True`` moves it to the module's training device when training starts, so that the
    update copies nothing between devices.
    """

    def __init__(self, decay: float = 0.999, on_device: bool = False) -> None:
        super().__init__(use_buffers=True, multi_avg_fn=get_ema_multi_avg_fn(decay))
        self.decay = decay
        self.on_device = on_device
        self._pairs: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None
        self._updates = 0

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """After every optimiser step, never at epoch ends."""
        return step_idx is not None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Move the average to the module's device (``on_device``); forget the tensors of an earlier fit."""
        if self.on_device and self._average_model is not None:
            self._average_model.to(pl_module.device)
        self._pairs = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        """Update the average after each optimiser step: a copy the first time, a lerp towards the weights after."""
        if trainer.global_step <= self._latest_update_step or self._average_model is None:
            return
        average = self._average_model
        if self._pairs is None:
            ours = [t.detach() for t in (*average.module.parameters(), *average.module.buffers())]
            theirs = [t.detach() for t in (*pl_module.parameters(), *pl_module.buffers())]
            same = all(a.device == b.device for a, b in zip(ours, theirs, strict=True))
            self._pairs = (ours, theirs) if same else ([], [])
            self._updates = int(average.n_averaged)  # read once per fit (a resumed average continues)
        ours, theirs = self._pairs
        if not ours:  # the average stayed on another device: AveragedModel copies the weights over
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        with torch.no_grad():
            if self._updates == 0:
                torch._foreach_copy_(ours, theirs)
            else:
                _lerp(ours, theirs, self.decay)
            average.n_averaged += 1
        self._updates += 1
        self._latest_update_step = trainer.global_step


def _lerp(ours: list[torch.Tensor], theirs: list[torch.Tensor], decay: float) -> None:
    """``ours = decay * ours + (1 - decay) * theirs``: one foreach lerp over the floating-point tensors, and
    ``AveragedModel``'s own rule for integer buffers."""
    floats = [a.is_floating_point() or a.is_complex() for a in ours]
    torch._foreach_lerp_([a for a, f in zip(ours, floats, strict=True) if f],
                         [b for b, f in zip(theirs, floats, strict=True) if f], 1 - decay)
    for a, b, f in zip(ours, theirs, floats, strict=True):
        if not f:
            a.copy_(a * decay + b * (1 - decay))
