"""Data: image files, the built-in photos, HR training crops, paired evaluation sets and the DataModule.

The command-line tools live in ``faig_lightning.data.subimages`` and ``faig_lightning.data.make_eval_set``.
``SRDataModule`` is imported on first access, so the tools start without loading pytorch_lightning.
"""

from typing import TYPE_CHECKING

from faig_lightning.data.builtin import BUILTIN_PHOTOS, EVAL_PHOTOS, TRAIN_PHOTOS, load_builtin
from faig_lightning.data.eval_set import PAPER_EVAL_DEGRADATIONS, PairedEvalSet, build_eval_set, write_eval_set
from faig_lightning.data.images import IMAGE_EXTENSIONS, list_images, mod_crop, read_image, to_tensor, write_png
from faig_lightning.data.train_set import HRCropDataset

if TYPE_CHECKING:
    from faig_lightning.data.datamodule import SRDataModule

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
    """Lazy ``SRDataModule`` (PEP 562): importing pytorch_lightning takes seconds."""
    if name == "SRDataModule":
        from faig_lightning.data.datamodule import SRDataModule

        return SRDataModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
