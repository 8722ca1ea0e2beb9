"""Tests for the batched degradation pipeline: closed forms, naive references, statistics and validation."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from kornia.enhance import jpeg_codec_differentiable
from kornia.filters import gaussian_blur2d
from numpy.lib.stride_tricks import sliding_window_view
from omegaconf import OmegaConf

from faig_lightning.degradations import LABEL_KEYS, DegradationPipeline, downsample, gaussian_kernel2d
from faig_lightning.errors import FaigError


def analytic_gaussian(size: int, sigma: float) -> np.ndarray:
    """exp(-(x^2 + y^2) / (2 sigma^2)) on the centred integer grid, normalised to sum 1."""
    r = np.arange(size) - size // 2
    xx, yy = np.meshgrid(r, r)
    k = np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    return k / k.sum()


def naive_blur_reflect101(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """cv2.filter2D-style correlation with a reflect-101 border (numpy 'reflect' excludes the edge pixel)."""
    p = kernel.shape[0] // 2
    out = np.empty_like(img)
    for c in range(img.shape[0]):
        padded = np.pad(img[c], p, mode="reflect")
        out[c] = (sliding_window_view(padded, kernel.shape) * kernel).sum(axis=(-2, -1))
    return out


def quantize(x: torch.Tensor) -> torch.Tensor:
    return (torch.round(x * 255) / 255).clamp(0, 1)


def rand_images(b: int, h: int, w: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ---------------------------------------------------------------- blur


def test_kernel_matches_analytic_gaussian():
    k = gaussian_kernel2d(21, 2.0)
    assert k.shape == (21, 21)
    np.testing.assert_allclose(k.numpy(), analytic_gaussian(21, 2.0), atol=1e-6, rtol=0)
    assert abs(float(k.sum()) - 1.0) < 1e-6


def test_blurring_a_delta_reproduces_the_kernel():
    hr = torch.zeros(1, 3, 41, 41, dtype=torch.float64)
    hr[..., 20, 20] = 1.0
    lr, labels = DegradationPipeline(scale=1, blur={"sigma": 2.0}, quantize=False)(hr)
    expected = np.zeros((41, 41))
    expected[10:31, 10:31] = analytic_gaussian(21, 2.0)
    for c in range(3):
        np.testing.assert_allclose(lr[0, c].numpy(), expected, atol=1e-12, rtol=0)
    assert labels["blur"].tolist() == [True] and labels["blur_sigma"].tolist() == [2.0]


def test_blur_border_is_reflect101_and_constant_stays_constant():
    hr = rand_images(1, 30, 26, dtype=torch.float64)
    pipe = DegradationPipeline(scale=1, blur={"sigma": 2.0}, quantize=False)
    ref = naive_blur_reflect101(hr[0].numpy(), analytic_gaussian(21, 2.0))
    np.testing.assert_allclose(pipe(hr)[0][0].numpy(), ref, atol=1e-10, rtol=0)

    const = torch.full((2, 3, 24, 24), 0.3)
    out, _ = pipe(const)
    assert torch.allclose(out, const, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- downsampling


def test_bilinear_matches_interpolate_and_box_average():
    x = rand_images(2, 32, 48, dtype=torch.float64)
    ref = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False, antialias=False)
    out = downsample(x, 2, "bilinear")
    assert torch.equal(out, ref)
    box = (x[..., 0::2, 0::2] + x[..., 1::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 1::2]) / 4
    assert torch.allclose(out, box, atol=1e-14, rtol=0)
    # the pipeline without degradations is exactly the quantised bilinear downsample
    lr, _ = DegradationPipeline(scale=2)(x)
    assert torch.equal(lr, quantize(ref))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_area_equals_avg_pool_and_bicubic_is_antialiased(scale):
    x = rand_images(2, 24, 36, dtype=torch.float64)
    assert torch.allclose(downsample(x, scale, "area"), F.avg_pool2d(x, scale), atol=1e-14, rtol=0)
    bicubic = downsample(x, scale, "bicubic")
    plain = F.interpolate(x, scale_factor=1 / scale, mode="bicubic", align_corners=False, antialias=False)
    aa = F.interpolate(x, scale_factor=1 / scale, mode="bicubic", align_corners=False, antialias=True)
    assert bicubic.shape == (2, 3, 24 // scale, 36 // scale)
    assert torch.allclose(bicubic, aa, atol=1e-12, rtol=0)
    assert (bicubic - plain).abs().max() > 1e-2


def test_scale_one_is_identity():
    x = quantize(rand_images(2, 16, 16))
    assert downsample(x, 1) is x
    assert torch.equal(DegradationPipeline(scale=1)(x)[0], x)


# ---------------------------------------------------------------- noise


def test_noise_std_and_mean():
    hr = torch.full((1, 3, 512, 512), 0.5)
    lr, labels = DegradationPipeline(scale=1, noise={"sigma": 0.1}, quantize=False)(
        hr, torch.Generator().manual_seed(1)
    )
    residual = lr - 0.5
    assert abs(float(residual.std()) - 0.1) < 0.002
    assert abs(float(residual.mean())) < 4 * 0.1 / math.sqrt(residual.numel())
    assert labels["noise"].tolist() == [True] and labels["noise_sigma"].tolist() == [pytest.approx(0.1)]


def test_noise_is_added_after_downsampling():
    hr = rand_images(1, 32, 32)
    g = torch.Generator().manual_seed(3)
    lr, _ = DegradationPipeline(scale=2, noise={"sigma": 0.05}, quantize=False)(hr, g)
    # draw order: fire mask, sigma, then the noise field at LR size
    g2 = torch.Generator().manual_seed(3)
    torch.rand(1, generator=g2), torch.rand(1, generator=g2)
    expected = (downsample(hr, 2) + 0.05 * torch.randn(1, 3, 16, 16, generator=g2)).clamp(0, 1)
    assert torch.allclose(lr, expected, atol=1e-6, rtol=0)


def test_per_sample_noise_sigma_range_matches_labels():
    hr = torch.full((8, 3, 64, 64), 0.5, dtype=torch.float64)
    pipe = DegradationPipeline(scale=1, noise={"sigma": [0.02, 0.12]}, quantize=False)
    lr, labels = pipe(hr, torch.Generator().manual_seed(4))
    sig = labels["noise_sigma"]
    assert labels["noise"].all() and ((sig >= 0.02) & (sig <= 0.12)).all()
    assert sig.max() - sig.min() > 0.02  # drawn per sample, not one value for the batch
    measured = (lr - 0.5).flatten(1).std(dim=1)
    assert torch.allclose(measured, sig, rtol=0.03, atol=0)


# ---------------------------------------------------------------- per-sample probabilities and labels


def test_per_sample_probabilities_are_independent_bernoullis():
    n, pb, pn = 4000, 0.3, 0.6
    hr = rand_images(n, 4, 4)
    pipe = DegradationPipeline(
        scale=2, blur={"prob": pb, "kernel_size": 3, "sigma": [0.5, 1.5]}, noise={"prob": pn, "sigma": [0.05, 0.1]}
    )
    lr, labels = pipe(hr, torch.Generator().manual_seed(5))
    assert set(labels) == set(LABEL_KEYS) and all(v.shape == (n,) for v in labels.values())
    blur, noise = labels["blur"], labels["noise"]

    def within_band(frac: torch.Tensor, p: float) -> bool:
        return abs(float(frac) - p) < 4 * math.sqrt(p * (1 - p) / n)

    assert within_band(blur.double().mean(), pb)
    assert within_band(noise.double().mean(), pn)
    assert within_band((blur & noise).double().mean(), pb * pn)
    assert within_band((~blur & ~noise).double().mean(), (1 - pb) * (1 - pn))

    # labels agree with what happened
    clean = quantize(downsample(hr, 2))
    untouched = ~blur & ~noise
    assert torch.equal(lr[untouched], clean[untouched])
    changed = (lr != clean).flatten(1).any(dim=1)
    assert changed[noise].all()  # 12 noisy values (sigma >= 0.05) never all round back to the clean ones
    assert (labels["blur_sigma"][~blur] == 0).all() and (labels["noise_sigma"][~noise] == 0).all()
    bs, ns = labels["blur_sigma"][blur], labels["noise_sigma"][noise]
    assert ((bs >= 0.5) & (bs <= 1.5)).all() and ((ns >= 0.05) & (ns <= 0.1)).all()
    assert not labels["jpeg"].any() and (labels["jpeg_quality"] == 0).all()


def test_blur_label_sigma_is_the_sigma_used():
    hr = rand_images(6, 32, 32, dtype=torch.float64)
    lr, labels = DegradationPipeline(scale=2, blur={"sigma": [0.5, 3.0]}, quantize=False)(
        hr, torch.Generator().manual_seed(6)
    )
    assert len(set(labels["blur_sigma"].tolist())) == 6
    for i, s in enumerate(labels["blur_sigma"].tolist()):
        ref = downsample(gaussian_blur2d(hr[i : i + 1], 21, (s, s), border_type="reflect"), 2).clamp(0, 1)
        assert torch.allclose(lr[i : i + 1], ref, atol=1e-12, rtol=0)


def test_global_rng_is_used_without_generator():
    hr = rand_images(4, 16, 16)
    pipe = DegradationPipeline(scale=2, noise={"prob": 0.5, "sigma": 0.1})
    torch.manual_seed(7)
    a = pipe(hr)
    torch.manual_seed(7)
    b = pipe(hr)
    assert torch.equal(a[0], b[0]) and all(torch.equal(a[1][k], b[1][k]) for k in LABEL_KEYS)


# ---------------------------------------------------------------- evaluation form


def test_deterministic_is_seeded_and_always_applies_ops():
    hr = rand_images(2, 48, 48)
    pipe = DegradationPipeline(
        scale=2, blur={"prob": 0.5, "sigma": [1.0, 3.0]}, noise={"prob": 0.5, "sigma": [0.05, 0.15]}
    )
    a, b, c = pipe.deterministic(hr, seed=1), pipe.deterministic(hr, seed=1), pipe.deterministic(hr, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # midpoints sigma_blur = 2, sigma_noise = 0.1; noise drawn from a generator seeded with the seed
    noise = torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(1))
    expected = quantize(downsample(gaussian_blur2d(hr, 21, (2.0, 2.0)), 2) + 0.1 * noise)
    assert torch.equal(a, expected)


def test_deterministic_skips_prob_zero_and_disabled_ops():
    hr = rand_images(2, 32, 32)
    pipe = DegradationPipeline(scale=2, blur={"prob": 0.0, "sigma": 2.0}, noise={"prob": 0.5, "sigma": 0.1})
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pipe.deterministic(hr), quantize(downsample(hr, 2) + 0.1 * noise))
    assert torch.equal(DegradationPipeline(scale=2).deterministic(hr, seed=5), quantize(downsample(hr, 2)))


# ---------------------------------------------------------------- quantisation, dtype, device, shape


def test_outputs_are_8bit_levels_in_unit_range():
    hr = rand_images(4, 32, 32)
    lr, _ = DegradationPipeline(scale=2, blur={"sigma": 1.0}, noise={"sigma": 0.3})(hr)
    levels = lr * 255
    assert torch.allclose(levels, levels.round(), atol=1e-4, rtol=0)
    assert lr.min() >= 0 and lr.max() <= 1
    assert (lr == 0).any() and (lr == 1).any()  # sigma 0.3 noise must have been clipped at both ends


def test_unquantised_output_is_still_clamped():
    lr, _ = DegradationPipeline(scale=1, noise={"sigma": 0.5}, quantize=False)(rand_images(2, 16, 16))
    assert lr.min() == 0 and lr.max() == 1
    assert not torch.allclose(lr * 255, (lr * 255).round(), atol=1e-3)


def test_dtype_and_3d_input_are_preserved():
    pipe = DegradationPipeline(scale=2, blur={"sigma": 2.0}, noise={"sigma": 0.1}, jpeg={"quality": 80})
    hr64 = rand_images(2, 32, 32, dtype=torch.float64)
    lr, labels = pipe(hr64)
    assert lr.dtype == torch.float64 and lr.device == hr64.device and lr.shape == (2, 3, 16, 16)
    assert labels["blur"].dtype == torch.bool and labels["blur_sigma"].dtype == torch.float64
    assert pipe.deterministic(hr64).dtype == torch.float64
    single, single_labels = pipe(hr64[0])
    assert single.shape == (3, 16, 16) and single_labels["blur"].shape == (1,)
    assert pipe.deterministic(hr64[0]).shape == (3, 16, 16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda():
    pipe = DegradationPipeline(scale=2, blur={"prob": 0.5, "sigma": 2.0}, noise={"prob": 0.5, "sigma": 0.1})
    hr = rand_images(4, 32, 32).cuda()
    lr, labels = pipe(hr, torch.Generator(device="cuda").manual_seed(0))
    assert lr.is_cuda and all(v.is_cuda for v in labels.values())
    assert torch.equal(pipe.deterministic(hr, seed=3), pipe.deterministic(hr, seed=3))
    blur_only = DegradationPipeline(scale=2, blur={"sigma": 2.0})  # CUDA and CPU generators draw different noise
    assert torch.allclose(blur_only.deterministic(hr).cpu(), blur_only.deterministic(hr.cpu()), atol=1 / 255 + 1e-6)


# ---------------------------------------------------------------- JPEG


def test_jpeg_changes_the_image_and_quality_orders_the_error():
    hr = rand_images(1, 64, 64)
    clean = quantize(downsample(hr, 2))
    errors = []
    for q in (10, 50, 95):
        lr, labels = DegradationPipeline(scale=2, jpeg={"quality": q})(hr)
        assert labels["jpeg"].tolist() == [True] and labels["jpeg_quality"].tolist() == [q]
        assert lr.min() >= 0 and lr.max() <= 1
        errors.append(float((lr - clean).abs().mean()))
    assert errors[0] > errors[1] > errors[2] > 0


def test_jpeg_batched_per_sample_quality_and_odd_size():
    hr = rand_images(5, 36, 44)  # LR 18x22: not a multiple of the 16x16 JPEG MCU
    pipe = DegradationPipeline(scale=2, jpeg={"prob": 1.0, "quality": [20, 90]}, quantize=False)
    lr, labels = pipe(hr, torch.Generator().manual_seed(8))
    q = labels["jpeg_quality"]
    assert lr.shape == (5, 3, 18, 22)
    assert ((q >= 20) & (q <= 90)).all() and torch.equal(q, q.round()) and len(set(q.tolist())) > 1
    for i in range(5):
        ref = jpeg_codec_differentiable(downsample(hr[i : i + 1], 2), q[i : i + 1]).clamp(0, 1)
        assert torch.allclose(lr[i : i + 1], ref, atol=1e-5, rtol=0)


def test_jpeg_encodes_the_clipped_noisy_image():
    hr = rand_images(2, 32, 32)
    pipe = DegradationPipeline(scale=2, noise={"sigma": 0.2}, jpeg={"prob": 0.5, "quality": [40, 60]}, quantize=False)
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    noisy = (downsample(hr, 2) + 0.2 * noise).clamp(0, 1)  # a real encoder only sees 8-bit range values
    expected = jpeg_codec_differentiable(noisy, torch.tensor([50.0, 50.0])).clamp(0, 1)
    assert torch.allclose(pipe.deterministic(hr, seed=9), expected, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- configs, validation, description


def test_dictconfig_is_accepted_and_matches_dict():
    cfg = {"blur": {"prob": 0.5, "kernel_size": 21, "sigma": [1, 3]}, "noise": {"prob": 0.5, "sigma": 0.1}}
    hr = rand_images(4, 32, 32)
    a = DegradationPipeline(scale=2, **cfg).deterministic(hr)
    b = DegradationPipeline(scale=2, **OmegaConf.create(cfg)).deterministic(hr)
    assert torch.equal(a, b)


def test_describe_names_the_configured_ops():
    pipe = DegradationPipeline(scale=2, blur={"prob": 0.5, "sigma": 2.0}, noise={"prob": 0.5, "sigma": [0.05, 0.1]})
    text = pipe.describe()
    assert "blur(k=21, p=0.5, sigma=2)" in text and "noise(p=0.5, sigma=[0.05, 0.1])" in text
    assert "jpeg=off" in text and "bilinear x2" in text and text in repr(pipe)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"blur": {"prob": 1.5, "sigma": 2.0}}, r"blur\.prob must be a number in \[0, 1\]"),
        ({"noise": {"prob": -0.1, "sigma": 0.1}}, r"noise\.prob must be a number in \[0, 1\]"),
        ({"noise": {"sigma": -0.1}}, r"noise\.sigma must lie in \[0, 1\]"),
        ({"noise": {"sigma": [0.2, 0.1]}}, r"noise\.sigma range \[lo, hi\] needs lo <= hi"),
        ({"noise": {"sigma": [0.1]}}, r"noise\.sigma must be a number or a \[lo, hi\] pair of 2 numbers"),
        ({"noise": {"sigma": [0.1, "a"]}}, r"pair of 2 numbers"),
        ({"noise": {"prob": 0.5}}, r"noise needs a 'sigma'"),
        ({"blur": {"sigma": 0.0}}, r"blur\.sigma must lie in \(0, inf\]"),
        ({"blur": {"sigma": [-1.0, 2.0]}}, r"blur\.sigma must lie in"),
        ({"blur": {"kernel_size": 20, "sigma": 2.0}}, r"blur\.kernel_size must be an odd positive int"),
        ({"blur": {"kernel_size": -3, "sigma": 2.0}}, r"blur\.kernel_size must be an odd positive int"),
        ({"blur": {"kernel_size": 21.0, "sigma": 2.0}}, r"blur\.kernel_size must be an odd positive int"),
        ({"blur": {"sigam": 2.0}}, r"unknown key\(s\) \['sigam'\] in degradation 'blur'; valid keys are"),
        ({"jpeg": {"quality": 75, "qualty": 50}}, r"unknown key\(s\) \['qualty'\].*\['prob', 'quality'\]"),
        ({"blur": 2.0}, r"degradation 'blur' must be a mapping"),
        ({"scale": 5}, r"scale must be an int in \[1, 2, 3, 4\]"),
        ({"scale": 2.0}, r"scale must be an int in"),
        ({"scale": 0}, r"scale must be an int in"),
        ({"downsample": "nearest"}, r"unknown downsample mode 'nearest'; valid modes are \['bilinear', 'bicubic'"),
        ({"jpeg": {"quality": 0}}, r"jpeg\.quality must lie in \[1, 100\]"),
        ({"jpeg": {"quality": 101}}, r"jpeg\.quality must lie in \[1, 100\]"),
        ({"jpeg": {"quality": [50, 120]}}, r"jpeg\.quality must lie in \[1, 100\]"),
        ({"jpeg": {"quality": [90, 50]}}, r"jpeg\.quality range \[lo, hi\] needs lo <= hi"),
        ({"jpeg": {"quality": 75.5}}, r"jpeg\.quality must be an int"),
        ({"jpeg": {"prob": 0.5}}, r"jpeg needs a 'quality'"),
        ({"quantize": "yes"}, r"quantize must be true or false"),
    ],
)
def test_bad_config_raises(kwargs, match):
    with pytest.raises(FaigError, match=match):
        DegradationPipeline(**kwargs)


def test_bad_dictconfig_key_raises():
    with pytest.raises(FaigError, match=r"unknown key\(s\) \['propability'\]"):
        DegradationPipeline(noise=OmegaConf.create({"propability": 0.5, "sigma": 0.1}))


def test_bad_inputs_raise():
    pipe = DegradationPipeline(scale=2, blur={"sigma": 2.0})
    with pytest.raises(FaigError, match=r"33x32 is not divisible by scale 2; mod-crop"):
        pipe(rand_images(1, 33, 32))
    with pytest.raises(FaigError, match=r"shape \(B,3,H,W\)"):
        pipe(torch.rand(1, 1, 32, 32))
    with pytest.raises(FaigError, match=r"float32 or float64"):
        pipe(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(FaigError, match=r"too small for the 21x21 blur kernel"):
        pipe(rand_images(1, 10, 32))
    with pytest.raises(FaigError, match=r"valid modes are"):
        downsample(rand_images(1, 8, 8), 2, "lanczos")
    with pytest.raises(FaigError, match=r"odd positive int"):
        gaussian_kernel2d(4, 1.0)
    with pytest.raises(FaigError, match=r"sigma must be a number > 0"):
        gaussian_kernel2d(5, 0.0)
    if torch.cuda.is_available():
        with pytest.raises(FaigError, match=r"torch\.Generator\(device="):
            pipe(rand_images(1, 32, 32).cuda(), torch.Generator())


@pytest.mark.parametrize(("downsample_mode", "scale"), [("bilinear", 2), ("bilinear", 3), ("bicubic", 2)])
def test_crops_with_margin_equal_degrading_the_whole_image(downsample_mode, scale):
    """The paper's order (degrade the whole image, then crop) from crops: a margin of context, degraded, then cut."""
    from faig_lightning.data.train_set import HRCropDataset

    img = np.random.default_rng(0).random((30 * scale, 36 * scale, 3)).astype(np.float32)
    pipe = DegradationPipeline(scale=scale, blur={"sigma": 2.0}, downsample=downsample_mode, quantize=False)
    assert pipe.margin % scale == 0 and pipe.margin >= 10 + (2 * scale if downsample_mode == "bicubic" else 0)
    whole = pipe.deterministic(torch.from_numpy(img).permute(2, 0, 1))
    g = 12 * scale
    crops = HRCropDataset([img], gt_size=g, length=64, use_flip=False, use_rot=False, scale=scale, margin=pipe.margin)
    plain = HRCropDataset([img], gt_size=g, length=64, use_flip=False, use_rot=False, scale=scale)
    at_border = 0
    for i in range(len(crops)):
        top, left, _ = crops.place(i, *img.shape[:2])
        inside = min(top, left) >= pipe.margin and top + g + pipe.margin <= img.shape[0] and \
            left + g + pipe.margin <= img.shape[1]
        at_border += not inside
        lr, _ = pipe(crops[i][None], margin=pipe.margin)
        expected = whole[:, top // scale : (top + g) // scale, left // scale : (left + g) // scale]
        assert lr.shape[1:] == expected.shape and torch.equal(crops[i][:, pipe.margin : -pipe.margin,
                                                                         pipe.margin : -pipe.margin], plain[i])
        if inside or downsample_mode == "bilinear":  # mirrored context is exact for the blur; bicubic's image
            torch.testing.assert_close(lr[0], expected, rtol=0, atol=2e-6)  # border differs
        if inside:  # the old order (blur the crop with a mirrored border, then resize) differs near its edges
            assert (pipe(plain[i][None])[0][0] - expected).abs().max() > 1e-3
    assert at_border > 0


def test_margin_is_checked():
    pipe = DegradationPipeline(scale=2, blur={"sigma": 2.0})
    with pytest.raises(FaigError, match="multiple of scale"):
        pipe(torch.rand(1, 3, 40, 40), margin=3)
    assert DegradationPipeline(scale=2).margin == 0 and DegradationPipeline(scale=3, blur={"sigma": 1}).margin == 12
