"""Paired evaluation sets: a GT image and one LR image per named degradation (e.g. clean / blur / noise).

Built from folders on disk (paired by file stem) or generated from GT images with the deterministic form of
``DegradationPipeline`` and cached as PNG files, so every run evaluates on bit-identical 8-bit LR inputs.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from faig_lightning import degradations as degradations_module
from faig_lightning.atomic import atomic_write_text
from faig_lightning.data.builtin import EVAL_PHOTOS, load_builtin
from faig_lightning.data.images import (
    image_size,
    list_images,
    mod_crop,
    read_image,
    read_image_raw,
    to_tensor,
    to_uint8,
    write_png,
)
from faig_lightning.degradations import PAPER_LEVELS, DegradationPipeline
from faig_lightning.errors import FaigError
from faig_lightning.run_folder import RunFolder


def eval_degradations(
    blur_sigma: float = PAPER_LEVELS.blur_sigma,
    blur_kernel_size: int = PAPER_LEVELS.kernel_size,
    noise_sigma: float = PAPER_LEVELS.noise_sigma,
) -> dict[str, dict]:
    """The paper's three test inputs at these levels (``PAPER_LEVELS`` by default): ``clean`` (xS), ``blur``
    (Gaussian blur then xS) and ``noise`` (xS then Gaussian noise), as ``DegradationPipeline`` arguments."""
    return {
        "clean": {},
        "blur": {"blur": {"kernel_size": blur_kernel_size, "sigma": float(blur_sigma)}},
        "noise": {"noise": {"sigma": float(noise_sigma)}},
    }


PAPER_EVAL_DEGRADATIONS: dict[str, dict] = eval_degradations()
"""The paper's test inputs: clean xS, Gaussian blur (``PAPER_LEVELS``) then xS, xS then noise (``PAPER_LEVELS``)."""

_CACHE_FORMAT = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAX_LISTED = 5


def to_plain(obj: object) -> object:
    """Recursively turn mappings (e.g. OmegaConf DictConfig) into dicts and sequences into lists."""
    if isinstance(obj, Mapping):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, Sequence) and not isinstance(obj, (str, bytes)):
        return [to_plain(v) for v in obj]
    return obj


def _specs(degradations: Mapping[str, Mapping | None]) -> dict[str, dict]:
    """Plain ``{name: pipeline kwargs}``; a null spec means ``{}`` (clean downsampling)."""
    out = {}
    for deg, spec in degradations.items():
        spec = to_plain(spec) if spec is not None else {}
        if not isinstance(spec, dict):
            raise FaigError(
                f"degradation '{deg}' must map to DegradationPipeline arguments such as "
                f"{{'blur': {{'sigma': 2.0}}}}, got {spec!r}; use {{}} for clean downsampling"
            )
        out[str(deg)] = spec
    return out


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def images_by_name(folder: str | os.PathLike, scale_suffix: int | None = None, known: Mapping | None = None) -> dict:
    """Map each image's name (path relative to ``folder`` without extension) to its path.

    With ``scale_suffix`` a name such as ``baboonx2`` or ``baboon_x2`` is read as ``baboon`` when only the
    latter is in ``known`` (the LR naming of some Set14 copies).
    """
    root = Path(folder)
    out: dict[str, Path] = {}
    for path in list_images(root):
        name = path.relative_to(root).with_suffix("").as_posix()
        if scale_suffix is not None and known is not None and name not in known:
            stripped = re.sub(rf"[_-]?x{scale_suffix}$", "", name, flags=re.IGNORECASE)
            name = stripped if stripped in known else name
        if name in out:
            raise FaigError(
                f"'{out[name]}' and '{path}' have the same name '{name}'; images are paired by name "
                "(extension ignored), so keep only one of them"
            )
        out[name] = path
    return dict(sorted(out.items()))


