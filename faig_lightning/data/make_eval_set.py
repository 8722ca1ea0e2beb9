"""Turn any GT folder into a paired evaluation set on disk: ``GTmod{scale}/``, ``clean/``, ``blur/``, ``noise/``.

The official ``generate_lr.py`` wrote only the blur and noise inputs (unseeded noise); this also writes the clean
LR set the IG baseline needs, with seeded noise (image ``i`` in name order uses ``seed + i``), every file a PNG
named after its GT's stem. Output goes to a temporary folder renamed to ``out_dir`` when complete. The result is
identical to what ``build_eval_set(gt_dir=...)`` generates and caches for the same arguments. The levels default to
the paper's (``faig_lightning.degradations.PAPER_LEVELS``).

Usage::

    python -m faig_lightning.data.make_eval_set gt_dir=datasets/Set14/GTmod12 out_dir=datasets/Set14_faig \\
        scale=2 seed=0
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Sequence
from pathlib import Path

from faig_lightning.data.cli_args import REQUIRED, run_cli
from faig_lightning.data.eval_set import eval_degradations, images_by_name, write_eval_set
from faig_lightning.degradations import PAPER_LEVELS
from faig_lightning.errors import FaigError

OVERRIDE_PREFIX = "data.eval."
"""Config path of ``SRDataModule``'s ``eval`` argument in ``conf/train.yaml`` (used in the printed overrides)."""


def make_eval_set(
    gt_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    scale: int = 2,
    downsample: str = PAPER_LEVELS.downsample,
    blur_sigma: float = PAPER_LEVELS.blur_sigma,
    blur_kernel_size: int = PAPER_LEVELS.kernel_size,
    noise_sigma: float = PAPER_LEVELS.noise_sigma,
    seed: int = 0,
) -> dict[str, Path]:
    """Write the four folders and print the Hydra overrides that evaluate on them; returns their paths. The levels
    default to the paper's (``PAPER_LEVELS``)."""
    gt_root, out_root = Path(gt_dir).resolve(), Path(out_dir).resolve()
    if out_root == gt_root or gt_root in out_root.parents:
        raise FaigError(f"out_dir '{out_root}' lies inside gt_dir '{gt_root}': later runs would read the generated "
                        "images as ground truth; choose an out_dir outside gt_dir")
    if not isinstance(blur_kernel_size, int) or isinstance(blur_kernel_size, bool):
        raise FaigError(f"blur_kernel_size must be an odd int such as 21, got {blur_kernel_size!r}")
    degradations = eval_degradations(blur_sigma, blur_kernel_size, noise_sigma)
    gt_folder = f"GTmod{scale}"
    out = write_eval_set(images_by_name(gt_dir), degradations, scale, downsample, seed, out_dir, gt_folder=gt_folder)
    folders = {"gt": out / gt_folder, **{deg: out / deg for deg in degradations}}
    print(f"wrote a paired x{scale} evaluation set to {out}: {', '.join(p.name for p in folders.values())}")
    print(f"evaluate on it (at scale {scale}) with these overrides:")
    print("  " + " ".join([*hydra_overrides(folders), f"scale={scale}"]))
    return folders


def hydra_overrides(folders: dict[str, Path]) -> list[str]:
    """Shell-quoted Hydra overrides pointing the eval config at ``folders`` (``++`` works whether
    ``degraded_dirs`` is null, empty or already set)."""
    gt = f"\"{OVERRIDE_PREFIX}gt_dir='{folders['gt'].resolve()}'\""
    lq = [f"\"++{OVERRIDE_PREFIX}degraded_dirs.{deg}='{p.resolve()}'\"" for deg, p in folders.items() if deg != "gt"]
    return [gt, *lq]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``key=value`` arguments)."""
    defaults = {name: REQUIRED if p.default is p.empty else p.default
                for name, p in inspect.signature(make_eval_set).parameters.items()}
    return run_cli("faig-make-evalset", "faig_lightning.data.make_eval_set", __doc__ or "",
                   defaults, make_eval_set, argv)


if __name__ == "__main__":
    raise SystemExit(main())
