"""Data: image files, the built-in photos, HR training crops, paired evaluation sets and the DataModule.

The command-line tools live in ``faig_lightning.data.subimages`` and ``faig_lightning.data.make_eval_set``.
Every name is imported on first access (PEP 562), so a tool loads only what it uses: ``faig-extract-subimages``
starts without torch, and nothing here loads pytorch_lightning until ``SRDataModule`` is asked for.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from faig_lightning.data.builtin import BUILTIN_PHOTOS, EVAL_PHOTOS, TRAIN_PHOTOS, load_builtin
    from faig_lightning.data.datamodule import SRDataModule
    from faig_lightning.data.eval_set import PAPER_EVAL_DEGRADATIONS, PairedEvalSet, build_eval_set, write_eval_set
    from faig_lightning.data.images import IMAGE_EXTENSIONS, list_images, mod_crop, read_image, to_tensor, write_png
    from faig_lightning.data.train_set import HRCropDataset

_HOMES = {
    "builtin": ("BUILTIN_PHOTOS", "EVAL_PHOTOS", "TRAIN_PHOTOS", "load_builtin"),
    "datamodule": ("SRDataModule",),
    "eval_set": ("PAPER_EVAL_DEGRADATIONS", "PairedEvalSet", "build_eval_set", "write_eval_set"),
    "images": ("IMAGE_EXTENSIONS", "list_images", "mod_crop", "read_image", "to_tensor", "write_png"),
    "train_set": ("HRCropDataset",),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "BUILTIN_PHOTOS",
    "EVAL_PHOTOS",
    "IMAGE_EXTENSIONS",
    "PAPER_EVAL_DEGRADATIONS",
    "TRAIN_PHOTOS",
    "HRCropDataset",
    "PairedEvalSet",
    "SRDataModule",
    "build_eval_set",
    "list_images",
    "load_builtin",
    "mod_crop",
    "read_image",
    "to_tensor",
    "write_eval_set",
    "write_png",
]


def __getattr__(name: str) -> object:
    """Import ``name`` from its module on first access."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value
