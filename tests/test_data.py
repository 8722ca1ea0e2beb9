"""Image I/O, built-in photos, HR crops, sub-image extraction and the DataModule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import rand_img, save
from PIL import Image
from torch.utils.data import DataLoader

from faig_lightning.data import (
    EVAL_PHOTOS,
    TRAIN_PHOTOS,
    HRCropDataset,
    SRDataModule,
    list_images,
    load_builtin,
    memmap,
    mod_crop,
    read_image,
    subimages,
    to_tensor,
    write_png,
)
from faig_lightning.data.train_set import EpochSampler, augment
from faig_lightning.errors import FaigError


def as_uint8(t: torch.Tensor) -> np.ndarray:
    """CHW float tensor holding multiples of 1/255 -> HWC uint8 (exact)."""
    return np.rint(t.permute(1, 2, 0).numpy() * 255).astype(np.uint8)


# ---------------------------------------------------------------- images.py


def test_list_images_recursive_sorted_and_filtered(tmp_path: Path) -> None:
    for rel in ["b.png", "a/z.JPG", "a/deeper/c.tiff", "e.webp", "d.Bmp", "f.jpeg", "g.tif"]:
        save(tmp_path / rel, rand_img(4, 4))
    (tmp_path / "notes.txt").write_text("not an image")
    save(tmp_path / ".hidden.png", rand_img(4, 4))
    found = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert found == ["a/deeper/c.tiff", "a/z.JPG", "b.png", "d.Bmp", "e.webp", "f.jpeg", "g.tif"]


def test_list_images_missing_or_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(FaigError, match="does not exist"):
        list_images(tmp_path / "nope")
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(FaigError, match=r"no images found in .*\.png .*\.webp"):
        list_images(tmp_path)


def test_read_image_corrupt_file_names_it(tmp_path: Path) -> None:
    bad = tmp_path / "x.png"
    bad.write_bytes(b"garbage" * 20)
    with pytest.raises(FaigError, match=r"x\.png"):
        read_image(bad)
    good = save(tmp_path / "t.png", rand_img(30, 30))
    (tmp_path / "trunc.png").write_bytes(good.read_bytes()[:100])
    with pytest.raises(FaigError, match=r"trunc\.png"):
        read_image(tmp_path / "trunc.png")


def test_read_image_converts_modes_to_rgb(tmp_path: Path) -> None:
    rgb = rand_img(5, 7)
    out = read_image(save(tmp_path / "rgb.png", rgb))
    assert out.dtype == np.float32 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(np.rint(out * 255).astype(np.uint8), rgb)

    grey = rgb[:, :, 0]
    out = read_image(save(tmp_path / "grey.png", grey))
    np.testing.assert_allclose(out, np.repeat(grey[:, :, None], 3, axis=2) / 255.0, atol=1e-7)

    rgba = np.concatenate([rgb, np.full((5, 7, 1), 7, np.uint8)], axis=2)
    np.testing.assert_allclose(read_image(save(tmp_path / "rgba.png", rgba)), rgb / 255.0, atol=1e-7)

    g16 = (np.arange(35, dtype=np.uint16).reshape(5, 7) * 1871).astype(np.uint16)
    out = read_image(save(tmp_path / "g16.png", g16))
    np.testing.assert_allclose(out[:, :, 2], g16 / 65535.0, atol=1e-7)


def test_write_png_round_trips_arrays_and_tensors(tmp_path: Path) -> None:
    img = rand_img(6, 9)
    write_png(tmp_path / "a.png", img.astype(np.float32) / 255)
    write_png(tmp_path / "sub/b.png", torch.from_numpy(img).permute(2, 0, 1).float() / 255)
    for name in ["a.png", "sub/b.png"]:
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / name)), img)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["a.png", "b.png"]  # no temp files left


def test_mod_crop_and_to_tensor() -> None:
    img = rand_img(13, 10)
    cropped = mod_crop(img, 4)
    assert cropped.shape == (12, 8, 3)
    np.testing.assert_array_equal(cropped, img[:12, :8])
    t = to_tensor(img)
    assert t.shape == (3, 13, 10) and t.dtype == torch.float32 and t.is_contiguous()
    assert torch.equal(t, torch.from_numpy(img).permute(2, 0, 1).float() / 255)


# ---------------------------------------------------------------- builtin.py


def test_builtin_split_loads_documented_photos() -> None:
    expected = {
        "astronaut": (512, 512, 3),
        "coffee": (400, 600, 3),
        "rocket": (427, 640, 3),
        "hubble_deep_field": (872, 1000, 3),
        "immunohistochemistry": (512, 512, 3),
        "retina": (1411, 1411, 3),
        "chelsea": (300, 451, 3),
        "motorcycle_left": (500, 741, 3),
        "motorcycle_right": (500, 741, 3),
    }
    assert set(TRAIN_PHOTOS).isdisjoint(EVAL_PHOTOS)
    photos = load_builtin(TRAIN_PHOTOS + EVAL_PHOTOS)
    assert list(photos) == list(TRAIN_PHOTOS + EVAL_PHOTOS)
    assert {k: v.shape for k, v in photos.items()} == expected
    assert all(v.dtype == np.uint8 and v.std() > 10 for v in photos.values())
    assert not np.array_equal(photos["motorcycle_left"], photos["motorcycle_right"])


def test_builtin_unknown_name() -> None:
    with pytest.raises(FaigError, match=r"unknown built-in photo\(s\) \['camera'\].*astronaut.*motorcycle_right"):
        load_builtin(["chelsea", "camera"])
    assert list(load_builtin("coffee")) == ["coffee"]


# ---------------------------------------------------------------- train_set.py


def coded_image(h: int = 12, w: int = 10) -> np.ndarray:
    """Every pixel unique: R = row * w + col."""
    code = np.arange(h * w, dtype=np.uint8).reshape(h, w)
    return np.stack([code, 255 - code, np.full_like(code, 9)], axis=2)


def undo_augment(crop: np.ndarray, hflip: bool, vflip: bool, transpose: bool) -> np.ndarray:
    if transpose:
        crop = crop.transpose(1, 0, 2)
    if vflip:
        crop = crop[::-1]
    if hflip:
        crop = crop[:, ::-1]
    return crop


def locate(src: np.ndarray, crop: np.ndarray) -> list[tuple[tuple[bool, bool, bool], int, int]]:
    """All (augmentation, top, left) for which ``crop`` is augment(src[top:top+g, left:left+g])."""
    g, w = crop.shape[0], src.shape[1]
    hits = []
    for combo in [(a, b, c) for a in (False, True) for b in (False, True) for c in (False, True)]:
        base = undo_augment(crop, *combo)
        top, left = divmod(int(base[0, 0, 0]), w)
        if top + g <= src.shape[0] and left + g <= w and np.array_equal(base, src[top : top + g, left : left + g]):
            hits.append((combo, top, left))
    return hits


def test_crops_are_augmented_sub_arrays_and_cover_all_cases() -> None:
    src = coded_image()
    ds = HRCropDataset([src], gt_size=5, length=300, names=["coded"])
    combos, tops, lefts = set(), set(), set()
    for i in range(len(ds)):
        item = ds[i]
        assert item.shape == (3, 5, 5) and item.dtype == torch.float32
        assert item.min() >= 0.0 and item.max() <= 1.0
        hits = locate(src, as_uint8(item))
        assert len(hits) >= 1
        combos |= {h[0] for h in hits}
        tops |= {h[1] for h in hits}
        lefts |= {h[2] for h in hits}
    assert len(combos) == 8  # all flips/rotations occur
    assert tops == set(range(12 - 5 + 1)) and lefts == set(range(10 - 5 + 1))


def test_crops_without_augmentation_are_plain_slices() -> None:
    src = coded_image()
    ds = HRCropDataset([src], gt_size=4, length=50, use_flip=False, use_rot=False)
    for i in range(len(ds)):
        assert [h[0] for h in locate(src, as_uint8(ds[i]))] == [(False, False, False)]


def test_augment_matches_numpy_ops() -> None:
    x = coded_image(6, 6)
    np.testing.assert_array_equal(augment(x, True, False, False), np.fliplr(x))
    np.testing.assert_array_equal(augment(x, False, True, False), np.flipud(x))
    np.testing.assert_array_equal(augment(x, False, False, True), np.swapaxes(x, 0, 1))
    np.testing.assert_array_equal(augment(x, False, True, True), np.rot90(x, k=-1))


def test_crops_are_a_function_of_seed_and_index_whatever_the_workers() -> None:
    ds = HRCropDataset([rand_img(40, 40)], gt_size=8, length=16, seed=3)
    first = torch.stack([ds[i] for i in range(8)])
    torch.manual_seed(123)  # the global RNG plays no part
    assert torch.equal(first, torch.stack([ds[i] for i in range(8)]))
    other = HRCropDataset([rand_img(40, 40)], gt_size=8, length=16, seed=4)
    assert not torch.equal(first, torch.stack([other[i] for i in range(8)]))

    def two_epochs(workers: int) -> list[torch.Tensor]:
        sampler = EpochSampler(len(ds), seed=7)
        loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=workers)
        batches = []
        for epoch in range(2):
            sampler.set_epoch(epoch)
            batches += list(loader)
        return batches

    main_process, two_workers = two_epochs(0), two_epochs(2)
    assert len(main_process) == 8 and all(torch.equal(a, b) for a, b in zip(main_process, two_workers, strict=True))
    assert not torch.equal(torch.cat(main_process[:4]), torch.cat(main_process[4:]))  # each epoch new crops


def test_epoch_sampler_shuffles_each_epoch_and_numbers_items_by_epoch() -> None:
    sampler = EpochSampler(10, seed=1)
    orders = []
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert sorted(orders[0]) == list(range(10)) and sorted(orders[1]) == list(range(10, 20))
    assert orders[0] == orders[2]  # epoch 0 again (a resumed run): the same order
    assert [i - 10 for i in orders[1]] != orders[0]
    assert orders[0] != list(range(10))



def colour_images(n: int, size: int = 12) -> list[np.ndarray]:
    """``n`` flat images, image ``k`` filled with value ``k`` (a crop names its image)."""
    return [np.full((size, size, 3), k, dtype=np.uint8) for k in range(n)]


def drawn_images(ds: HRCropDataset, epochs: range) -> list[int]:
    """The image of every crop a seeded sampler draws in ``epochs``, read off the crops' pixels."""
    sampler = EpochSampler(len(ds), seed=5)
    drawn = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        drawn += [int(as_uint8(ds[i])[0, 0, 0]) for i in sampler]
    return drawn


