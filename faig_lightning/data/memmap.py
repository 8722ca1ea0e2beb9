"""A one-time cache of a folder's training images as one uint8 memory-mapped file (the role LMDB plays in BasicSR).

Decoding a 480x480 PNG per 64x64 crop caps a loader worker at about 100 crops/s; ``data.preload`` removes the
decoding but needs every image in RAM (DIV2K sub-images: ~22 GB). The cache decodes each image once into
``<cache_dir>/<key>.u8`` (all pixels back to back) with an index ``<key>.json`` (names, shapes, offsets), written
last so that a cache is complete or absent; later runs map the file and crop from the page cache. The key hashes
every image's path, size and modification time, so a changed folder gets a new cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from faig_lightning.atomic import atomic_path, atomic_write_text
from faig_lightning.data.images import read_image_raw
from faig_lightning.errors import FaigError

log = logging.getLogger(__name__)


def cache_key(paths: Sequence[str | os.PathLike]) -> str:
    """SHA-256 (24 hex digits) of every image's resolved path, size and modification time, in order."""
    digest = hashlib.sha256()
    for p in paths:
        st = Path(p).stat()
        digest.update(f"{Path(p).resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


def build_memmap(paths: Sequence[str | os.PathLike], cache_dir: str | os.PathLike) -> Path:
    """Decode ``paths`` once into the cache (unless it exists) and return the index file."""
    folder = Path(cache_dir)
    key = cache_key(paths)
    index, data = folder / f"{key}.json", folder / f"{key}.u8"
    if index.is_file() and data.is_file():
        return index
    try:
        entries, offset = [], 0
        with atomic_path(data) as tmp, open(tmp, "wb") as fh:
            for n, path in enumerate(paths, start=1):
                img = read_image_raw(path)
                if img.dtype != np.uint8:
                    raise FaigError(f"the memory-mapped cache holds 8-bit images, but '{path}' is {img.dtype}; use "
                                    "data.memmap=false (16-bit images are read from the files)")
                fh.write(np.ascontiguousarray(img).tobytes())
                entries.append({"name": str(path), "shape": list(img.shape), "offset": offset})
                offset += img.size
                if n % max(1, len(paths) // 10) == 0 or n == len(paths):
                    log.info("memmap cache: %d/%d images decoded (%.1f GB)", n, len(paths), offset / 1e9)
        atomic_write_text(index, json.dumps({"bytes": offset, "images": entries}) + "\n")
    except OSError as err:
        raise FaigError(f"cannot write the memory-mapped image cache in {folder} ({err.strerror or err}) — set "
                        "data.memmap_dir=DIR to a writable folder with room for the decoded images, or use "
                        "data.memmap=false") from None
    return index


def load_memmap(index: str | os.PathLike) -> list[np.ndarray]:
    """The cached images as read-only HWC uint8 views of one memory map, in the order they were cached."""
    meta = json.loads(Path(index).read_text())
    data = np.memmap(Path(index).with_suffix(".u8"), dtype=np.uint8, mode="r", shape=(meta["bytes"],))
    return [data[e["offset"] : e["offset"] + int(np.prod(e["shape"]))].reshape(e["shape"]) for e in meta["images"]]


def memmap_images(paths: Sequence[str | os.PathLike], cache_dir: str | os.PathLike) -> list[np.ndarray]:
    """``paths`` decoded as uint8 arrays backed by the cache (built on first use)."""
    return load_memmap(build_memmap(paths, cache_dir))
