"""One LightningModule for both FAIG stages: the clean baseline and the degradation-aware target."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import WandbLogger

from faig_lightning.attribution.filters import FilterIndex
from faig_lightning.data.device_crops import CropBatch
from faig_lightning.degradations import DegradationPipeline
from faig_lightning.errors import FaigError
from faig_lightning.metrics import psnr_per_image, ssim_per_image
from faig_lightning.nets.build import build_net, model_scale
from faig_lightning.seeding import derive_seed

STAGES = ("baseline", "target", "retrain")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def frozen_parameters(net: torch.nn.Module, freeze: Sequence[str]) -> list[str]:
    """Names of the parameters under the modules or parameters named in ``freeze``; one line for a name that
    matches nothing."""
    names = [n for n, _ in net.named_parameters()]
    frozen = []
    for prefix in freeze:
        matched = [n for n in names if n == prefix or n.startswith(f"{prefix}.")]
        if not matched:
            modules = sorted({n.split(".")[0] for n in names})
            raise FaigError(f"freeze: {prefix!r} names no parameter or module of the net; top-level modules: {modules}")
        frozen += matched
    return list(dict.fromkeys(frozen))


def val_panel(lq: torch.Tensor, out: torch.Tensor, gt: torch.Tensor) -> np.ndarray:
    """input (nearest-upsampled) | output | GT of one (3, H, W) image as a uint8 (H, 3W, 3) array: each value
    clamped to [0, 1] and rounded to 8 bits, round(x * 255)."""
    up = F.interpolate(lq[None].float(), size=gt.shape[-2:], mode="nearest")[0]
    panel = torch.cat([up, out.float(), gt.float()], dim=-1).clamp(0, 1)
    return torch.round(panel * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


class SRModule(pl.LightningModule):
    """Trains an SR net with L1 on HR crops degraded on device; validates on every paired eval degradation.

    All constructor arguments are plain values (dicts, lists, numbers, strings) so checkpoints load under
    ``torch.load(weights_only=True)``. ``net`` is a Hydra spec (``_target_`` + kwargs) of the network.
    The degradation draws of training step ``s`` on process ``r`` come from a generator seeded with
    (``seed``, ``r``, ``s``): resuming at step ``s`` continues the uninterrupted run's stream exactly.
    ``freeze`` names modules or parameters of the net (e.g. ``conv_first``) that this stage leaves untouched.
    ``train_filters`` (global filter indices, ``FilterIndex`` numbering) trains only those ``W[o, i]`` kernels:
    every other parameter, biases included, stays bit-identical (gradients masked, and the other entries of a
    partly trained weight written back after each optimiser step, so weight decay cannot move them either);
    ``extra_units`` numbers whole tensors after the weights, as the rankings the filters came from did.
    ``compile`` (opt-in): ``torch.compile`` the net's training forward (and so its backward) — ``True`` or a mode
    such as ``"reduce-overhead"`` (CUDA graphs) or ``"max-autotune"``; validation and the saved weights use the
    plain net. With ``precision=bf16-mixed`` the L1 loss is taken in float32; the EMA weights are float32 anyway.
    ``sync_free`` (opt-in, ``faig-train fast=true``): no training step waits for the device — ``train/loss`` stays
    off the progress bar (the logger reads it every ``trainer.log_every_n_steps`` steps) and ``train/lr`` is logged on
    those steps only; with ``compile``, the L1 loss is compiled with the net (one graph, CUDA graphs under
    ``reduce-overhead``). The weights follow the same updates as without it. Batches may also be ``CropBatch``es
    (``SRDataModule(on_device=True)``): their crops are cut on the training device, then degraded as usual.
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        degradation: Mapping[str, Any],
        stage: str = "baseline",
        lr: float = 2e-4,
        betas: Sequence[float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        scheduler_period: int = 250_000,
        eta_min: float = 1e-7,
        crop_border: int | None = None,
        test_y_channel: bool = False,
        log_images: bool = True,
        baseline_ckpt: str | None = None,
        seed: int = 0,
        freeze: Sequence[str] = (),
        compile: bool | str = False,
        sync_free: bool = False,
        train_filters: Sequence[int] | None = None,
        extra_units: Sequence[str] = (),
    ) -> None:
        super().__init__()
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if not isinstance(sync_free, bool):
            raise FaigError(f"sync_free must be true or false, got {sync_free!r}")
        self.save_hyperparameters(logger=False)  # W&B gets one flat config (loggers.run_config)
        self.net = build_net(net)
        for name in frozen_parameters(self.net, freeze):
            self.net.get_parameter(name).requires_grad_(False)
        self._filter_masks: dict[str, torch.Tensor] = {}
        self._anchor: dict[str, torch.Tensor] = {}
        if train_filters is not None:
            self._train_only(train_filters, extra_units)
        self.degrade = DegradationPipeline(**dict(degradation))
        self.scale = model_scale(self.net) or self.degrade.scale  # custom nets may carry no scale attribute
        self.crop_border = self.scale if crop_border is None else int(crop_border)
        self.start_step = 0
        self._generator: torch.Generator | None = None
        self._train_forward = self.net.forward
        self._train_loss = self._l1_loss
        if compile:
            if compile is not True and compile not in COMPILE_MODES:
                raise FaigError(f"compile must be true, false or one of {list(COMPILE_MODES)}, got {compile!r}")
            # a compiled bound method, not a submodule: parameter names and checkpoints stay those of the net
            mode = None if compile is True else compile
            if sync_free:
                self._train_loss = torch.compile(self._l1_loss, mode=mode)
            else:
                self._train_forward = torch.compile(self.net.forward, mode=mode)

    def _train_only(self, filters: Sequence[int], extra_units: Sequence[str]) -> None:
        """Leave only the kernels ``filters`` trainable: the other parameters are frozen, and the partly trained
        weights get a gradient mask."""
        if len(filters) == 0:
            raise FaigError("train_filters is empty: name at least one filter to train")
        index = FilterIndex.from_model(self.net, extra_units)
        # per partly trained weight, a bool mask broadcastable to it (the weight's layout, e.g. transposed convs)
        self._filter_masks = {name: index.layer(name).weight_mask(mask)
                              for name, mask in index.masks(list(filters)).items()}
        for name, param in self.net.named_parameters():
            if name not in self._filter_masks:
                param.requires_grad_(False)
            elif param.requires_grad:
                mask = self._filter_masks[name]
                param.register_hook(lambda grad, mask=mask: grad * mask.to(grad.device, grad.dtype))

    def forward(self, lq: torch.Tensor) -> torch.Tensor:
        return self.net(lq)

    def on_train_start(self) -> None:
        self.start_step = self.global_step  # > 0 when resumed from a checkpoint
        # the values the untrained entries of partly trained weights must keep (the start, or a resumed state)
        self._anchor = {n: self.net.get_parameter(n).detach().clone() for n in self._filter_masks}

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """The optimiser's step; with ``train_filters``, the entries outside them are written back afterwards."""
        super().optimizer_step(*args, **kwargs)
        with torch.no_grad():
            for name, anchor in self._anchor.items():
                param = self.net.get_parameter(name)
                keep = self._filter_masks[name].to(param.device)
                param.copy_(torch.where(keep, param, anchor))

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Degrade training HR crops on the training device (not in loader workers). The crops carry
        ``degrade.margin`` pixels of context each side (``SRDataModule(margin=)``), so the LR of their centre equals
        that of the degraded whole image."""
        if isinstance(batch, CropBatch):
            batch = batch.hr()
        if self.trainer is not None and self.trainer.training and isinstance(batch, torch.Tensor):
            if self._generator is None or self._generator.device != batch.device:
                self._generator = torch.Generator(device=batch.device)
            self._generator.manual_seed(derive_seed(self.hparams.seed, "degradation", self.global_rank,
                                                    self.global_step))
            m = self.degrade.margin  # the crops carry this much context: degrade them whole, keep the centre
            lq, labels = self.degrade(batch, generator=self._generator, margin=m)
            return {"lq": lq, "gt": batch[..., m : batch.shape[-2] - m, m : batch.shape[-1] - m], "labels": labels}
        return batch

    def _l1_loss(self, lq: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(self._train_forward(lq).float(), gt.float())

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        if not self.hparams.sync_free:
            loss = self._train_loss(batch["lq"], batch["gt"])
            self.log("train/loss", loss, prog_bar=True)
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
            return loss
        if self.hparams.compile and self.device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # a new training iteration for CUDA graph trees
        loss = self._train_loss(batch["lq"], batch["gt"])
        # a copy: a CUDA graph's output is overwritten by its next replay, before the logger may read it
        self.log("train/loss", loss.detach().clone())
        if (self.global_step + 1) % self.trainer.log_every_n_steps == 0:  # a float logged copies it to the device
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        gt = batch["gt"]
        psnrs = []
        for name, lq in batch["lq"].items():
            out = self.net(lq)
            psnr = psnr_per_image(out, gt, self.crop_border, self.hparams.test_y_channel)
            ssim = ssim_per_image(out, gt, self.crop_border, self.hparams.test_y_channel)
            psnrs.append(psnr)
            n = gt.shape[0]
            self.log(f"val/psnr/{name}", psnr.mean(), batch_size=n, sync_dist=True)
            self.log(f"val/ssim/{name}", ssim.mean(), batch_size=n, sync_dist=True)
            if batch_idx == 0 and self.hparams.log_images:
                self._log_panel(name, lq[0], out[0], gt[0])
        self.log("val/psnr/mean", torch.stack(psnrs).mean(), batch_size=gt.shape[0], sync_dist=True,
                 prog_bar=True)

    def _log_panel(self, name: str, lq: torch.Tensor, out: torch.Tensor, gt: torch.Tensor) -> None:
        """``val_panel``, logged to W&B when it is the logger."""
        if not isinstance(self.logger, WandbLogger) or self.global_rank != 0:
            return
        self.logger.log_image(key=f"val/panel/{name}", images=[val_panel(lq, out, gt)],
                              caption=[f"{name}: input | output | GT"], step=self.global_step)

    def configure_optimizers(self) -> dict[str, Any]:
        """Adam (BasicSR's betas) with cosine annealing restarts every ``scheduler_period`` iterations."""
        hp = self.hparams
        trained = [p for p in self.net.parameters() if p.requires_grad]
        # fused Adam on CUDA: one kernel for all parameters instead of a launch per tensor
        opt = torch.optim.Adam(trained, lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay,
                               fused=self.device.type == "cuda")
        sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=int(hp.scheduler_period),
                                                                     eta_min=hp.eta_min)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