@pytest.mark.parametrize("num_images, length", [(36, 20), (7, 3), (5, 5)])
def test_every_training_image_is_drawn_in_one_pass(num_images: int, length: int) -> None:
    """An epoch holding fewer crops than there are images goes on where the last one stopped: the first
    ceil(N / length) epochs draw every image, the first N draws each image exactly once, in a seeded order."""
    ds = HRCropDataset(colour_images(num_images), gt_size=4, length=length, seed=2)
    passes = -(-num_images // length)
    stream = [ds.image_of(i) for i in range(passes * length)]
    assert sorted(stream[:num_images]) == list(range(num_images))  # one pass: each image once
    assert sorted(set(drawn_images(ds, range(passes)))) == list(range(num_images))
    if length < num_images:
        assert stream[:num_images] != list(range(num_images))  # a shuffled pass, not neighbouring files
        again = HRCropDataset(colour_images(num_images), gt_size=4, length=length, seed=2)
        assert [again.image_of(i) for i in reversed(range(len(stream)))] == stream[::-1]  # any order of calls


def test_an_epoch_holding_every_image_draws_each_equally() -> None:
    """length >= N: every epoch draws every image length // N times or once more (item i: image i % N)."""
    ds = HRCropDataset(colour_images(6), gt_size=4, length=16)
    for epoch in range(3):
        counts = np.bincount(drawn_images(ds, range(epoch, epoch + 1)), minlength=6)
        assert counts.sum() == 16 and counts.min() == 2 and counts.max() == 3
    assert [ds.image_of(16 + i) for i in range(8)] == [i % 6 for i in range(8)]


def test_sampler_resumes_mid_epoch_where_it_stopped() -> None:
    """A sampler told that ``start`` items of epoch ``e`` were drawn yields the rest of that epoch's order first
    (then the drawn ones, which keep the pass's length but are never reached)."""
    full = EpochSampler(12, seed=3)
    full.set_epoch(2)
    order = list(full)
    resumed = EpochSampler(12, seed=3, position_of=lambda: (2, 5))
    assert list(resumed) == order[5:] + order[:5] and len(resumed) == 12


@pytest.mark.slow
def test_training_resumed_mid_epoch_continues_the_same_stream(tmp_path: Path, single_thread) -> None:
    """Stopped after a step in the middle of an epoch, a run resumed from that checkpoint ends with the weights of
    the run that was never stopped (every crop, image and degradation draw the same)."""
    import pytorch_lightning as pl

    from faig_lightning.module import SRModule

    for k in range(5):
        save(tmp_path / f"train/{k}.png", rand_img(20, 20, seed=k))
    common = {"train_source": "folder", "train_dir": str(tmp_path / "train"), "gt_size": 8, "batch_size": 2,
              "num_workers": 0, "iters_per_epoch": 2, "eval": tiny_eval(tmp_path)}  # 4 crops an epoch, 5 images
    net = {"_target_": "faig_lightning.nets.MSRResNet", "num_feat": 4, "num_block": 1, "scale": 2}
    degradation = {"scale": 2, "blur": {"prob": 0.5, "kernel_size": 5, "sigma": 1.0}, "noise": {"prob": 0.5,
                                                                                              "sigma": 0.1}}

    class StopAt(pl.Callback):
        def __init__(self, step: int) -> None:
            self.step = step

        def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
            if trainer.global_step == self.step:
                trainer.save_checkpoint(tmp_path / "mid.ckpt")
                trainer.should_stop = True

    def fit(max_steps: int, callbacks: list, ckpt: Path | None = None) -> dict[str, torch.Tensor]:
        pl.seed_everything(0, verbose=False)
        module = SRModule(net=net, degradation=degradation, seed=1)
        trainer = pl.Trainer(max_steps=max_steps, logger=False, enable_checkpointing=False, callbacks=callbacks,
                             enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                             limit_val_batches=0, deterministic=True)
        trainer.fit(module, datamodule=SRDataModule(**common), ckpt_path=ckpt)
        assert trainer.global_step == max_steps
        return {k: v.clone() for k, v in module.net.state_dict().items()}

    uninterrupted = fit(7, [])
    fit(3, [StopAt(3)])  # stops after the first step of the second epoch
    resumed = fit(7, [], tmp_path / "mid.ckpt")
    assert all(torch.equal(uninterrupted[k], resumed[k]) for k in uninterrupted)


def test_crops_from_files_read_per_item(tmp_path: Path) -> None:
    src = coded_image(9, 11)
    path = save(tmp_path / "coded.png", src)
    ds = HRCropDataset([path], gt_size=6, length=20)
    for i in range(len(ds)):
        assert len(locate(src, as_uint8(ds[i]))) >= 1
    small = HRCropDataset([save(tmp_path / "small.png", rand_img(5, 40))], gt_size=6, length=1)
    with pytest.raises(FaigError, match=r"small\.png' is 5x40.*data\.gt_size \(at most 5\)"):
        small[0]


def test_too_small_image_names_it() -> None:
    with pytest.raises(FaigError, match=r"'tiny' is 10x40, smaller than the 16x16.*data\.gt_size"):
        HRCropDataset([rand_img(64, 64), rand_img(10, 40)], gt_size=16, length=4, names=["big", "tiny"])


# ---------------------------------------------------------------- subimages.py


def test_crop_positions_follow_basicsr_rule() -> None:
    assert subimages.crop_positions(700, 480, 240) == [0, 220]
    assert subimages.crop_positions(1000, 480, 240) == [0, 240, 480, 520]
    assert subimages.crop_positions(1000, 480, 240, thresh_size=50) == [0, 240, 480]
    assert subimages.crop_positions(960, 480, 240) == [0, 240, 480]
    assert subimages.crop_positions(400, 480, 240) == []


def test_subimages_cli_writes_expected_crops(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = rand_img(700, 1000)
    save(tmp_path / "in/set/photo.png", src)
    save(tmp_path / "in/tiny.png", rand_img(100, 100))
    rc = subimages.main([f"in_dir={tmp_path / 'in'}", f"out_dir={tmp_path / 'out'}", "workers=1"])
    assert rc == 0
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*"))
    assert written == ["set"] + [f"set/photo_s{i:03d}.png" for i in range(1, 9)]
    positions = [(y, x) for y in (0, 220) for x in (0, 240, 480, 520)]
    for i, (y, x) in enumerate(positions, start=1):
        crop = np.asarray(Image.open(tmp_path / f"out/set/photo_s{i:03d}.png"))
        np.testing.assert_array_equal(crop, src[y : y + 480, x : x + 480])
    assert "skipped 1 image(s) smaller than 480: ['tiny.png']" in capsys.readouterr().out


def test_subimages_cli_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    save(tmp_path / "in/a.png", rand_img(8, 8))
    assert subimages.main([f"in_dir={tmp_path / 'in'}"]) == 2
    assert "missing required argument(s) ['out_dir']" in capsys.readouterr().err
    assert subimages.main([f"in_dir={tmp_path / 'in'}", f"out_dir={tmp_path / 'out'}", "step=abc"]) == 2
    assert "step='abc' is not a valid int" in capsys.readouterr().err
    assert subimages.main([f"in_dir={tmp_path / 'in'}", f"out_dir={tmp_path / 'in/sub'}"]) == 2
    assert "lies inside in_dir" in capsys.readouterr().err
    assert subimages.main(["--help"]) == 0
    assert "crop_size=480 step=240" in capsys.readouterr().out


def test_subimages_never_mix_old_and_new_crops(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A non-empty out_dir is refused (one line, exit 2); an interrupted run leaves no out_dir at all."""
    save(tmp_path / "in/a.png", rand_img(64, 64))
    save(tmp_path / "out/old_s001.png", rand_img(32, 32))
    assert subimages.main([f"in_dir={tmp_path / 'in'}", f"out_dir={tmp_path / 'out'}", "crop_size=32"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("faig-extract-subimages: error: out_dir") and "not empty" in err[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["old_s001.png"]
    (tmp_path / "empty").mkdir()
    assert subimages.extract_subimages(tmp_path / "in", tmp_path / "empty", crop_size=32, step=32, workers=0)[
        "crops"] == 4

    def crash(*args: object, **kwargs: object) -> int:
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(subimages, "extract_image", crash)
        with pytest.raises(KeyboardInterrupt):
            subimages.extract_subimages(tmp_path / "in", tmp_path / "new", crop_size=32, workers=0)
    assert not (tmp_path / "new").exists() and not list(tmp_path.glob(".new.*"))


@pytest.mark.slow
def test_subimages_process_pool_matches_serial(tmp_path: Path) -> None:
    for k in range(3):
        save(tmp_path / f"in/{k}.png", rand_img(50, 70, seed=k))
    serial = subimages.extract_subimages(tmp_path / "in", tmp_path / "a", crop_size=32, step=16, workers=0)
    pooled = subimages.extract_subimages(tmp_path / "in", tmp_path / "b", crop_size=32, step=16, workers=2)
    assert serial == pooled and serial["crops"] == 3 * 3 * 4
    for p in (tmp_path / "a").iterdir():
        assert p.read_bytes() == (tmp_path / "b" / p.name).read_bytes()


# ---------------------------------------------------------------- datamodule.py


def tiny_eval(tmp_path: Path) -> dict:
    for k, (h, w) in enumerate([(24, 30), (27, 22)]):
        save(tmp_path / f"gt/img{k}.png", rand_img(h, w, seed=k))
    return {"gt_dir": str(tmp_path / "gt"), "cache_dir": str(tmp_path / "cache")}


def test_datamodule_batches(tmp_path: Path) -> None:
    dm = SRDataModule(gt_size=16, batch_size=4, num_workers=0, iters_per_epoch=3, eval=tiny_eval(tmp_path))
    dm.prepare_data()
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 3 and all(b.shape == (4, 3, 16, 16) and b.dtype == torch.float32 for b in batches)
    val = list(dm.val_dataloader())
    assert [v["name"] for v in val] == [["img0"], ["img1"]]
    assert val[1]["gt"].shape == (1, 3, 26, 22)
    assert list(val[1]["lq"]) == ["clean", "blur", "noise"]
    assert all(t.shape == (1, 3, 13, 11) for t in val[1]["lq"].values())


def test_datamodule_folder_source(tmp_path: Path) -> None:
    for k in range(3):
        save(tmp_path / f"train/{k}.png", rand_img(20, 20, seed=k))
    dm = SRDataModule(
        train_source="folder", train_dir=str(tmp_path / "train"), gt_size=8, batch_size=2, num_workers=0,
        iters_per_epoch=2, eval=tiny_eval(tmp_path),
    )  # fmt: skip
    dm.setup("fit")
    assert [b.shape for b in dm.train_dataloader()] == [(2, 3, 8, 8)] * 2
    assert dm.train_set.images == sorted((tmp_path / "train").iterdir())  # read per item
    preloaded = SRDataModule(**{**dm.hparams, "preload": True})
    preloaded.setup("fit")
    for img, path in zip(preloaded.train_set.images, dm.train_set.images, strict=True):
        np.testing.assert_array_equal(img, np.asarray(Image.open(path)))
    assert torch.equal(next(iter(dm.train_dataloader())), next(iter(preloaded.train_dataloader())))  # same crops


def test_memmap_cache_gives_the_same_crops_and_is_built_once(tmp_path: Path) -> None:
    """data.memmap: crops bit-identical to reading the files; the cache is reused, and a changed folder rebuilds."""
    for k in range(3):
        save(tmp_path / f"train/{k}.png", rand_img(20 + k, 24, seed=k))
    common = {"train_source": "folder", "train_dir": str(tmp_path / "train"), "gt_size": 8, "batch_size": 4,
              "num_workers": 0, "iters_per_epoch": 3, "eval": tiny_eval(tmp_path)}
    files = SRDataModule(**common)
    mapped = SRDataModule(**common, memmap=True, memmap_dir=str(tmp_path / "mm"))
    for dm in (files, mapped):
        dm.setup("fit")
    for img, path in zip(mapped.train_set.images, files.train_set.images, strict=True):
        assert isinstance(img.base, np.memmap) and not img.flags.writeable
        np.testing.assert_array_equal(img, np.asarray(Image.open(path)))
    batches = []
    for dm in (files, mapped):
        batches.append(torch.cat(list(dm.train_dataloader())))
    assert torch.equal(*batches)
    (index,) = (tmp_path / "mm").glob("*.json")
    stamp = index.stat().st_mtime_ns
    memmap.memmap_images(files.train_set.images, tmp_path / "mm")
    assert index.stat().st_mtime_ns == stamp  # reused, not rewritten
    save(tmp_path / "train/0.png", rand_img(20, 24, seed=9))
    memmap.memmap_images(files.train_set.images, tmp_path / "mm")
    assert len(list((tmp_path / "mm").glob("*.json"))) == 2  # the changed folder has its own cache


def test_memmap_refuses_16_bit_and_bad_combinations(tmp_path: Path) -> None:
    Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16)).save(tmp_path / "deep.png")
    with pytest.raises(FaigError, match="holds 8-bit images"):
        memmap.build_memmap([tmp_path / "deep.png"], tmp_path / "mm")
    assert not list((tmp_path / "mm").glob("*"))  # nothing half-written
    with pytest.raises(FaigError, match=r"data\.memmap=true"):
        SRDataModule(train_source="builtin", memmap=True, memmap_dir=str(tmp_path / "mm"))


def test_datamodule_rejects_bad_config() -> None:
    with pytest.raises(FaigError, match=r"gt_size=65 must be a positive multiple of scale=2.*gt_size=64"):
        SRDataModule(gt_size=65)
    with pytest.raises(FaigError, match=r"unknown key\(s\) \['gt'\] in data.eval; valid keys.*degraded_dirs"):
        SRDataModule(eval={"gt": "x"})
    with pytest.raises(FaigError, match=r"needs data\.train_dir"):
        SRDataModule(train_source="folder")
    with pytest.raises(FaigError, match="must be one of"):
        SRDataModule(train_source="lmdb")
