"""``SRDataModule``: HR training crops (degraded later, on device, by the LightningModule) + a paired eval set."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from faig_lightning.data.builtin import TRAIN_PHOTOS, load_builtin
from faig_lightning.data.device_crops import DeviceCrops
from faig_lightning.data.eval_set import EVAL_SET_KEYS, PairedEvalSet, build_eval_set, to_plain
from faig_lightning.data.images import image_size, list_images, read_image_raw
from faig_lightning.data.memmap import memmap_images
from faig_lightning.data.train_set import EpochSampler, HRCropDataset
from faig_lightning.errors import FaigError

TRAIN_SOURCES = ("builtin", "folder")
"""Keys accepted in ``eval``: gt_dir, degraded_dirs, degradations, downsample, seed, cache_dir, photos."""


class SRDataModule(pl.LightningDataModule):
    """Training crops and the paired evaluation set, from plain values (Hydra instantiates it).

    Training: ``train_source='builtin'`` uses the scikit-image photos ``train_photos``; ``'folder'`` reads the
    images under ``train_dir`` per item (PNG decoding bounds this at roughly 100 crops/s per worker for 480x480
    sub-images) or, with ``preload=True``, decodes them all into memory once in ``setup`` (crops then cost
    microseconds; memory is H*W*3 bytes per image, ~7 GB for the 800 DIV2K train HR images, shared with forked
    workers) or, with ``memmap=True``, decodes them once into a memory-mapped file under ``memmap_dir`` that later
    runs reuse (crops identical to the file path; not bound by RAM). Batches are ``(B, 3, gt_size, gt_size)`` HR
    crops in [0, 1] (plus ``margin`` pixels of context each side, set by ``faig-train`` from the degradation
    pipeline, which degrades the padded crop and cuts the centre); an epoch is ``iters_per_epoch`` batches; crops
    and their order are pure functions of ``seed`` and the epoch (``HRCropDataset``, ``EpochSampler``),
    independent of workers and global RNG. With ``on_device=True`` the training images are kept as one uint8 store on
    the training device and each batch arrives as a ``CropBatch`` (the crops' placements) whose crops the module cuts
    there: the same crops, in the same order (``DeviceCrops``); the loader runs in the main process.
    Evaluation: ``eval`` holds the keyword arguments of ``build_eval_set`` except ``scale`` (missing keys take its
    defaults); the val loader yields ``{"name": [str], "gt": (1,3,H,W), "lq": {degradation: (1,3,H/s,W/s)}}``, one
    image per batch.
    """

    def __init__(
        self,
        scale: int = 2,
        train_source: str = "builtin",
        train_dir: str | None = None,
        train_photos: Sequence[str] = TRAIN_PHOTOS,
        gt_size: int = 64,
        use_flip: bool = True,
        use_rot: bool = True,
        batch_size: int = 16,
        num_workers: int = 2,
        iters_per_epoch: int = 1000,
        eval: Mapping | None = None,
        preload: bool = False,
        memmap: bool = False,
        memmap_dir: str | None = None,
        seed: int = 0,
        margin: int = 0,
        on_device: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(scale, int) or scale < 1:
            raise FaigError(f"scale must be a positive int, got {scale!r}")
        if not isinstance(gt_size, int) or gt_size < scale or gt_size % scale:
            raise FaigError(
                f"data.gt_size={gt_size!r} must be a positive multiple of scale={scale} (the LR crop is "
                f"gt_size / scale pixels); use e.g. data.gt_size={32 * scale}"
            )
        if train_source not in TRAIN_SOURCES:
            raise FaigError(f"data.train_source must be one of {list(TRAIN_SOURCES)}, got {train_source!r}")
        if train_source == "folder" and not train_dir:
            raise FaigError("data.train_source=folder needs data.train_dir, the folder of HR training images")
        if memmap and (train_source != "folder" or preload or not memmap_dir):
            raise FaigError("data.memmap=true caches a folder's images on disk: it needs data=folder, "
                            "data.preload=false and data.memmap_dir (default: the cache folder)")
        for key, value in (("batch_size", batch_size), ("iters_per_epoch", iters_per_epoch)):
            if not isinstance(value, int) or value < 1:
                raise FaigError(f"data.{key} must be a positive int, got {value!r}")
        if not isinstance(on_device, bool):
            raise FaigError(f"on_device must be true or false, got {on_device!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise FaigError(f"data.num_workers must be an int >= 0, got {num_workers!r}")
        eval_kwargs = to_plain(eval or {})
        unknown = sorted(set(eval_kwargs) - set(EVAL_SET_KEYS))
        if unknown:
            raise FaigError(f"unknown key(s) {unknown} in data.eval; valid keys are {list(EVAL_SET_KEYS)}")
        self.save_hyperparameters(logger=False)  # W&B gets one flat config (loggers.run_config)
        self.scale = scale
        self.train_source = train_source
        self.train_dir = train_dir
        self.train_photos = list(train_photos)
        self.gt_size = gt_size
        self.use_flip = use_flip
        self.use_rot = use_rot
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.iters_per_epoch = iters_per_epoch
        self.eval_kwargs = eval_kwargs
        self.preload = preload
        self.memmap, self.memmap_dir = memmap, memmap_dir
        self.seed = seed
        self.margin = margin
        self.on_device = on_device
        self.train_set: HRCropDataset | None = None
        self.eval_set: PairedEvalSet | None = None

    def build_eval_set(self) -> PairedEvalSet:
        """The evaluation set (generated into the cache on first use, then read from it)."""
        return build_eval_set(scale=self.scale, **self.eval_kwargs)

    def prepare_data(self) -> None:
        """Generate the cached evaluation LR images once (Lightning calls this on one process only)."""
        self.build_eval_set()

    def setup(self, stage: str | None = None) -> None:
        """Build the training set (fit) and the evaluation set (every stage)."""
        if stage in (None, "fit") and self.train_set is None:
            length = self.iters_per_epoch * self.batch_size
            common = {"gt_size": self.gt_size, "length": length, "use_flip": self.use_flip, "use_rot": self.use_rot,
                      "seed": self.seed, "scale": self.scale, "margin": self.margin}
            if self.train_source == "builtin":
                photos = load_builtin(self.train_photos)
                self.train_set = HRCropDataset(list(photos.values()), names=list(photos), **common)
            else:
                paths = list_images(self.train_dir)
                if self.memmap:
                    images = memmap_images(paths, self.memmap_dir)
                elif self.preload:
                    images = [read_image_raw(p) for p in paths]
                else:  # read per item: a file that is no image must fail here, not in a loader worker mid-training
                    for path in paths:
                        image_size(path)
                    images = paths
                self.train_set = HRCropDataset(images, names=[str(p) for p in paths], **common)
        if self.eval_set is None:
            self.eval_set = self.build_eval_set()

    def train_dataloader(self) -> DataLoader:
        """HR crops in a seeded order per epoch, ``drop_last``; persistent workers when ``num_workers > 0``."""
        if self.train_set is None:
            self.setup("fit")
        # Lightning warns that a loader without state cannot resume mid-epoch; this sampler does (EpochSampler)
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch")
        sampler = EpochSampler(len(self.train_set), self.seed, position_of=self._position)
        if self.on_device:
            device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            return DeviceCrops(self.train_set).loader(self.batch_size, sampler, device)
        return DataLoader(
            self.train_set,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=True,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def _position(self) -> tuple[int, int]:
        """The training epoch about to start or resume and the crops of it already drawn, from the optimiser steps
        done ((0, 0) outside a trainer)."""
        trainer = self.trainer
        if trainer is None or not trainer.num_training_batches or trainer.num_training_batches == float("inf"):
            return 0, 0
        batches = trainer.global_step * trainer.accumulate_grad_batches
        epoch, done = divmod(batches, int(trainer.num_training_batches))
        return epoch, done * self.batch_size * trainer.world_size

    def val_dataloader(self) -> DataLoader:
        """The paired evaluation set, one image per batch (images differ in size)."""
        if self.eval_set is None:
            self.setup("validate")
        return DataLoader(self.eval_set, batch_size=1, shuffle=False, num_workers=0)
