"""Training-step speed: faig-train's step against a plain PyTorch loop doing the same work, on every device present.

The plain loop is the reference (1.0x): the net, the target's on-device degradations (blur + noise, a margin of
context cut off after degrading), L1, Adam, a cosine schedule and an EMA of the weights, eager and float32. The
``faig-train`` rows run ``SRModule`` in a Lightning ``Trainer`` with the EMA callback ``faig-train`` uses, eager and
with the opt-in ``compile`` and ``precision=bf16-mixed`` settings, and with ``fast=true`` (``faig-train fast``: the
crops cut from an image store on the device, ``SRModule(sync_free=True)``, the EMA on the device). All read the same
HR crops of the built-in photos (``HRCropDataset``, in memory, no workers). Times are ms per iteration over the
iterations after ``--warmup`` (which absorb compilation); CUDA rows synchronise before starting and stopping the
clock, never in between, and count the host-device synchronisations per iteration over the second half of the
warm-up (``torch.cuda.set_sync_debug_mode``, outside the timed iterations). ``--only TEXT`` keeps the rows whose
label contains it (e.g. ``--only fast=true``); the plain loop always runs.

    python benchmarks/train_speed.py [--net paper|small] [--steps 40] [--warmup 15] [--batch-size 16] [--gt-size 64]
                                     [--no-compile] [--only TEXT]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, SequentialSampler

from faig_lightning.callbacks.ema import ForeachEMA
from faig_lightning.data import HRCropDataset, load_builtin
from faig_lightning.data.builtin import TRAIN_PHOTOS
from faig_lightning.data.device_crops import DeviceCrops
from faig_lightning.degradations import PAPER_LEVELS, DegradationPipeline
from faig_lightning.module import SRModule

NETS = {
    "paper": {"_target_": "faig_lightning.nets.MSRResNet", "scale": 2, "num_feat": 64, "num_block": 16},
    "small": {"_target_": "faig_lightning.nets.MSRResNet", "scale": 2, "num_feat": 32, "num_block": 4},
}
DEGRADATION = dataclasses.asdict(PAPER_LEVELS.training(scale=2))  # the config faig-train passes for blur_noise
LR, EMA_DECAY = 2e-4, 0.999


def loader(batch_size: int, gt_size: int, iterations: int) -> DataLoader:
    """HR crops (with the degradation's margin) of the built-in training photos, as ``faig-train`` reads them."""
    photos = load_builtin(TRAIN_PHOTOS)
    margin = DegradationPipeline(**DEGRADATION).margin
    crops = HRCropDataset(list(photos.values()), gt_size=gt_size, length=batch_size * iterations, scale=2,
                          margin=margin)
    return DataLoader(crops, batch_size=batch_size, drop_last=True, num_workers=0)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(net_spec: dict, data: DataLoader, device: torch.device, warmup: int) -> float:
    """ms per iteration of the eager float32 reference loop."""
    torch.manual_seed(0)
    net = instantiate(net_spec).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=LR, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=250_000, eta_min=1e-7)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(EMA_DECAY), use_buffers=True)
    degrade = DegradationPipeline(**DEGRADATION).to(device)
    margin = degrade.margin
    gen = torch.Generator(device=device)
    start = 0.0
    for step, hr in enumerate(data):
        if step == warmup:
            sync(device)
            start = time.perf_counter()
        hr = hr.to(device, non_blocking=True)
        gen.manual_seed(step)
        lq, _ = degrade(hr, generator=gen, margin=margin)
        loss = F.l1_loss(net(lq), hr[..., margin:-margin, margin:-margin])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.update_parameters(net)
    sync(device)
    return 1000 * (time.perf_counter() - start) / (len(data) - warmup)


