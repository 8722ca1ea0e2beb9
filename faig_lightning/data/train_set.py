"""Training set: random HR crops with flip / 90-degree rotation augmentation (LR synthesis happens on device)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from faig_lightning.data.images import read_image_raw, to_tensor
from faig_lightning.errors import FaigError
from faig_lightning.seeding import derive_seed


def augment(img: np.ndarray, hflip: bool, vflip: bool, transpose: bool) -> np.ndarray:
    """BasicSR-style augmentation of an HWC array: horizontal flip, vertical flip, then H/W transpose (views)."""
    if hflip:
        img = img[:, ::-1]
    if vflip:
        img = img[::-1]
    if transpose:
        img = img.transpose(1, 0, 2)
    return img


def _too_small(name: str, h: int, w: int, gt_size: int) -> FaigError:
    return FaigError(
        f"training image '{name}' is {h}x{w}, smaller than the {gt_size}x{gt_size} HR crop; "
        f"set a smaller data.gt_size (at most {min(h, w)}) or remove the image"
    )


class HRCropDataset(Dataset):
    """Random ``gt_size`` x ``gt_size`` HR crops as CHW float32 tensors in [0, 1].

    ``images`` holds in-memory HWC RGB arrays (uint8/uint16/float in [0, 1]) and/or image file paths; paths are
    read on every item (the norm for 480x480 DIV2K sub-images; cut big images with ``subimages`` first).
    Item ``index`` crops image ``image_of(index)`` at a uniform position, then applies BasicSR's ``augment``:
    hflip if ``use_flip``, vflip and transpose if ``use_rot`` (each with p=0.5; together the 8 flips/rotations).
    Every image is used: the items of an epoch go through the images in turn, an epoch continuing where the last
    one stopped, so a pass over ``N`` images takes ``ceil(N / length)`` epochs when an epoch holds fewer crops than
    there are images (each pass in its own seeded order, so an epoch sees a random subset, not a block of
    neighbouring files) and an epoch holds every image ``length // N`` or one more times otherwise.
    Crops start at multiples of ``scale``. With ``margin`` > 0 each item carries ``margin`` pixels of context each
    side (``gt_size + 2 margin`` square; mirrored where it leaves the image), for ``DegradationPipeline(margin=)``.
    ``length`` is the epoch size in crops (iterations per epoch x batch size). An item is a pure function of
    ``seed`` and its index (the crop position and flips come from a generator seeded with both), whatever the
    process, worker or global RNG state. ``EpochSampler`` numbers the items of epoch ``e`` as
    ``e * length + i``, so every epoch draws new crops and item ``i`` of epoch ``e`` is always the same crop.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray | str | os.PathLike],
        gt_size: int,
        length: int,
        use_flip: bool = True,
        use_rot: bool = True,
        names: Sequence[str] | None = None,
        seed: int = 0,
        scale: int = 1,
        margin: int = 0,
    ) -> None:
        if not images:
            raise FaigError("HRCropDataset needs at least one training image")
        if gt_size < 1 or length < 1:
            raise FaigError(f"gt_size and length must be positive, got gt_size={gt_size}, length={length}")
        if not isinstance(scale, int) or scale < 1 or gt_size % scale:
            raise FaigError(f"gt_size={gt_size} must be a multiple of scale={scale}")
        if not isinstance(margin, int) or margin < 0 or margin % scale:
            raise FaigError(f"margin={margin!r} must be an int >= 0 and a multiple of scale={scale}")
        if names is not None and len(names) != len(images):
            raise FaigError(f"got {len(names)} names for {len(images)} images; give one name per image")
        self.images = [img if isinstance(img, np.ndarray) else Path(img) for img in images]
        self.names = (
            list(names)
            if names is not None
            else [str(img) if isinstance(img, Path) else f"#{i}" for i, img in enumerate(self.images)]
        )
        self.gt_size = gt_size
        self.length = length
        self.use_flip = use_flip
        self.use_rot = use_rot
        self.scale, self.margin = scale, margin
        self.seed = derive_seed(seed, "crops")
        self._orders: dict[int, list[int]] = {}
        for img, name in zip(self.images, self.names, strict=True):
            if isinstance(img, np.ndarray):
                if img.ndim != 3 or img.shape[2] != 3:
                    raise FaigError(f"training image '{name}' must be HWC RGB, got shape {img.shape}")
                if min(img.shape[:2]) < max(gt_size, margin + 1):
                    raise _too_small(name, img.shape[0], img.shape[1], max(gt_size, margin + 1))

    def __len__(self) -> int:
        return self.length

    def place(self, index: int, height: int, width: int) -> tuple[int, int, tuple[bool, bool, bool]]:
        """Top-left corner of item ``index``'s ``gt_size`` crop in a ``height`` x ``width`` image (multiples of
        ``scale``, like an LR crop taken from the degraded image) and its (hflip, vflip, transpose)."""
        rng = np.random.default_rng([self.seed, index])
        g, s = self.gt_size, self.scale
        top, left = s * int(rng.integers((height - g) // s + 1)), s * int(rng.integers((width - g) // s + 1))
        flips = rng.random(3) < 0.5
        return top, left, (self.use_flip and bool(flips[0]), self.use_rot and bool(flips[1]),
                           self.use_rot and bool(flips[2]))

    def image_of(self, index: int) -> int:
        """The image item ``index`` crops: position ``e * min(length, N) + i`` (epoch ``e``, item ``i`` of it) of
        a stream that holds every one of the ``N`` images once per pass."""
        n = len(self.images)
        epoch, item = divmod(index, self.length)
        position = epoch * min(self.length, n) + item
        if self.length >= n:  # an epoch holds every image; the sampler shuffles their order
            return position % n
        return self._pass_order(position // n)[position % n]

    def _pass_order(self, index: int) -> list[int]:
        """The seeded order of the images in pass ``index`` (the two last ones are kept: an epoch that holds fewer
        crops than there are images spans at most two passes)."""
        if index not in self._orders:
            gen = torch.Generator().manual_seed(derive_seed(self.seed, "pass", index))
            self._orders = {k: v for k, v in self._orders.items() if k == index - 1}
            self._orders[index] = torch.randperm(len(self.images), generator=gen).tolist()
        return self._orders[index]

    def __getitem__(self, index: int) -> torch.Tensor:
        k = self.image_of(index)
        src = self.images[k]
        img = src if isinstance(src, np.ndarray) else read_image_raw(src)
        h, w = img.shape[:2]
        g, m = self.gt_size, self.margin
        if min(h, w) < max(g, m + 1):
            raise _too_small(self.names[k], h, w, max(g, m + 1))
        top, left, (hflip, vflip, transpose) = self.place(index, h, w)
        crop = augment(_window(img, top - m, left - m, g + 2 * m), hflip=hflip, vflip=vflip, transpose=transpose)
        return to_tensor(crop)


def _reflect101(start: int, size: int, length: int) -> np.ndarray | slice:
    """Indices ``start .. start + size - 1`` of an axis of ``length``, mirrored at the ends without repeating the
    edge (the blur's border rule, so a margin outside the image holds what the whole-image blur reads there)."""
    if start >= 0 and start + size <= length:
        return slice(start, start + size)
    idx = np.abs(np.arange(start, start + size))
    return np.where(idx >= length, 2 * (length - 1) - idx, idx)


def _window(img: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """A ``size`` x ``size`` window of ``img`` (reflect-101 outside it), a view when it lies inside."""
    rows, cols = _reflect101(top, size, img.shape[0]), _reflect101(left, size, img.shape[1])
    if isinstance(rows, slice) and isinstance(cols, slice):
        return img[rows, cols]
    rows = np.arange(img.shape[0])[rows] if isinstance(rows, slice) else rows
    cols = np.arange(img.shape[1])[cols] if isinstance(cols, slice) else cols
    return img[np.ix_(rows, cols)]


class EpochSampler(Sampler[int]):
    """A seeded shuffle of ``range(length)`` per epoch, yielding ``epoch * length + i`` (see ``HRCropDataset``).

    The order of epoch ``e`` depends only on ``seed`` and ``e``. The epoch is what ``set_epoch`` last set or, when
    ``position_of`` is given, what it returns when a pass starts, together with how many items ``start`` of that
    epoch were already drawn: the pass then yields the rest of the epoch's order first and its first ``start``
    items last (a pass keeps its length, which Lightning's distributed wrapper needs; the trainer ends a resumed
    epoch after its remaining batches and never reaches them). ``SRDataModule`` derives both from the trainer's
    step count, so a run resumed from a checkpoint saved anywhere, mid-epoch included, draws exactly what the
    uninterrupted run drew next (Lightning's own epoch number differs after such a resume). Under DDP,
    Lightning's distributed wrapper gives each process its share of each pass.
    """

    def __init__(self, length: int, seed: int = 0, position_of: Callable[[], tuple[int, int]] | None = None) -> None:
        self.length = length
        self.seed = derive_seed(seed, "order")
        self.epoch = 0
        self.start = 0
        self.position_of = position_of

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order ``__iter__`` yields (unless ``position_of`` decides)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[int]:
        if self.position_of is not None:
            epoch, start = self.position_of()
            self.epoch, self.start = int(epoch), min(max(int(start), 0), self.length)
        gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        offset = self.epoch * self.length
        order = torch.randperm(self.length, generator=gen) + offset
        return iter(torch.cat([order[self.start :], order[: self.start]]).tolist())
