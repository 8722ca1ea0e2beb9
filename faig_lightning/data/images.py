"""Image files: find, read (Pillow, any common format -> RGB), write 8-bit PNG atomically, mod-crop, to tensor.

Convention: an image in memory is an HWC RGB ``np.ndarray`` (uint8, uint16 or float32 in [0, 1]); a tensor is
CHW float32 in [0, 1].
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from faig_lightning.atomic import atomic_path
from faig_lightning.errors import FaigError

if TYPE_CHECKING:
    import torch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def is_image_file(path: str | os.PathLike) -> bool:
    """True for a file name with one of ``IMAGE_EXTENSIONS`` (any case) that is not hidden."""
    p = Path(path)
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def list_images(folder: str | os.PathLike) -> list[Path]:
    """All image files under ``folder`` (recursive, hidden files skipped), sorted by path."""
    root = Path(folder)
    if not root.is_dir():
        raise FaigError(f"image folder '{root}' does not exist or is not a folder; check the path")
    files = sorted(p for p in root.rglob("*") if is_image_file(p) and p.is_file())
    if not files:
        raise FaigError(
            f"no images found in '{root}' (searched recursively for {' '.join(IMAGE_EXTENSIONS)}, any case); "
            "put the images there or point to the folder that holds them"
        )
    return files


def read_image_raw(path: str | os.PathLike) -> np.ndarray:
    """Read an image as HWC RGB with its integer depth kept: uint8, or uint16 for 16-bit greyscale files.

    Greyscale is repeated to 3 channels; palette/CMYK/YCbCr images are converted to RGB; alpha is dropped.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "F":
                raise FaigError(
                    f"image '{path}' holds 32-bit float pixels, which have no defined [0, 1] range; "
                    "save it as an 8- or 16-bit image"
                )
            if im.mode in _SIXTEEN_BIT_MODES:
                grey = np.clip(np.asarray(im, dtype=np.int64), 0, 65535).astype(np.uint16)
                return np.repeat(grey[:, :, None], 3, axis=2)
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise FaigError(f"cannot read image '{path}' ({err}) — replace or delete the file") from err


def to_float(img: np.ndarray) -> np.ndarray:
    """Integer image -> float32 in [0, 1] (divided by the dtype's maximum); float input is cast to float32."""
    if np.issubdtype(img.dtype, np.integer):
        return img.astype(np.float32) / np.float32(np.iinfo(img.dtype).max)
    return img.astype(np.float32, copy=False)


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as float32 HWC RGB in [0, 1]; an unreadable file raises FaigError naming it."""
    return to_float(read_image_raw(path))


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, SyntaxError, ValueError) as err:
        raise FaigError(f"cannot read image '{path}' ({err}) — replace or delete the file") from err
    return height, width


def to_uint8(img: np.ndarray | torch.Tensor) -> np.ndarray:
    """HWC array (uint8, or float in [0, 1]) or CHW tensor in [0, 1] -> HWC uint8 (rounded, clipped)."""
    if not isinstance(img, np.ndarray):  # a torch tensor (torch is imported only where tensors are made)
        if img.dim() != 3:
            raise FaigError(f"expected a CHW image tensor, got shape {tuple(img.shape)}")
        img = img.detach().cpu().permute(1, 2, 0).numpy()
    if img.ndim != 3 or img.shape[2] not in (1, 3):
        raise FaigError(f"expected an HWC image with 1 or 3 channels, got shape {img.shape}")
    if img.dtype == np.uint8:
        return img
    if np.issubdtype(img.dtype, np.integer):
        img = to_float(img)
    return np.clip(np.rint(np.asarray(img, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def write_png(path: str | os.PathLike, img: np.ndarray | torch.Tensor) -> Path:
    """Write an 8-bit PNG atomically (see ``to_uint8`` for accepted inputs); returns ``path``."""
    pixels = to_uint8(img)
    pil = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    with atomic_path(path) as tmp:
        pil.save(tmp, format="PNG")
    return Path(path)


def mod_crop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop an HWC image's bottom/right edges so that H and W are multiples of ``scale``."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HWC image (uint8/uint16 or float in [0, 1]) -> contiguous CHW float32 tensor in [0, 1]."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(to_float(img).transpose(2, 0, 1)))
