"""The whole training step on the device (``faig-train fast=true``): crops cut from a device store equal the host's
crops, the fast path trains on the same batches to the same weights (mid-epoch resume included), reads nothing
from the device between logging steps, and its compiled step equals the eager one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from helpers import faig_train, rand_img, save
from pytorch_lightning.loggers import CSVLogger
from torch.utils._python_dispatch import TorchDispatchMode

from faig_lightning.callbacks import ForeachEMA
from faig_lightning.data import SRDataModule
from faig_lightning.data.device_crops import CropBatch, DeviceCrops
from faig_lightning.data.train_set import HRCropDataset
from faig_lightning.errors import FaigError
from faig_lightning.module import SRModule

NET = {"_target_": "faig_lightning.nets.MSRResNet", "num_feat": 4, "num_block": 1, "scale": 2}
DEGRADATION = {"scale": 2, "blur": {"prob": 0.5, "kernel_size": 5, "sigma": 1.0}, "noise": {"prob": 0.5, "sigma": 0.1}}
SHAPES = [(20, 26), (31, 17), (18, 18), (40, 22), (19, 33)]


def _images() -> list[np.ndarray]:
    return [rand_img(h, w, seed=k) for k, (h, w) in enumerate(SHAPES)]


@pytest.mark.parametrize("length", [3, 12])  # an epoch of fewer crops than images, and of more
def test_device_crops_are_the_datasets_items(tmp_path: Path, length: int) -> None:
    """Every item of four epochs, cut from the store, equals HRCropDataset's item to the bit: same image, position,
    flips and mirrored margin (a 6-pixel margin around 8-pixel crops of images under 41 pixels leaves them often);
    a dataset of image files gives the same store."""
    images = _images()
    paths = [save(tmp_path / f"{k}.png", img) for k, img in enumerate(images)]
    for source in (images, paths):
        dataset = HRCropDataset(source, gt_size=8, length=length, scale=2, margin=6, seed=3)
        crops = DeviceCrops(dataset)
        indices = range(4 * length)
        batch = crops.collate([crops[i] for i in indices])
        assert isinstance(batch, CropBatch) and len(batch) == len(indices)
        expected = torch.stack([dataset[i] for i in indices])
        assert torch.equal(batch.to("cpu").hr(), expected)


def test_device_crops_refuse_what_they_cannot_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    images = _images()
    with pytest.raises(FaigError, match="uint16: crops cut on the device keep 8-bit images only"):
        DeviceCrops(HRCropDataset([*images[:2], images[2].astype(np.uint16)], gt_size=8, length=4))
    crops = DeviceCrops(HRCropDataset(images, gt_size=8, length=4))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (crops.nbytes, 10 * crops.nbytes))
    with pytest.raises(FaigError, match=r"more than half the .* free on cuda:0: cut the crops on the host instead"):
        crops.store("cuda:0")  # checked before any allocation
    with pytest.raises(FaigError, match="sync_free must be true or false, got 'yes'"):
        SRModule(NET, DEGRADATION, sync_free="yes")
    with pytest.raises(FaigError, match="on_device must be true or false, got 1"):
        SRDataModule(on_device=1)


class _Recording(SRModule):
    """Keeps each step's degraded batch."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def training_step(self, batch, batch_idx):
        self.seen[self.global_step] = batch["lq"].clone(), batch["gt"].clone()
        return super().training_step(batch, batch_idx)


class _StopAt(pl.Callback):
    def __init__(self, step: int, path: Path) -> None:
        self.step, self.path = step, path

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True


