"""SRModule: frozen modules stay bit-identical through training; the degradation stream follows seed and step."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn
from torch.utils.data import DataLoader, TensorDataset

from faig_lightning.callbacks import ForeachEMA
from faig_lightning.errors import FaigError
from faig_lightning.module import SRModule, frozen_parameters

NET = {"_target_": "faig_lightning.nets.MSRResNet", "scale": 2, "num_feat": 4, "num_block": 1}
DEGRADATION = {"scale": 2, "blur": {"prob": 0.5, "sigma": 2.0}, "noise": {"prob": 0.5, "sigma": 0.1}}


class _Crops(pl.LightningDataModule):
    def train_dataloader(self) -> DataLoader:
        crops = torch.rand(8, 3, 24, 24, generator=torch.Generator().manual_seed(0))
        return DataLoader(TensorDataset(crops), batch_size=4,
                          collate_fn=lambda items: torch.stack([i[0] for i in items]))


def _fit(module: SRModule, steps: int = 4) -> None:
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, accelerator="cpu")
    trainer.fit(module, datamodule=_Crops())


def test_frozen_modules_are_bit_identical_after_training():
    torch.manual_seed(0)
    module = SRModule(NET, DEGRADATION, stage="target", lr=1e-2, freeze=["conv_first", "conv_last.weight"])
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    _fit(module)
    after = module.net.state_dict()
    frozen = {"conv_first.weight", "conv_first.bias", "conv_last.weight"}
    assert set(frozen_parameters(module.net, ["conv_first", "conv_last.weight"])) == frozen
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert all(not torch.equal(before[k], after[k]) for k in before if k not in frozen)  # conv_last.bias trains


@pytest.mark.parametrize(("weight_decay", "ema"), [(0.0, False), (0.1, False), (0.0, True)])
def test_train_filters_changes_only_those_kernels(weight_decay, ema):
    """Re-training a filter set: every other parameter (biases, other kernels of the same weight, first and last
    layers' unselected filters) is bit-identical after training, in the raw and the EMA weights; weight decay, which
    would move every entry, cannot either. The chosen kernels all move."""
    from faig_lightning.attribution import FilterIndex

    torch.manual_seed(0)
    probe = SRModule(NET, DEGRADATION)
    index = FilterIndex.from_model(probe.net)
    chosen = [0, 5, index.flat("body.0.conv1", 2, 3), index.flat("conv_last", 1, 0), len(index) - 1]
    module = SRModule(NET, DEGRADATION, stage="retrain", lr=1e-2, weight_decay=weight_decay, train_filters=chosen)
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    trainer = pl.Trainer(max_steps=4, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, accelerator="cpu",
                         callbacks=[ForeachEMA(decay=0.5)] if ema else [])
    trainer.fit(module, datamodule=_Crops())  # with the EMA callback, the net holds the EMA weights afterwards
    masks = index.masks(chosen)
    assert sum(int(m.sum()) for m in masks.values()) == len(chosen)
    for name, value in module.net.state_dict().items():
        if name not in masks:
            assert torch.equal(value, before[name]), name
            continue
        keep = ~masks[name]
        assert torch.equal(value[keep], before[name][keep]), name
        moved = (value[masks[name]] - before[name][masks[name]]).flatten(1).abs().amax(dim=1)
        assert bool((moved > 0).all()), name


def test_train_filters_with_extra_units_trains_whole_tensors():
    """A ranking with extra units numbers biases after the weights: choosing one trains that whole bias and,
    of the weights, only the chosen kernel."""
    from faig_lightning.attribution import FilterIndex

    torch.manual_seed(0)
    index = FilterIndex.from_model(SRModule(NET, DEGRADATION).net, ["*bias"])
    chosen = [index.flat("conv_hr", 0, 1), index.flat("conv_first.bias", 0, 0)]
    module = SRModule(NET, DEGRADATION, stage="retrain", lr=1e-2, train_filters=chosen, extra_units=["*bias"])
    before = {k: v.clone() for k, v in module.net.state_dict().items()}
    _fit(module)
    after = module.net.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"conv_hr.weight", "conv_first.bias"}
    assert bool((after["conv_first.bias"] != before["conv_first.bias"]).all())
    untouched = torch.ones(after["conv_hr.weight"].shape[:2], dtype=torch.bool)
    untouched[0, 1] = False
    assert torch.equal(after["conv_hr.weight"][untouched], before["conv_hr.weight"][untouched])


def test_unknown_frozen_name_is_one_line():
    with pytest.raises(FaigError, match=r"freeze: 'conv_frist' names no parameter or module of the net; top-level"):
        SRModule(NET, DEGRADATION, freeze=["conv_frist"])


def test_degradation_draws_follow_seed_and_step_only():
    """The LR inputs of a step depend on (seed, step), not on the global RNG; another seed draws others."""
    seen: dict[tuple[int, int], torch.Tensor] = {}

    class Recording(SRModule):
        def training_step(self, batch, batch_idx):
            seen[self.hparams.seed, self.global_step] = batch["lq"].clone()
            return super().training_step(batch, batch_idx)

    for seed, global_seed in ((5, 0), (5, 123), (6, 0)):
        torch.manual_seed(global_seed)
        module = Recording(NET, DEGRADATION, stage="target", seed=seed)
        before = dict(seen)
        _fit(module, steps=2)
        if (5, 0) in before:  # second run with seed 5: the same draws whatever the global RNG did
            assert all(torch.equal(before[5, s], seen[5, s]) for s in (0, 1))
    assert not torch.equal(seen[5, 0], seen[6, 0])
    assert not torch.equal(seen[5, 0], seen[5, 1])


class _Losses(pl.Callback):
    def __init__(self) -> None:
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.losses.append(float(outputs["loss"]))


def _trained(
    steps: int = 3, precision: str = "32-true", ema: pl.Callback | None = None, **kwargs
) -> tuple[dict[str, torch.Tensor], list[float]]:
    torch.manual_seed(0)
    module = SRModule(NET, DEGRADATION, stage="target", lr=1e-3, **kwargs)
    losses = _Losses()
    trainer = pl.Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0, accelerator="cpu", precision=precision,
                         callbacks=[ema or ForeachEMA(decay=0.9), losses])
    trainer.fit(module, datamodule=_Crops())
    assert list(module.state_dict()) == [f"net.{k}" for k in module.net.state_dict()]  # no compiled copies saved
    assert all(v.dtype == torch.float32 for v in module.net.state_dict().values())
    return {k: v.detach().clone() for k, v in module.net.state_dict().items()}, losses.losses


@pytest.mark.slow
def test_compiled_steps_match_eager_steps_and_bf16_losses_match_float32():
    (eager, eager_losses), (compiled, compiled_losses) = _trained(), _trained(compile=True)
    start = SRModule(NET, DEGRADATION).net.state_dict()
    for k in eager:
        moved = float((eager[k] - start[k]).abs().max())
        assert (compiled[k] - eager[k]).abs().max() <= 1e-4 * moved + 1e-7, k
    np.testing.assert_allclose(compiled_losses, eager_losses, rtol=1e-5)
    # bf16 autocast: each step's float32 loss within bf16 resolution of the float32 run's (Adam's first steps
    # amplify tiny gradient differences into weight differences, so the losses are the fair comparison)
    _, bf16_losses = _trained(precision="bf16-mixed")
    np.testing.assert_allclose(bf16_losses, eager_losses, rtol=2e-2)
    assert bf16_losses != eager_losses


def test_compile_mode_is_checked():
    with pytest.raises(FaigError, match="compile must be true, false or one of"):
        SRModule(NET, DEGRADATION, compile="fastest")


class _AveragedModelEMA(pl.callbacks.WeightAveraging):
    """The EMA by ``AveragedModel.update_parameters`` with the same foreach lerp (which reads its count on the host
    each step): what ``ForeachEMA`` must equal to the bit."""

    def __init__(self, decay: float) -> None:
        super().__init__(use_buffers=True, multi_avg_fn=get_ema_multi_avg_fn(decay))

    def should_update(self, step_idx=None, epoch_idx=None) -> bool:
        return step_idx is not None


def test_foreach_ema_equals_lightnings_ema():
    ours, _ = _trained(steps=4)
    on_device, _ = _trained(steps=4, ema=ForeachEMA(decay=0.9, on_device=True))
    averaged, _ = _trained(steps=4, ema=_AveragedModelEMA(decay=0.9))
    lightning, _ = _trained(steps=4, ema=pl.callbacks.EMAWeightAveraging(decay=0.9))
    plain, _ = _trained(steps=4, ema=pl.Callback())  # without an EMA the weights differ
    assert all(torch.equal(ours[k], averaged[k]) and torch.equal(ours[k], on_device[k]) for k in ours)
    for k in ours:  # Lightning's EMA: a multiply-add per tensor instead of a lerp
        torch.testing.assert_close(ours[k], lightning[k], rtol=1e-6, atol=1e-7)
    assert any(not torch.allclose(ours[k], plain[k]) for k in ours)