class _Clock(pl.Callback):
    """Wall time from the start of iteration ``warmup`` to the end of the last one (``max_steps``); the device is
    synchronised at those two points only, so that the host may run ahead of it as in training. On CUDA, the
    synchronisations of iterations ``warmup // 2`` to ``warmup - 1`` are counted (``syncs``, per iteration)."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device = warmup, device
        self.start = self.end = 0.0
        self.steps = 0
        self.syncs: float | None = None
        self._recording: warnings.catch_warnings | None = None
        self._caught: list[warnings.WarningMessage] = []

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == self.warmup // 2 and self.warmup >= 2 and self.device.type == "cuda":
            self._recording = warnings.catch_warnings(record=True)
            self._caught = self._recording.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        if batch_idx == self.warmup:
            if self._recording is not None:
                torch.cuda.set_sync_debug_mode(0)
                self._recording.__exit__(None, None, None)
                counted = sum("synchroniz" in str(w.message) for w in self._caught)
                self.syncs = counted / (self.warmup - self.warmup // 2)
            sync(self.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == trainer.max_steps:
            sync(self.device)
            self.end = time.perf_counter()
            self.steps = batch_idx + 1 - self.warmup


def faig_train_step(net_spec: dict, data: DataLoader, device: torch.device, warmup: int, compile: bool | str,
                    precision: str, fast: bool) -> tuple[float, float | None]:
    """ms per iteration of ``SRModule`` under a Lightning ``Trainer`` with the EMA callback, as ``faig-train``
    (``fast``: as ``faig-train fast=true``, the crops of ``data`` cut on the device), and the synchronisations per
    iteration (CUDA; None elsewhere)."""
    torch.manual_seed(0)
    module = SRModule(net_spec, DEGRADATION, stage="target", lr=LR, compile=compile, log_images=False,
                      sync_free=fast)
    if fast:
        data = DeviceCrops(data.dataset).loader(data.batch_size, SequentialSampler(data.dataset), device)
    clock = _Clock(warmup, device)
    ema = ForeachEMA(decay=EMA_DECAY, on_device=fast)
    trainer = pl.Trainer(accelerator=device.type, devices=1, max_steps=len(data), precision=precision, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         limit_val_batches=0, callbacks=[ema, clock], benchmark=device.type == "cuda")
    trainer.fit(module, train_dataloaders=data)
    return 1000 * (clock.end - clock.start) / clock.steps, clock.syncs


def main() -> None:
    """Parse arguments, time every configuration on every device and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", choices=list(NETS), help="default: paper on a GPU, small on the CPU")
    parser.add_argument("--steps", type=int, default=40, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--gt-size", type=int, default=64)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--only", default="", help="keep the faig-train rows whose label contains this text")
    args = parser.parse_args()
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    data = loader(args.batch_size, args.gt_size, args.warmup + args.steps)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; batch {args.batch_size} x "
          f"{args.gt_size} px HR; {args.steps} timed iterations after {args.warmup}")
    print(f"{'device':28s} {'net':6s} {'run':46s} {'ms/iter':>8s} {'vs plain':>8s} {'syncs/iter':>10s}")
    for device in devices:
        net = args.net or ("paper" if device.type == "cuda" else "small")
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        variants = []
        for fast in (False, True):
            run = "faig-train fast=true" if fast else "faig-train"
            variants += [(f"{run}, eager, 32-true", False, "32-true", fast),
                         (f"{run}, eager, bf16-mixed", False, "bf16-mixed", fast)]
            if not args.no_compile:
                variants += [(f"{run}, compile, 32-true", True, "32-true", fast),
                             (f"{run}, compile, bf16-mixed", True, "bf16-mixed", fast)]
                if device.type == "cuda":
                    variants.append((f"{run}, compile=reduce-overhead, bf16", "reduce-overhead", "bf16-mixed", fast))
        reference = plain_loop(NETS[net], data, device, args.warmup)
        plain = "plain PyTorch loop, eager, float32"
        print(f"{name:28s} {net:6s} {plain:46s} {reference:8.1f} {1.0:7.2f}x", flush=True)
        for label, compile_mode, precision, fast in variants:
            if args.only not in label:
                continue
            ms, syncs = faig_train_step(NETS[net], data, device, args.warmup, compile_mode, precision, fast)
            counted = "" if syncs is None else f"{syncs:10.1f}"
            print(f"{name:28s} {net:6s} {label:46s} {ms:8.1f} {reference / ms:7.2f}x {counted}", flush=True)


if __name__ == "__main__":
    main()
