"""Paired evaluation sets: folder pairing, generated + cached sets, build_eval_set and the make_eval_set CLI."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import rand_img, save
from hydra.core.override_parser.overrides_parser import OverridesParser
from PIL import Image

from faig_lightning.data import eval_set as eval_set_module
from faig_lightning.data import make_eval_set as make_eval_set_module
from faig_lightning.data.eval_set import PAPER_EVAL_DEGRADATIONS, PairedEvalSet, build_eval_set
from faig_lightning.degradations import DegradationPipeline
from faig_lightning.errors import FaigError


def load(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255


def expected_lq(gt: np.ndarray, spec: dict, seed: int, scale: int = 2) -> torch.Tensor:
    """Reference: the pipeline's deterministic output on the mod-cropped 8-bit GT."""
    h, w = gt.shape[0] // scale * scale, gt.shape[1] // scale * scale
    hr = torch.from_numpy(gt[:h, :w]).permute(2, 0, 1).float().unsqueeze(0) / 255
    return DegradationPipeline(scale=scale, quantize=True, **spec).deterministic(hr, seed=seed)[0]


GT_SIZES = {"baboon": (24, 30), "comic": (27, 23), "zebra": (22, 22)}


@pytest.fixture
def gt_images() -> dict[str, np.ndarray]:
    return {name: rand_img(h, w, seed=k) for k, (name, (h, w)) in enumerate(GT_SIZES.items())}


@pytest.fixture
def gt_dir(tmp_path: Path, gt_images: dict[str, np.ndarray]) -> Path:
    for name, img in gt_images.items():
        save(tmp_path / "GT" / f"{name}.png", img)
    return tmp_path / "GT"


def write_lr(folder: Path, gt_images: dict[str, np.ndarray], ext: str = "png", suffix: str = "") -> None:
    for k, (name, img) in enumerate(gt_images.items()):
        h, w = img.shape[0] // 2, img.shape[1] // 2
        save(folder / f"{name}{suffix}.{ext}", rand_img(h, w, seed=100 + k))


# ---------------------------------------------------------------- from_folders


def test_folders_pair_by_stem(tmp_path: Path, gt_dir: Path, gt_images: dict) -> None:
    write_lr(tmp_path / "blur", gt_images, ext="bmp")
    write_lr(tmp_path / "noise", gt_images, suffix="x2")  # Set14-style LR names
    ds = PairedEvalSet.from_folders(gt_dir, {"blur": tmp_path / "blur", "noise": tmp_path / "noise"}, scale=2)
    assert ds.names == ["baboon", "comic", "zebra"] and ds.degradation_names == ["blur", "noise"] and len(ds) == 3
    item = ds[1]
    assert item["name"] == "comic"
    assert torch.equal(item["gt"], load(gt_dir / "comic.png")[:, :26, :22])  # mod-cropped
    assert torch.equal(item["lq"]["blur"], load(tmp_path / "blur/comic.bmp"))
    assert torch.equal(item["lq"]["noise"], load(tmp_path / "noise/comicx2.png"))
    assert item["lq"]["noise"].shape == (3, 13, 11)


def test_folders_unpaired_names_listed(tmp_path: Path, gt_dir: Path, gt_images: dict) -> None:
    write_lr(tmp_path / "blur", {k: gt_images[k] for k in ["baboon"]})
    save(tmp_path / "blur/lenna.png", rand_img(4, 4))
    with pytest.raises(
        FaigError, match=r"lacks 2 GT name\(s\): 'comic', 'zebra'.*not in the GT: 'lenna'.*paired by name"
    ):
        PairedEvalSet.from_folders(gt_dir, {"blur": tmp_path / "blur"}, scale=2)


def test_folders_wrong_lr_size(tmp_path: Path, gt_dir: Path, gt_images: dict) -> None:
    write_lr(tmp_path / "blur", gt_images)
    save(tmp_path / "blur/comic.png", rand_img(14, 11))
    with pytest.raises(FaigError, match=r"comic\.png' \(blur\) is 14x11.*28x22.*is 26x22"):
        PairedEvalSet.from_folders(gt_dir, {"blur": tmp_path / "blur"}, scale=2)


def test_folders_duplicate_stem(tmp_path: Path, gt_dir: Path) -> None:
    save(gt_dir / "zebra.jpg", rand_img(22, 22))
    with pytest.raises(FaigError, match=r"same name 'zebra'.*keep only one"):
        PairedEvalSet.from_folders(gt_dir, {}, scale=2)


# ---------------------------------------------------------------- generate


