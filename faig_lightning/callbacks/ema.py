"""EMA of the weights with one fused update per step."""

from __future__ import annotations

from pytorch_lightning.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn


class ForeachEMA(WeightAveraging):
    """Exponential moving average of the weights and buffers after every optimiser step — what Lightning's
    ``EMAWeightAveraging`` does with its defaults — updated by one ``torch._foreach_lerp_`` over all tensors instead
    of a Python loop launching kernels per tensor (the loop is launch-bound on GPUs)."""

    def __init__(self, decay: float = 0.999) -> None:
        super().__init__(use_buffers=True, multi_avg_fn=get_ema_multi_avg_fn(decay))
        self.decay = decay

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        """After every optimiser step, never at epoch ends."""
        return step_idx is not None