def _data(tmp_path: Path, on_device: bool, iters_per_epoch: int = 2) -> SRDataModule:
    for k, img in enumerate(_images()):
        save(tmp_path / f"train/{k}.png", img)
    for k, (h, w) in enumerate([(24, 30), (27, 22)]):
        save(tmp_path / f"gt/img{k}.png", rand_img(h, w, seed=10 + k))
    return SRDataModule(train_source="folder", train_dir=str(tmp_path / "train"), gt_size=8, batch_size=2,
                        num_workers=0, iters_per_epoch=iters_per_epoch, margin=2, seed=1, on_device=on_device,
                        eval={"gt_dir": str(tmp_path / "gt"), "cache_dir": str(tmp_path / "cache")})


def _fit(tmp_path: Path, fast: bool, max_steps: int, stop: int | None = None, ckpt: Path | None = None,
         **module_kwargs) -> tuple[_Recording, pl.Trainer]:
    pl.seed_everything(0, verbose=False)
    module = _Recording(NET, DEGRADATION, stage="target", lr=1e-2, seed=1, sync_free=fast, **module_kwargs)
    callbacks = [ForeachEMA(decay=0.5, on_device=fast)]
    if stop is not None:
        callbacks.append(_StopAt(stop, tmp_path / "mid.ckpt"))
    trainer = pl.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False, callbacks=callbacks,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         accelerator="cpu", deterministic=True)
    trainer.fit(module, datamodule=_data(tmp_path, fast), ckpt_path=ckpt)
    return module, trainer


def _weights(module: SRModule, trainer: pl.Trainer) -> dict[str, torch.Tensor]:
    """The net's weights (the EMA's after training: the EMA callback leaves them in the net) and the raw ones."""
    ema = next(cb for cb in trainer.callbacks if isinstance(cb, ForeachEMA))
    raw = {f"raw.{k}": v for k, v in ema._average_model.module.net.state_dict().items()}
    return {**{k: v.clone() for k, v in module.net.state_dict().items()}, **raw}


def test_fast_path_trains_on_the_same_batches_to_the_same_weights(tmp_path: Path, single_thread) -> None:
    """7 steps (3.5 epochs of 4 crops over 5 images): the fast path's degraded batches and its weights, raw and EMA,
    equal the host path's to the bit; so do those of a fast run stopped after step 3 (mid-epoch) and resumed."""
    host, host_trainer = _fit(tmp_path, fast=False, max_steps=7)
    fast, fast_trainer = _fit(tmp_path, fast=True, max_steps=7)
    assert sorted(host.seen) == sorted(fast.seen) == list(range(7))
    for step, (lq, gt) in host.seen.items():
        assert torch.equal(fast.seen[step][0], lq) and torch.equal(fast.seen[step][1], gt), step
    expected = _weights(host, host_trainer)
    assert all(torch.equal(expected[k], v) for k, v in _weights(fast, fast_trainer).items())

    _fit(tmp_path, fast=True, max_steps=7, stop=3)
    resumed, resumed_trainer = _fit(tmp_path, fast=True, max_steps=7, ckpt=tmp_path / "mid.ckpt")
    assert sorted(resumed.seen) == [3, 4, 5, 6]
    for step, (lq, gt) in resumed.seen.items():
        assert torch.equal(host.seen[step][0], lq) and torch.equal(host.seen[step][1], gt), step
    assert all(torch.equal(expected[k], v) for k, v in _weights(resumed, resumed_trainer).items())


