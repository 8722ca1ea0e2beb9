"""Training-loader throughput (HR crops per second) of ``HRCropDataset`` for a folder of sub-images.

For each ``num_workers`` it builds the DataLoader the DataModule builds (shuffle, drop_last, persistent workers),
skips the warm-up batches (worker start-up is reported separately) and times the next ``--batches`` batches. The
reference is a naive single-process loop (decode the whole image to float32, crop, augment, stack), reported as
a ratio. Also timed with 0 workers: the same folder decoded into memory first (``data.preload=true``) and the
in-memory built-in photos (``train_source=builtin``); and the one-time uint8 memory-mapped cache
(``data.memmap=true``) with 0 and the most workers.

Without ``--dir`` it writes ``--num-images`` 480x480 PNG sub-images cut at random from the built-in training
photos (real photo content, so PNG decoding costs what DIV2K sub-images cost) into a temporary folder.

    python benchmarks/loader_throughput.py [--dir DIR] [--workers 0 1 2] [--batch-size 16] [--gt-size 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from faig_lightning.data import HRCropDataset, list_images, load_builtin, read_image, write_png
from faig_lightning.data.builtin import TRAIN_PHOTOS
from faig_lightning.data.images import read_image_raw
from faig_lightning.data.memmap import build_memmap, memmap_images
from faig_lightning.data.train_set import augment


def write_subimages(folder: Path, count: int, size: int, seed: int = 0) -> None:
    """``count`` random ``size`` x ``size`` crops of the built-in training photos that are large enough."""
    photos = [img for img in load_builtin(TRAIN_PHOTOS).values() if min(img.shape[:2]) >= size]
    rng = np.random.default_rng(seed)
    for k in range(count):
        img = photos[k % len(photos)]
        top, left = rng.integers(img.shape[0] - size + 1), rng.integers(img.shape[1] - size + 1)
        write_png(folder / f"sub_{k:04d}.png", img[top : top + size, left : left + size])


def time_loader(dataset: HRCropDataset, batch_size: int, workers: int, warmup: int, batches: int) -> tuple:
    """(seconds to the first batch, crops/s over ``batches`` batches after ``warmup`` batches)."""
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
        persistent_workers=workers > 0,
    )  # fmt: skip
    start = time.perf_counter()
    it = iter(loader)
    next(it)
    first = time.perf_counter() - start
    for _ in range(warmup - 1):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return first, batches * batch_size / (time.perf_counter() - start)


def time_naive(paths: list[Path], batch_size: int, gt_size: int, batches: int, seed: int = 0) -> float:
    """Crops/s of the naive loop: full float32 decode, crop, augment, to tensor, stack."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for _ in range(batches):
        crops = []
        for _ in range(batch_size):
            img = read_image(paths[rng.integers(len(paths))])
            top, left = rng.integers(img.shape[0] - gt_size + 1), rng.integers(img.shape[1] - gt_size + 1)
            crop = augment(img[top : top + gt_size, left : left + gt_size], *(rng.random(3) < 0.5))
            crops.append(torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1))))
        torch.stack(crops)
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    """Parse arguments, run every configuration and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="folder of training images (default: temporary sub-images)")
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--size", type=int, default=480)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--gt-size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir
        if folder is None:
            folder = Path(tmp)
            write_subimages(folder, args.num_images, args.size)
        paths = list_images(folder)
        length = (args.warmup + args.batches) * args.batch_size
        print(
            f"{len(paths)} images in {folder}; batch {args.batch_size} x {args.gt_size}px crops; "
            f"{args.batches} timed batches after {args.warmup} warm-up; {os.cpu_count()} CPU cores (shared)"
        )
        naive = time_naive(paths, args.batch_size, args.gt_size, args.batches)
        rows = [("naive loop (reference)", "-", naive)]
        for workers in args.workers:
            dataset = HRCropDataset(paths, args.gt_size, length)
            first, rate = time_loader(dataset, args.batch_size, workers, args.warmup, args.batches)
            rows.append((f"HRCropDataset, folder, num_workers={workers}", f"{first:.2f}", rate))
        images = [read_image_raw(p) for p in paths]
        dataset = HRCropDataset(images, args.gt_size, length)
        first, rate = time_loader(dataset, args.batch_size, 0, args.warmup, args.batches)
        rows.append(("HRCropDataset, folder preloaded, num_workers=0", f"{first:.2f}", rate))
        start = time.perf_counter()
        build_memmap(paths, Path(tmp) / "memmap")
        build_s = time.perf_counter() - start
        for workers in sorted({0, max(args.workers)}):
            dataset = HRCropDataset(memmap_images(paths, Path(tmp) / "memmap"), args.gt_size, length)
            first, rate = time_loader(dataset, args.batch_size, workers, args.warmup, args.batches)
            rows.append((f"HRCropDataset, memmap cache, num_workers={workers}", f"{first:.2f}", rate))
        print(f"memmap cache built once in {build_s:.1f} s")
        photos = load_builtin(TRAIN_PHOTOS)
        dataset = HRCropDataset(list(photos.values()), args.gt_size, length, names=list(photos))
        first, rate = time_loader(dataset, args.batch_size, 0, args.warmup, args.batches)
        rows.append(("HRCropDataset, builtin in memory, num_workers=0", f"{first:.2f}", rate))
    print(f"\n{'loader':<50} {'first batch s':>13} {'crops/s':>9} {'vs naive':>9}")
    for name, first, rate in rows:
        print(f"{name:<50} {first:>13} {rate:>9.0f} {rate / naive:>8.2f}x")


if __name__ == "__main__":
    main()
