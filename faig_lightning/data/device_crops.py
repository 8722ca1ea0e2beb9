"""Training crops cut on the training device: the images as one uint8 store there, each batch gathered by index.

``DeviceCrops`` yields exactly the items of an ``HRCropDataset`` (same image, position, flips, margin and mirrored
border, same float values) in the order of its sampler: the host computes each item's placement from the dataset's
seeded generators (eight integers per crop, copied to the device without waiting) and the device gathers the
pixels. No image is decoded or cropped on the host during training, and nothing waits for the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from faig_lightning.data.images import image_size, read_image_raw
from faig_lightning.data.train_set import HRCropDataset, _too_small
from faig_lightning.errors import FaigError

STORE_SHARE = 0.5
"""The largest share of a GPU's free memory the image store may take (the rest is the training's)."""


class CropBatch:
    """One batch of crop placements (an int64 row per crop: offset in the store, image height and width, top and
    left of the padded window, hflip, vflip, transpose) and the ``DeviceCrops`` they are cut from. Lightning moves it
    to the training device with ``to``; ``hr`` cuts the crops there."""

    def __init__(self, rows: torch.Tensor, crops: DeviceCrops) -> None:
        self.rows, self.crops = rows, crops

    def pin_memory(self) -> CropBatch:
        """The rows in page-locked memory (the DataLoader calls this with ``pin_memory=True``)."""
        return CropBatch(self.rows.pin_memory(), self.crops)

    def to(self, device: torch.device | str, *args: object, **kwargs: object) -> CropBatch:
        """The rows on ``device``, copied without waiting for it."""
        return CropBatch(self.rows.to(device, non_blocking=True), self.crops)

    def hr(self) -> torch.Tensor:
        """The (B, 3, S, S) float32 crops in [0, 1] on the rows' device (S = gt_size + 2 margin)."""
        return self.crops.cut(self.rows)

    def __len__(self) -> int:
        return self.rows.shape[0]


class DeviceCrops(Dataset):
    """The items of ``dataset`` as placements (``__getitem__``) and the uint8 image store they are cut from.

    Only 8-bit images are kept (uint8 arrays, or files that decode to 8 bits); image files are read once, when the
    store is built on a device (``store``), one at a time. A GPU store may take at most half the free GPU memory.
    """

    def __init__(self, dataset: HRCropDataset) -> None:
        self.dataset = dataset
        g, m = dataset.gt_size, dataset.margin
        shapes = []
        for img, name in zip(dataset.images, dataset.names, strict=True):
            if isinstance(img, np.ndarray):
                _check_8bit(img, name)
                h, w = img.shape[:2]
            else:
                h, w = image_size(img)
            if min(h, w) < max(g, m + 1):
                raise _too_small(name, h, w, max(g, m + 1))
            shapes.append((h, w))
        self.shapes = shapes
        sizes = [3 * h * w for h, w in shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64).tolist()
        self.nbytes = int(sum(sizes))
        self.size = g + 2 * m
        self._stores: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[int, ...]:
        """Item ``index``'s placement, as ``HRCropDataset.__getitem__`` places it."""
        k = self.dataset.image_of(index)
        h, w = self.shapes[k]
        top, left, flips = self.dataset.place(index, h, w)
        m = self.dataset.margin
        return (self.offsets[k], h, w, top - m, left - m, *(int(f) for f in flips))

    def collate(self, items: Sequence[tuple[int, ...]]) -> CropBatch:
        """The placements of a batch as one ``CropBatch``."""
        return CropBatch(torch.tensor(items, dtype=torch.int64), self)

    def loader(self, batch_size: int, sampler: Sampler[int], device: torch.device) -> DataLoader:
        """Batches of placements in ``sampler``'s order (``drop_last``, in the main process: an item costs a few
        microseconds), with the store built on ``device`` now, before training starts."""
        self.store(device)
        return DataLoader(self, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=0,
                          collate_fn=self.collate, pin_memory=device.type == "cuda")

    def store(self, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
        """(every image's HWC pixels back to back as one flat uint8 tensor, 255 as a float32 scalar) on ``device``,
        built on first use; a store larger than half the free GPU memory fails in one line."""
        device = _normalise(torch.device(device))
        if device not in self._stores:
            self.check_fits(device)
            flat = torch.empty(self.nbytes, dtype=torch.uint8, device=device)
            for img, name, offset, (h, w) in zip(self.dataset.images, self.dataset.names, self.offsets, self.shapes,
                                                 strict=True):
                pixels = img if isinstance(img, np.ndarray) else _read_8bit(img, name)
                pixels = np.require(pixels.reshape(-1), requirements=["C", "W"])  # a copy only of read-only arrays
                flat[offset : offset + 3 * h * w].copy_(torch.from_numpy(pixels))
            self._stores[device] = flat, torch.full((), 255.0, device=device)
        return self._stores[device]

    def check_fits(self, device: torch.device | str) -> None:
        """One line when the store would take more than half the free memory of a GPU ``device``."""
        device = torch.device(device)
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if self.nbytes > STORE_SHARE * free:
                raise FaigError(
                    f"the {len(self.shapes)} training images take {self.nbytes / 2**30:.2f} GiB, more than half "
                    f"the {free / 2**30:.2f} GiB free on {device}: cut the crops on the host instead (faig-train "
                    "fast=false, or SRDataModule(on_device=False); data.memmap=true for a large folder)")

    def cut(self, rows: torch.Tensor) -> torch.Tensor:
        """The crops of ``rows`` (see ``CropBatch``) as (B, 3, S, S) float32 in [0, 1], gathered on the rows'
        device: the padded window mirrored (reflect-101) where it leaves the image, then hflip, vflip, transpose."""
        flat, full = self.store(rows.device)
        offset, h, w, top, left, hflip, vflip, transpose = (c[:, None] for c in rows.unbind(1))
        span = torch.arange(self.size, device=rows.device)
        ys, xs = _reflect101(top + span, h), _reflect101(left + span, w)  # (B, S) rows and columns of the window
        ys, xs = torch.where(vflip == 0, ys, ys.flip(1)), torch.where(hflip == 0, xs, xs.flip(1))
        pixel = ys[:, :, None] * w[:, :, None] + xs[:, None, :]  # (B, S, S): row ys[i], column xs[j]
        pixel = torch.where(transpose[:, :, None] == 0, pixel, pixel.transpose(1, 2))
        channel = torch.arange(3, device=rows.device)[None, :, None, None]
        index = offset[:, :, None, None] + 3 * pixel[:, None] + channel
        return flat[index].float() / full  # a true division, as the host path's float32(x) / float32(255)


def _reflect101(index: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """``index`` mirrored into ``[0, length)`` at both ends without repeating the edge (``train_set._reflect101``)."""
    index = index.abs()
    return torch.where(index >= length, 2 * (length - 1) - index, index)


def _normalise(device: torch.device) -> torch.device:
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _check_8bit(img: np.ndarray, name: str) -> None:
    if img.dtype != np.uint8:
        raise FaigError(f"training image '{name}' is {img.dtype}: crops cut on the device keep 8-bit images only; "
                        "convert it to 8 bits or cut the crops on the host (faig-train fast=false)")


def _read_8bit(path: Path, name: str) -> np.ndarray:
    pixels = read_image_raw(path)
    _check_8bit(pixels, name)
    return pixels