class PairedEvalSet(Dataset):
    """GT images paired with LR images per degradation; items are read from disk on access.

    Item: ``{"name": str, "gt": (3,H,W), "lq": {degradation: (3,H/scale,W/scale)}}``, float32 in [0, 1], the GT
    mod-cropped to a multiple of ``scale``. Sizes are checked once, from the file headers, at construction.
    """

    def __init__(
        self,
        names: Sequence[str],
        gt_paths: Sequence[str | os.PathLike],
        lq_paths: Mapping[str, Sequence[str | os.PathLike]],
        scale: int,
    ) -> None:
        if not names:
            raise FaigError("an evaluation set needs at least one image")
        if not lq_paths:
            raise FaigError("an evaluation set needs at least one degradation (LR folder or generated)")
        self.names = list(names)
        self.gt_paths = [Path(p) for p in gt_paths]
        self.lq_paths = {deg: [Path(p) for p in paths] for deg, paths in lq_paths.items()}
        self.scale = scale
        for deg, paths in {"gt": self.gt_paths, **self.lq_paths}.items():
            if len(paths) != len(self.names):
                raise FaigError(f"'{deg}' has {len(paths)} images for {len(self.names)} names; give one per name")
        for i, gt_path in enumerate(self.gt_paths):
            h, w = image_size(gt_path)
            h, w = h - h % scale, w - w % scale
            for deg, paths in self.lq_paths.items():
                lh, lw = image_size(paths[i])
                if (lh * scale, lw * scale) != (h, w):
                    raise FaigError(
                        f"LR image '{paths[i]}' ({deg}) is {lh}x{lw}; times scale {scale} that is "
                        f"{lh * scale}x{lw * scale}, but its GT '{gt_path}' mod-cropped to a multiple of {scale} "
                        f"is {h}x{w}; check the scale and that the LR image was made from this GT"
                    )

    @property
    def degradation_names(self) -> list[str]:
        """Names of the degradations, in order."""
        return list(self.lq_paths)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict:
        gt = mod_crop(read_image(self.gt_paths[index]), self.scale)
        lq = {deg: to_tensor(read_image(paths[index])) for deg, paths in self.lq_paths.items()}
        return {"name": self.names[index], "gt": to_tensor(gt), "lq": lq}

    def with_degradations(self, other: PairedEvalSet, order: Sequence[str]) -> PairedEvalSet:
        """This set's GT with the LR folders of both sets (matched by image name), degradations in ``order``."""
        missing = sorted(set(self.names) - set(other.names))
        if missing:
            raise FaigError(f"cannot merge evaluation sets: images {_listing(missing)} are missing in one of them")
        lq = dict(self.lq_paths)
        for deg, paths in other.lq_paths.items():
            by_name = dict(zip(other.names, paths, strict=True))
            lq[deg] = [by_name[n] for n in self.names]
        return PairedEvalSet(self.names, self.gt_paths, {deg: lq[deg] for deg in order}, self.scale)

    @classmethod
    def from_folders(
        cls, gt_dir: str | os.PathLike, degraded_dirs: Mapping[str, str | os.PathLike], scale: int
    ) -> PairedEvalSet:
        """Pair a GT folder with one LR folder per degradation by file stem (``baboon.png`` ~ ``baboon.jpg``)."""
        gt = images_by_name(gt_dir)
        names = list(gt)
        lq: dict[str, list[Path]] = {}
        problems = []
        for deg, folder in degraded_dirs.items():
            files = images_by_name(folder, scale_suffix=scale, known=gt)
            missing = [n for n in names if n not in files]
            extra = sorted(n for n in files if n not in gt)
            if missing:
                problems.append(f"'{folder}' ({deg}) lacks {len(missing)} GT name(s): {_listing(missing)}")
            if extra:
                problems.append(f"'{folder}' ({deg}) has {len(extra)} name(s) not in the GT: {_listing(extra)}")
            lq[str(deg)] = [files[n] for n in names if n in files]
        if problems:
            raise FaigError(
                f"LR folders do not pair with the GT folder '{gt_dir}': " + "; ".join(problems) + ". Files are "
                "paired by name (path without extension), so every LR folder needs exactly the GT's names"
            )
        return cls(names, [gt[n] for n in names], lq, scale)

    @classmethod
    def generate(
        cls,
        gt_images: Mapping[str, np.ndarray | str | os.PathLike],
        degradations: Mapping[str, Mapping | None],
        scale: int,
        downsample: str = PAPER_LEVELS.downsample,
        seed: int = 0,
        cache_dir: str | os.PathLike = ".cache/eval_sets",
    ) -> PairedEvalSet:
        """Degrade GT images (arrays or file paths) once, cache the PNGs, and load them from the cache.

        Image ``i`` (in mapping order) gets ``DegradationPipeline(scale, downsample, quantize=True, **spec)
        .deterministic(gt, seed=seed + i)`` per degradation, from its GT quantised to 8 bit and mod-cropped. The
        cache folder ``cache_dir/<key>`` is keyed by a hash of the names and contents, specs, scale, downsample,
        seed and the degradation code; it is written under a temporary name and renamed when complete. Items
        come back sorted by name.
        """
        specs = _specs(degradations)
        key = _cache_key(gt_images, specs, scale, downsample, seed)
        folder = Path(cache_dir) / key
        if not folder.is_dir():
            try:
                write_eval_set(gt_images, specs, scale, downsample, seed, folder, gt_folder="gt")
            except (FaigError, OSError):
                if not folder.is_dir():
                    raise
                # another job built the same cache first (parallel jobs on an empty cache): same key, same files
        return cls.from_folders(folder / "gt", {deg: folder / deg for deg in specs}, scale)