def test_generated_set_matches_pipeline_and_is_cached(tmp_path: Path, gt_images: dict, monkeypatch) -> None:
    ds = PairedEvalSet.generate(gt_images, PAPER_EVAL_DEGRADATIONS, scale=2, seed=5, cache_dir=tmp_path / "c1")
    assert ds.names == list(gt_images) and ds.degradation_names == ["clean", "blur", "noise"]
    for i, name in enumerate(gt_images):
        item = ds[i]
        h, w = item["gt"].shape[1:]
        assert (h, w) == (GT_SIZES[name][0] // 2 * 2, GT_SIZES[name][1] // 2 * 2)
        assert torch.equal(item["gt"], torch.from_numpy(gt_images[name][:h, :w]).permute(2, 0, 1) / 255)
        for deg, spec in PAPER_EVAL_DEGRADATIONS.items():
            ref = expected_lq(gt_images[name], spec, seed=5 + i)  # seed rule: seed + image index
            assert item["lq"][deg].shape == ref.shape
            assert (item["lq"][deg] - ref).abs().max() <= 0.5 / 255
        assert (item["lq"]["blur"] - item["lq"]["clean"]).abs().max() > 0.05
        assert (item["lq"]["noise"] - item["lq"]["clean"]).abs().mean() > 0.03
    (folder,) = (tmp_path / "c1").iterdir()
    meta = json.loads((folder / "eval_set.json").read_text())
    assert meta["seed"] == 5 and meta["degradations"]["blur"] == {"blur": {"kernel_size": 21, "sigma": 2.0}}

    # second build: a cache hit, nothing rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in folder.rglob("*")}

    def no_write(*args, **kwargs):
        raise AssertionError("cache miss")

    monkeypatch.setattr(eval_set_module, "write_eval_set", no_write)
    again = PairedEvalSet.generate(gt_images, PAPER_EVAL_DEGRADATIONS, scale=2, seed=5, cache_dir=tmp_path / "c1")
    assert again.lq_paths == ds.lq_paths
    assert {p: p.stat().st_mtime_ns for p in folder.rglob("*")} == mtimes
    with pytest.raises(AssertionError, match="cache miss"):  # other seed -> other key
        PairedEvalSet.generate(gt_images, PAPER_EVAL_DEGRADATIONS, scale=2, seed=6, cache_dir=tmp_path / "c1")


def test_generation_is_deterministic(tmp_path: Path, gt_images: dict) -> None:
    a = PairedEvalSet.generate(gt_images, PAPER_EVAL_DEGRADATIONS, scale=2, seed=0, cache_dir=tmp_path / "a")
    b = PairedEvalSet.generate(gt_images, PAPER_EVAL_DEGRADATIONS, scale=2, seed=0, cache_dir=tmp_path / "b")
    c = PairedEvalSet.generate(gt_images, PAPER_EVAL_DEGRADATIONS, scale=2, seed=1, cache_dir=tmp_path / "c")
    for deg in PAPER_EVAL_DEGRADATIONS:
        for pa, pb, pc in zip(a.lq_paths[deg], b.lq_paths[deg], c.lq_paths[deg], strict=True):
            assert pa.read_bytes() == pb.read_bytes()
            assert (pa.read_bytes() == pc.read_bytes()) == (deg != "noise")  # the seed only moves the noise


def test_interrupted_generation_leaves_nothing(tmp_path: Path, gt_images: dict, monkeypatch) -> None:
    calls = []

    def flaky(self, hr, seed=0):
        calls.append(seed)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return torch.zeros(hr.shape[0], 3, hr.shape[2] // 2, hr.shape[3] // 2)

    monkeypatch.setattr(DegradationPipeline, "deterministic", flaky)
    with pytest.raises(KeyboardInterrupt):
        PairedEvalSet.generate(gt_images, PAPER_EVAL_DEGRADATIONS, scale=2, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_bad_degradation_name(tmp_path: Path, gt_images: dict) -> None:
    with pytest.raises(FaigError, match="'gt' must be a plain folder name"):
        PairedEvalSet.generate(gt_images, {"gt": {}}, scale=2, cache_dir=tmp_path)
    with pytest.raises(FaigError, match="must map to DegradationPipeline arguments"):
        PairedEvalSet.generate(gt_images, {"blur": 2.0}, scale=2, cache_dir=tmp_path)


# ---------------------------------------------------------------- build_eval_set


def test_build_fills_in_missing_degradations(tmp_path: Path, gt_dir: Path, gt_images: dict) -> None:
    write_lr(tmp_path / "blur", gt_images)
    write_lr(tmp_path / "jpeg", gt_images)
    ds = build_eval_set(
        gt_dir, {"jpeg": tmp_path / "jpeg", "blur": tmp_path / "blur"}, PAPER_EVAL_DEGRADATIONS, scale=2, seed=0,
        cache_dir=tmp_path / "cache",
    )  # fmt: skip
    assert ds.degradation_names == ["clean", "blur", "noise", "jpeg"]
    assert ds.gt_paths == [gt_dir / f"{n}.png" for n in ds.names]
    for i, name in enumerate(ds.names):
        item = ds[i]
        assert torch.equal(item["lq"]["blur"], load(tmp_path / f"blur/{name}.png"))  # the user's folder
        assert torch.equal(item["lq"]["clean"], expected_lq(gt_images[name], {}, seed=i))  # generated
        assert torch.equal(item["lq"]["noise"], expected_lq(gt_images[name], {"noise": {"sigma": 0.1}}, seed=i))
    with pytest.raises(FaigError, match=r"degraded_dirs needs eval\.gt_dir"):
        build_eval_set(None, {"blur": tmp_path / "blur"}, cache_dir=tmp_path / "cache")


def test_build_from_gt_folder_equals_make_eval_set(tmp_path: Path, gt_dir: Path) -> None:
    ds = build_eval_set(gt_dir, None, None, scale=2, seed=3, cache_dir=tmp_path / "cache")
    folders = make_eval_set_module.make_eval_set(gt_dir, tmp_path / "made", scale=2, seed=3)
    for deg in ["clean", "blur", "noise"]:
        for name, path in zip(ds.names, ds.lq_paths[deg], strict=True):
            assert path.read_bytes() == (folders[deg] / f"{name}.png").read_bytes()


def test_build_from_builtin_photos(tmp_path: Path) -> None:
    ds = build_eval_set(photos=["chelsea"], degradations={"clean": None}, cache_dir=tmp_path)
    item = ds[0]
    assert (
        item["name"] == "chelsea" and item["gt"].shape == (3, 300, 450) and item["lq"]["clean"].shape == (3, 150, 225)
    )


# ---------------------------------------------------------------- make_eval_set CLI


def test_make_eval_set_cli(tmp_path: Path, gt_dir: Path, gt_images: dict, capsys) -> None:
    out = tmp_path / "Set3"
    assert make_eval_set_module.main([f"gt_dir={gt_dir}", f"out_dir={out}", "seed=2", "noise_sigma=0.05"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["GTmod2", "blur", "clean", "eval_set.json", "noise"]
    for folder in ["GTmod2", "blur", "clean", "noise"]:
        assert sorted(p.name for p in (out / folder).iterdir()) == ["baboon.png", "comic.png", "zebra.png"]
    gt = np.asarray(Image.open(out / "GTmod2/comic.png"))
    np.testing.assert_array_equal(gt, gt_images["comic"][:26, :22])
    ref = expected_lq(gt_images["comic"], {"noise": {"sigma": 0.05}}, seed=2 + 1)
    assert torch.equal(load(out / "noise/comic.png"), ref)

    # the printed overrides parse with Hydra and point at the folders
    line = capsys.readouterr().out.strip().splitlines()[-1]
    overrides = OverridesParser.create().parse_overrides(shlex.split(line))
    values = {o.key_or_group: o.value() for o in overrides}
    assert values == {
        "data.eval.gt_dir": str((out / "GTmod2").resolve()),
        **{f"data.eval.degraded_dirs.{d}": str((out / d).resolve()) for d in ["clean", "blur", "noise"]},
        "scale": 2,
    }
    # and the set loads from them
    lq_dirs = {d: out / d for d in ["clean", "blur", "noise"]}
    ds = build_eval_set(values["data.eval.gt_dir"], lq_dirs, cache_dir=tmp_path / "cache")
    assert len(ds) == 3 and not (tmp_path / "cache").exists()

    assert make_eval_set_module.main([f"gt_dir={gt_dir}", f"out_dir={out}"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert make_eval_set_module.main([f"gt_dir={gt_dir}", f"out_dir={tmp_path / 'x'}", "blur_sigma=-1"]) == 2
    assert "blur.sigma must lie in" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # generated images inside the GT folder would be read as ground truth by the next run
    assert make_eval_set_module.main([f"gt_dir={gt_dir}", f"out_dir={gt_dir / 'faig'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("faig-make-evalset: error: out_dir") and "inside gt_dir" in err[0]
    assert not (gt_dir / "faig").exists()


def test_a_cache_another_job_built_meanwhile_is_used(tmp_path: Path, gt_images: dict, monkeypatch) -> None:
    """Two jobs on an empty cache: the one that finishes second finds the folder taken and uses it (same key, same
    files); a write that fails without a finished folder still fails."""
    real = eval_set_module.write_eval_set

    def other_job_first(*args, **kwargs):
        real(*args, **kwargs)  # the other job's complete folder lands under the final name ...
        return real(*args, **kwargs)  # ... before this job's own rename

    monkeypatch.setattr(eval_set_module, "write_eval_set", other_job_first)
    ds = PairedEvalSet.generate(gt_images, PAPER_EVAL_DEGRADATIONS, scale=2, seed=5, cache_dir=tmp_path / "c")
    assert ds.names == list(gt_images) and len(list((tmp_path / "c").iterdir())) == 1

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(eval_set_module, "write_eval_set", disk_full)
    with pytest.raises(OSError, match="No space left"):
        PairedEvalSet.generate(gt_images, PAPER_EVAL_DEGRADATIONS, scale=2, seed=6, cache_dir=tmp_path / "c")