class _ScalarReads(TorchDispatchMode):
    """Counts the tensor values read on the host (``item``, ``bool``, ``float``, ``tolist`` of a device tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.count += 1
        return func(*args, **(kwargs or {}))


class _ReadsPerIteration(pl.Callback):
    """Host reads of device values from the start of each training batch to the start of the next."""

    def __init__(self, reads: _ScalarReads) -> None:
        self.reads, self.per_iteration, self._last = reads, [], 0

    def on_train_batch_start(self, *args) -> None:
        self.per_iteration.append(self.reads.count - self._last)
        self._last = self.reads.count


class _FusedAdam(SRModule):
    """Fused Adam on the CPU too (as on CUDA): the for-loop Adam reads its step count on the host."""

    def configure_optimizers(self):
        config = super().configure_optimizers()
        opt = config["optimizer"]
        fused = torch.optim.Adam(opt.param_groups[0]["params"], lr=self.hparams.lr, betas=(0.9, 0.99), fused=True)
        config["lr_scheduler"]["scheduler"] = type(config["lr_scheduler"]["scheduler"])(fused, T_0=100)
        return {**config, "optimizer": fused}


@pytest.mark.parametrize("fast", [True, False])
def test_fast_steps_read_nothing_from_the_device_between_logging_steps(tmp_path: Path, fast: bool,
                                                                         single_thread) -> None:
    """With logging every 3 steps, the fast path's iterations read no device value on the host except where the
    logger writes (steps 3, 6, 9: the reads of iterations 2, 5, 8 counted at the start of the next), the blur and
    noise draws included; the host path reads the progress bar's loss every step."""
    reads = _ScalarReads()
    counter = _ReadsPerIteration(reads)
    pl.seed_everything(0, verbose=False)
    module = _FusedAdam(NET, DEGRADATION, stage="target", seed=1, sync_free=fast)
    trainer = pl.Trainer(max_steps=10, logger=CSVLogger(tmp_path), log_every_n_steps=3, enable_checkpointing=False,
                         callbacks=[ForeachEMA(decay=0.5, on_device=fast), counter], enable_progress_bar=True,
                         enable_model_summary=False, limit_val_batches=0, accelerator="cpu")
    with reads:
        trainer.fit(module, datamodule=_data(tmp_path, fast, iters_per_epoch=20))  # no epoch starts on the way
    steady = counter.per_iteration[3:]  # from iteration 2 on (the first reads the EMA's count once)
    if fast:
        assert [n > 0 for n in steady] == [i % 3 == 0 for i in range(len(steady))], counter.per_iteration
    else:
        assert all(n > 0 for n in steady), counter.per_iteration


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
def test_compiled_fast_steps_match_eager_steps(tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch,
                                               single_thread) -> None:
    """The fast path with the loss compiled with the net trains to the eager weights, raw and EMA, within 1e-4 of
    how far they moved (``aot_eager``: the traced forward and backward graphs; ``inductor``, its generated CPU
    kernels, takes about a minute here)."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: compile_(fn, backend=backend, **kwargs))
    eager, eager_trainer = _fit(tmp_path, fast=True, max_steps=3)
    compiled, compiled_trainer = _fit(tmp_path, fast=True, max_steps=3, compile=True)
    assert compiled._train_loss is not compiled._l1_loss
    start = SRModule(NET, DEGRADATION).net.state_dict()
    expected, got = _weights(eager, eager_trainer), _weights(compiled, compiled_trainer)
    for k, v in expected.items():
        moved = float((v - start[k.removeprefix("raw.")]).abs().max())
        assert float((got[k] - v).abs().max()) <= 1e-4 * moved + 1e-7, k


@pytest.mark.slow
def test_faig_train_fast_exports_the_same_weights(tmp_path: Path) -> None:
    """``faig-train fast=true`` (baseline, 4 steps, a validation every 2) exports the weights and metrics of the
    default run, to the bit."""
    results = []
    for fast in ("false", "true"):
        run = tmp_path / f"fast_{fast}"
        faig_train(tmp_path, "stage=baseline", "logger=none", f"fast={fast}", f"hydra.run.dir={run}")
        weights = torch.load(run / "baseline" / "net_g.pth", weights_only=True)
        summary = json.loads((run / "baseline" / "summary.json").read_text())
        results.append(({f"{group}.{k}": v for group, tensors in weights.items() for k, v in tensors.items()},
                        summary["final_metrics"]))
    (host, host_metrics), (fast, fast_metrics) = results
    assert host.keys() == fast.keys() and all(torch.equal(host[k], fast[k]) for k in host)
    assert host_metrics == fast_metrics