def _digest(src: np.ndarray | str | os.PathLike) -> str:
    h = hashlib.sha256()
    if isinstance(src, np.ndarray):
        h.update(f"{src.shape}{src.dtype}".encode())
        h.update(np.ascontiguousarray(src).tobytes())
    else:
        h.update(Path(src).read_bytes())
    return h.hexdigest()


def _cache_key(
    gt_images: Mapping[str, np.ndarray | str | os.PathLike], specs: dict, scale: int, downsample: str, seed: int
) -> str:
    payload = {
        "format": _CACHE_FORMAT,
        "images": [[name, _digest(src)] for name, src in gt_images.items()],
        "specs": specs,
        "scale": scale,
        "downsample": downsample,
        "seed": seed,
        "pipeline": hashlib.sha256(Path(degradations_module.__file__).read_bytes()).hexdigest(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]


def write_eval_set(
    gt_images: Mapping[str, np.ndarray | str | os.PathLike],
    degradations: Mapping[str, Mapping | None],
    scale: int,
    downsample: str,
    seed: int,
    out_dir: str | os.PathLike,
    gt_folder: str = "gt",
) -> Path:
    """Write ``out_dir/<gt_folder>/<name>.png`` (8-bit, mod-cropped GT) and ``out_dir/<degradation>/<name>.png``.

    Everything goes into a temporary sibling folder that is renamed to ``out_dir`` only when complete, so an
    interrupted run never leaves a folder that looks finished. ``out_dir`` must not exist yet.
    """
    out = Path(out_dir)
    if out.exists():
        raise FaigError(f"output folder '{out}' already exists; delete it or choose another out_dir")
    specs = _specs(degradations)
    for deg in specs:
        if not _NAME_RE.match(deg) or deg == gt_folder:
            raise FaigError(
                f"degradation name '{deg}' must be a plain folder name (letters, digits, '_', '-', '.') other "
                f"than '{gt_folder}'; rename it"
            )
    pipes = {
        deg: DegradationPipeline(scale=scale, downsample=downsample, quantize=True, **spec)
        for deg, spec in specs.items()
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        for i, (name, src) in enumerate(gt_images.items()):
            gt8 = mod_crop(to_uint8(src if isinstance(src, np.ndarray) else read_image_raw(src)), scale)
            write_png(tmp / gt_folder / f"{name}.png", gt8)
            hr = to_tensor(gt8).unsqueeze(0)
            for deg, pipe in pipes.items():
                write_png(tmp / deg / f"{name}.png", pipe.deterministic(hr, seed=seed + i)[0])
        meta = {
            "names": list(gt_images),
            "degradations": specs,
            "scale": scale,
            "downsample": downsample,
            "seed": seed,
            "seed_rule": "image i (in name order) uses seed + i",
            "gt_folder": gt_folder,
        }
        atomic_write_text(tmp / "eval_set.json", json.dumps(meta, indent=2) + "\n")
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def build_eval_set(
    gt_dir: str | os.PathLike | None = None,
    degraded_dirs: Mapping[str, str | os.PathLike] | None = None,
    degradations: Mapping[str, Mapping | None] | None = None,
    scale: int = 2,
    downsample: str = PAPER_LEVELS.downsample,
    seed: int = 0,
    cache_dir: str | os.PathLike = ".cache/eval_sets",
    photos: Sequence[str] = EVAL_PHOTOS,
) -> PairedEvalSet:
    """The one entry point for evaluation data.

    - ``degraded_dirs`` given: LR folders paired with ``gt_dir``; degradations named in ``degradations`` but
      without a folder are generated from ``gt_dir`` (e.g. a generated ``clean`` set next to Set14 blur/noise).
    - otherwise: GT from ``gt_dir`` (or the built-in ``photos`` when ``gt_dir`` is None) with every degradation in
      ``degradations`` generated and cached. ``degradations=None`` means ``PAPER_EVAL_DEGRADATIONS``.
    """
    specs = _specs(PAPER_EVAL_DEGRADATIONS if degradations is None else degradations)
    dirs = {str(k): v for k, v in (degraded_dirs or {}).items() if v}  # null entries: generate
    if not specs and not dirs:
        raise FaigError("no evaluation degradations: set eval.degradations and/or eval.degraded_dirs")
    if dirs:
        if gt_dir is None:
            raise FaigError("eval.degraded_dirs needs eval.gt_dir, the GT folder that the LR images pair with")
        folder_set = PairedEvalSet.from_folders(gt_dir, dirs, scale)
        todo = {deg: spec for deg, spec in specs.items() if deg not in dirs}
        if not todo:
            return folder_set
        gt = dict(zip(folder_set.names, folder_set.gt_paths, strict=True))
        generated = PairedEvalSet.generate(gt, todo, scale, downsample, seed, cache_dir)
        return folder_set.with_degradations(generated, list(specs) + [deg for deg in dirs if deg not in specs])
    gt_images = load_builtin(photos) if gt_dir is None else images_by_name(gt_dir)
    return PairedEvalSet.generate(gt_images, specs, scale, downsample, seed, cache_dir)


def run_eval_set(run_dir: str | os.PathLike) -> PairedEvalSet:
    """The evaluation set a finished ``faig-train`` or ``faig-attribute`` run used, from its saved Hydra config
    (``data.eval`` or ``eval``, and ``scale``); relative paths resolve against the current folder."""
    from omegaconf import OmegaConf

    cfg = RunFolder(run_dir).read_hydra_config()
    node = OmegaConf.select(cfg, "data.eval") or OmegaConf.select(cfg, "eval")
    kwargs = OmegaConf.to_container(node, resolve=True)
    return build_eval_set(scale=int(cfg.scale), **{k: v for k, v in kwargs.items() if k in EVAL_SET_KEYS})


def run_degradation(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The target's degradation pipeline (``DegradationPipeline`` arguments) of a finished run, from its saved
    Hydra config."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(RunFolder(run_dir).read_hydra_config().degradation, resolve=True)


EVAL_SET_KEYS = tuple(k for k in inspect.signature(build_eval_set).parameters if k != "scale")
"""The keyword arguments of ``build_eval_set`` that a config's ``eval`` node may set."""
