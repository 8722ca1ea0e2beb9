"""Cut big training images into overlapping sub-images (BasicSR ``extract_subimages``: DIV2K -> 480x480, step 240).

Crop origins along each axis are ``0, step, 2*step, ...`` while a full crop fits, plus one crop snapped to the
far border when the uncovered remainder is larger than ``thresh_size``. Image ``a/b.png`` gives
``out_dir/a/b_s001.png, b_s002.png, ...`` in row-major order. Everything is written into a temporary sibling
folder renamed to ``out_dir`` when complete, so an interrupted run leaves no ``out_dir`` and old and new crops
never mix: ``out_dir`` must not exist yet (or be empty).

Usage::

    python -m faig_lightning.data.subimages in_dir=datasets/DIV2K_train_HR out_dir=datasets/DIV2K_train_HR_sub \\
        crop_size=480 step=240 thresh_size=0 workers=2
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from functools import partial
from itertools import product
from multiprocessing import Pool
from pathlib import Path

from faig_lightning.data.cli_args import REQUIRED, run_cli
from faig_lightning.data.images import image_size, list_images, read_image_raw, to_uint8, write_png
from faig_lightning.errors import FaigError


def crop_positions(length: int, crop_size: int, step: int, thresh_size: int = 0) -> list[int]:
    """Crop origins along one axis of ``length`` pixels (empty when the axis is shorter than ``crop_size``)."""
    if length < crop_size:
        return []
    positions = list(range(0, length - crop_size + 1, step))
    if length - (positions[-1] + crop_size) > thresh_size:
        positions.append(length - crop_size)
    return positions


def extract_image(path: Path, in_dir: Path, out_dir: Path, crop_size: int, step: int, thresh_size: int) -> int:
    """Write one image's sub-images; returns how many (0 when the image is smaller than ``crop_size``)."""
    img = to_uint8(read_image_raw(path))
    rel = path.relative_to(in_dir).with_suffix("")
    rows = crop_positions(img.shape[0], crop_size, step, thresh_size)
    cols = crop_positions(img.shape[1], crop_size, step, thresh_size)
    for index, (y, x) in enumerate(product(rows, cols), start=1):
        write_png(out_dir / rel.parent / f"{rel.name}_s{index:03d}.png", img[y : y + crop_size, x : x + crop_size])
    return len(rows) * len(cols)


def extract_subimages(
    in_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    crop_size: int = 480,
    step: int = 240,
    thresh_size: int = 0,
    workers: int = 2,
) -> dict[str, object]:
    """Cut every image under ``in_dir`` into sub-images under ``out_dir`` with ``workers`` processes.

    Returns ``{"images": n, "crops": n, "skipped": [images smaller than crop_size]}`` and prints progress.
    """
    if crop_size < 1 or step < 1 or thresh_size < 0 or workers < 0:
        raise FaigError(
            f"need crop_size >= 1, step >= 1, thresh_size >= 0, workers >= 0; got crop_size={crop_size}, "
            f"step={step}, thresh_size={thresh_size}, workers={workers}"
        )
    src, dst = Path(in_dir).resolve(), Path(out_dir).resolve()
    if dst == src or src in dst.parents:
        raise FaigError(f"out_dir '{dst}' lies inside in_dir '{src}'; choose an out_dir outside it")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FaigError(f"out_dir '{dst}' already exists and is not empty: new crops would mix with old ones; delete "
                        "it or choose another out_dir")
    files = list_images(src)
    largest = max(min(image_size(p)) for p in files)  # the header of each file: a non-image fails here, named
    if largest < crop_size:
        raise FaigError(f"every image in '{src}' is smaller than crop_size={crop_size} (the largest square that fits "
                        f"is {largest}x{largest}) — use crop_size={largest} or less, or other images")
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    try:
        counts = _extract_all(files, src, tmp, crop_size, step, thresh_size, workers)
        if dst.exists():
            dst.rmdir()
        tmp.rename(dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    skipped = [str(p.relative_to(src)) for p, n in zip(files, counts, strict=True) if n == 0]
    print(f"wrote {sum(counts)} sub-images of {crop_size}x{crop_size} from {len(files)} images to {dst}")
    if skipped:
        print(f"skipped {len(skipped)} image(s) smaller than {crop_size}: {skipped[:5]}")
    return {"images": len(files), "crops": sum(counts), "skipped": skipped}


def _extract_all(files: list[Path], src: Path, dst: Path, crop_size: int, step: int, thresh_size: int,
                 workers: int) -> list[int]:
    """Crop every file into ``dst`` with ``workers`` processes; the number of crops per file, in order."""
    job = partial(extract_image, in_dir=src, out_dir=dst, crop_size=crop_size, step=step, thresh_size=thresh_size)
    every = max(1, len(files) // 20)
    counts: list[int] = []

    def report(n: int) -> None:
        counts.append(n)
        if len(counts) % every == 0 or len(counts) == len(files):
            print(f"  {len(counts)}/{len(files)} images, {sum(counts)} sub-images", flush=True)

    if workers <= 1:
        for path in files:
            report(job(path))
    else:
        with Pool(workers) as pool:
            for n in pool.imap(job, files):
                report(n)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``key=value`` arguments)."""
    defaults = {"in_dir": REQUIRED, "out_dir": REQUIRED, "crop_size": 480, "step": 240, "thresh_size": 0, "workers": 2}
    return run_cli("faig-extract-subimages", "faig_lightning.data.subimages", __doc__ or "",
                   defaults, extract_subimages, argv)


if __name__ == "__main__":
    raise SystemExit(main())
