"""Batched LR synthesis on the input's device: blur -> downsample xs -> noise -> optional JPEG -> 8-bit quantise.

Matches the FAIG training/test degradations (paper digest §3.3): isotropic Gaussian blur with a reflect-101
border (``cv2.filter2D``), bilinear downsampling (what the official ``cv2.resize`` call really did), additive
Gaussian noise on the [0, 1] scale, then round-and-clip to 8 bit. Each op fires per sample with its own
probability; every sample's parameters are returned as labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.enhance import jpeg_codec_differentiable
from kornia.filters import filter2d_separable, get_gaussian_kernel1d, get_gaussian_kernel2d

from faig_lightning.errors import FaigError

DOWNSAMPLE_MODES = ("bilinear", "bicubic", "area")
SCALES = (1, 2, 3, 4)
LABEL_KEYS = ("blur", "blur_sigma", "noise", "noise_sigma", "jpeg", "jpeg_quality")
_OP_KEYS = {
    "blur": ("prob", "kernel_size", "sigma"),
    "noise": ("prob", "sigma"),
    "jpeg": ("prob", "quality"),
}
_DEFAULT_BLUR_KERNEL = 21
_DTYPES = (torch.float32, torch.float64)


@dataclass(frozen=True)
class _Op:
    """One validated op: firing probability and the [lo, hi] range of its parameter (lo == hi: fixed)."""

    prob: float
    lo: float
    hi: float

    @property
    def mid(self) -> float:
        """Midpoint of the range: the parameter used by the evaluation form."""
        return (self.lo + self.hi) / 2

    def text(self, name: str) -> str:
        """Compact description for logs."""
        value = f"{self.lo:g}" if self.lo == self.hi else f"[{self.lo:g}, {self.hi:g}]"
        return f"p={self.prob:g}, {name}={value}"


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_keys(op: str, cfg: object) -> Mapping:
    if not isinstance(cfg, Mapping):
        raise FaigError(
            f"degradation '{op}' must be a mapping such as {{'prob': 0.5, ...}} or null to disable it, got {cfg!r}"
        )
    valid = _OP_KEYS[op]
    unknown = sorted(str(k) for k in cfg if k not in valid)
    if unknown:
        raise FaigError(f"unknown key(s) {unknown} in degradation '{op}'; valid keys are {list(valid)}")
    return cfg


def _parse_prob(op: str, cfg: Mapping) -> float:
    prob = cfg.get("prob", 1.0)
    if not _is_number(prob) or not 0.0 <= prob <= 1.0:
        raise FaigError(f"{op}.prob must be a number in [0, 1], got {prob!r}")
    return float(prob)


def _parse_range(
    op: str, key: str, value: object, lo_ok: float, hi_ok: float, *, lo_open: bool = False
) -> tuple[float, float]:
    """Parse a number or a [lo, hi] pair and check it lies in [lo_ok, hi_ok] (lo_ok excluded if lo_open)."""
    allowed = f"{'(' if lo_open else '['}{lo_ok:g}, {hi_ok:g}]"
    if _is_number(value):
        lo = hi = float(value)
    elif isinstance(value, Sequence) and not isinstance(value, str):
        items = list(value)
        if len(items) != 2 or not all(_is_number(v) for v in items):
            raise FaigError(f"{op}.{key} must be a number or a [lo, hi] pair of 2 numbers, got {value!r}")
        lo, hi = float(items[0]), float(items[1])
        if lo > hi:
            raise FaigError(f"{op}.{key} range [lo, hi] needs lo <= hi, got {items!r}; swap the two values")
    else:
        raise FaigError(f"{op}.{key} must be a number or a [lo, hi] pair of 2 numbers, got {value!r}")
    if (lo <= lo_ok if lo_open else lo < lo_ok) or hi > hi_ok:
        raise FaigError(f"{op}.{key} must lie in {allowed}, got {value!r}")
    return lo, hi


def _parse_blur(cfg: object) -> tuple[_Op, int]:
    cfg = _check_keys("blur", cfg)
    prob = _parse_prob("blur", cfg)
    ks = cfg.get("kernel_size", _DEFAULT_BLUR_KERNEL)
    if not isinstance(ks, int) or isinstance(ks, bool) or ks < 1 or ks % 2 == 0:
        raise FaigError(f"blur.kernel_size must be an odd positive int (e.g. 21), got {ks!r}")
    if "sigma" not in cfg:
        raise FaigError("blur needs a 'sigma' (number or [lo, hi] in (0, inf)), e.g. {'sigma': 2.0}")
    lo, hi = _parse_range("blur", "sigma", cfg["sigma"], 0.0, math.inf, lo_open=True)
    return _Op(prob, lo, hi), ks


def _parse_noise(cfg: object) -> _Op:
    cfg = _check_keys("noise", cfg)
    prob = _parse_prob("noise", cfg)
    if "sigma" not in cfg:
        raise FaigError("noise needs a 'sigma' (number or [lo, hi] in [0, 1], image units), e.g. {'sigma': 0.1}")
    lo, hi = _parse_range("noise", "sigma", cfg["sigma"], 0.0, 1.0)
    return _Op(prob, lo, hi)


def _parse_jpeg(cfg: object) -> _Op:
    cfg = _check_keys("jpeg", cfg)
    prob = _parse_prob("jpeg", cfg)
    if "quality" not in cfg:
        raise FaigError("jpeg needs a 'quality' (int or [lo, hi] of ints in [1, 100]), e.g. {'quality': 75}")
    quality = cfg["quality"]
    items = list(quality) if isinstance(quality, Sequence) and not isinstance(quality, str) else [quality]
    if not all(isinstance(q, int) and not isinstance(q, bool) for q in items):
        raise FaigError(f"jpeg.quality must be an int or a [lo, hi] pair of ints in [1, 100], got {quality!r}")
    lo, hi = _parse_range("jpeg", "quality", quality, 1, 100)
    return _Op(prob, lo, hi)


def gaussian_kernel2d(kernel_size: int, sigma: float) -> torch.Tensor:
    """Normalised isotropic Gaussian kernel, shape (kernel_size, kernel_size), float32 (wraps kornia)."""
    if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1 or kernel_size % 2 == 0:
        raise FaigError(f"kernel_size must be an odd positive int (e.g. 21), got {kernel_size!r}")
    if not _is_number(sigma) or sigma <= 0:
        raise FaigError(f"sigma must be a number > 0, got {sigma!r}")
    return get_gaussian_kernel2d(kernel_size, (float(sigma), float(sigma)))[0]


def downsample(x: torch.Tensor, scale: int, mode: str = "bilinear") -> torch.Tensor:
    """Shrink (B,C,H,W) by an integer ``scale``.

    ``bilinear``: ``F.interpolate`` bilinear, align_corners=False, no antialias (= cv2 INTER_LINEAR, the
    official code's actual resize); ``bicubic``: bicubic with antialias (MATLAB-like imresize);
    ``area``: box average. H and W must be divisible by ``scale``.
    """
    if mode not in DOWNSAMPLE_MODES:
        raise FaigError(f"unknown downsample mode {mode!r}; valid modes are {list(DOWNSAMPLE_MODES)}")
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise FaigError(f"scale must be a positive int, got {scale!r}")
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise FaigError(
            f"image size {h}x{w} is not divisible by scale {scale}; mod-crop the HR image to a multiple of "
            f"{scale} first (e.g. x[..., :{h - h % scale}, :{w - w % scale}])"
        )
    if scale == 1:
        return x
    size = (h // scale, w // scale)
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode=mode, align_corners=False, antialias=mode == "bicubic")


class DegradationPipeline(torch.nn.Module):
    """Batched HR -> LR synthesis: blur -> downsample xs -> noise -> JPEG -> quantise, on the input's device.

    Op configs are dicts/DictConfigs (None disables the op; ``prob`` defaults to 1.0):
    ``blur={'prob', 'kernel_size' (odd, default 21), 'sigma'}``, ``noise={'prob', 'sigma'}`` (image units),
    ``jpeg={'prob', 'quality'}``. A sigma/quality is a number (fixed) or a [lo, hi] range drawn uniformly per
    sample (JPEG quality: uniform integer). ``forward`` draws each op per sample; ``deterministic`` always
    applies every configured op (prob > 0) with the range midpoint and seeded noise.
    """

    def __init__(
        self,
        scale: int = 2,
        blur: Mapping | None = None,
        downsample: str = "bilinear",
        noise: Mapping | None = None,
        jpeg: Mapping | None = None,
        quantize: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(scale, int) or isinstance(scale, bool) or scale not in SCALES:
            raise FaigError(f"scale must be an int in {list(SCALES)} (1 = no resize), got {scale!r}")
        if downsample not in DOWNSAMPLE_MODES:
            raise FaigError(f"unknown downsample mode {downsample!r}; valid modes are {list(DOWNSAMPLE_MODES)}")
        if not isinstance(quantize, bool):
            raise FaigError(f"quantize must be true or false, got {quantize!r}")
        self.scale = scale
        self.mode = downsample
        self.quantize = quantize
        self.blur, self.kernel_size = _parse_blur(blur) if blur is not None else (None, _DEFAULT_BLUR_KERNEL)
        self.noise = _parse_noise(noise) if noise is not None else None
        self.jpeg = _parse_jpeg(jpeg) if jpeg is not None else None

    @property
    def margin(self) -> int:
        """HR pixels of context each side that a crop needs for its centre to be degraded as in the whole image.

        The blur reads ``kernel_size // 2`` pixels around each pixel and the antialiased bicubic resize ``2 * scale``
        (bilinear and area resizes by an integer factor read only their own cell); rounded up to a multiple of
        ``scale`` so that the LR grid of the crop stays aligned with the image's.
        """
        need = self.kernel_size // 2 if self.blur is not None and self.blur.prob > 0 else 0
        need += 2 * self.scale if self.mode == "bicubic" and self.scale > 1 else 0
        return -(-need // self.scale) * self.scale

    def describe(self) -> str:
        """One line naming every configured op, for logs."""
        blur = f"blur(k={self.kernel_size}, {self.blur.text('sigma')})" if self.blur else "blur=off"
        noise = f"noise({self.noise.text('sigma')})" if self.noise else "noise=off"
        jpeg = f"jpeg({self.jpeg.text('quality')})" if self.jpeg else "jpeg=off"
        return f"{blur}, downsample={self.mode} x{self.scale}, {noise}, {jpeg}, quantize={self.quantize}"

    def extra_repr(self) -> str:
        """Shown by ``repr(module)``."""
        return self.describe()

    def _check_input(self, hr: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if not isinstance(hr, torch.Tensor) or hr.dim() not in (3, 4) or hr.shape[-3] != 3:
            shape = tuple(hr.shape) if isinstance(hr, torch.Tensor) else type(hr).__name__
            raise FaigError(f"expected an RGB image tensor of shape (B,3,H,W) or (3,H,W) in [0, 1], got {shape}")
        if hr.dtype not in _DTYPES:
            raise FaigError(f"expected a float32 or float64 image tensor, got {hr.dtype}; convert with .float()")
        if generator is not None and generator.device.type != hr.device.type:
            raise FaigError(
                f"generator is on {generator.device} but the images are on {hr.device}; "
                f"create it with torch.Generator(device=images.device)"
            )
        h, w = hr.shape[-2:]
        if self.blur is not None and self.blur.prob > 0 and min(h, w) <= self.kernel_size // 2:
            raise FaigError(
                f"image {h}x{w} is too small for the {self.kernel_size}x{self.kernel_size} blur kernel "
                f"(reflect border needs H, W > {self.kernel_size // 2}); use larger crops or a smaller kernel_size"
            )
        return hr.unsqueeze(0) if hr.dim() == 3 else hr

    @torch.no_grad()
    def forward(
        self, hr: torch.Tensor, generator: torch.Generator | None = None, margin: int = 0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Degrade a batch with per-sample random ops; returns (lr, labels) with per-sample labels of length B.

        ``margin`` (a multiple of ``scale``, at least ``self.margin``): the batch holds that many pixels of context
        around each crop; the whole padded crop is degraded and only the LR of its centre is returned, so the
        blur's border handling never reaches it (the official order: degrade the image, then crop). JPEG blocks are
        aligned to the padded crop, not to the image.
        Labels: ``blur``/``noise``/``jpeg`` (bool, whether the op fired) and ``blur_sigma``/``noise_sigma``/
        ``jpeg_quality`` (the parameter used, 0 where the op did not fire). Randomness comes from
        ``generator`` (on the images' device) or the global RNG.
        """
        x = self._check_input(hr, generator)
        if margin and (margin % self.scale or min(x.shape[-2:]) <= 2 * margin):
            raise FaigError(f"margin {margin} must be a multiple of scale {self.scale} and leave a centre in the "
                            f"{x.shape[-2]}x{x.shape[-1]} crop")
        b, device, dtype = x.shape[0], x.device, x.dtype

        def draw(op: _Op | None, integer: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
            if op is None or op.prob == 0:
                return torch.zeros(b, dtype=torch.bool, device=device), torch.zeros(b, dtype=dtype, device=device)
            fire = torch.rand(b, generator=generator, device=device) < op.prob
            if integer:
                value = torch.randint(int(op.lo), int(op.hi) + 1, (b,), generator=generator, device=device)
                value = value.to(dtype)
            else:
                value = op.lo + (op.hi - op.lo) * torch.rand(b, generator=generator, device=device, dtype=dtype)
            return fire, value

        params = {}
        for name, op, integer in (("blur", self.blur, False), ("noise", self.noise, False), ("jpeg", self.jpeg, True)):
            params[name], params[f"{name}_value"] = draw(op, integer)
        lr = self._degrade(x, params, generator)
        if margin:
            cut = margin // self.scale
            lr = lr[..., cut:-cut, cut:-cut]
        labels = {
            "blur": params["blur"],
            "blur_sigma": params["blur_value"] * params["blur"],
            "noise": params["noise"],
            "noise_sigma": params["noise_value"] * params["noise"],
            "jpeg": params["jpeg"],
            "jpeg_quality": params["jpeg_value"] * params["jpeg"],
        }
        return (lr[0] if hr.dim() == 3 else lr), labels

    @torch.no_grad()
    def deterministic(self, hr: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Evaluation form: every configured op with prob > 0 always applied at its range midpoint; noise from a
        generator seeded with ``seed`` (same seed -> bit-identical output)."""
        x = self._check_input(hr, None)
        b, device, dtype = x.shape[0], x.device, x.dtype
        generator = torch.Generator(device=device).manual_seed(seed)
        params = {}
        for name, op in (("blur", self.blur), ("noise", self.noise), ("jpeg", self.jpeg)):
            on = op is not None and op.prob > 0
            params[name] = torch.full((b,), on, dtype=torch.bool, device=device)
            params[f"{name}_value"] = torch.full((b,), op.mid if on else 0.0, dtype=dtype, device=device)
        lr = self._degrade(x, params, generator)
        return lr[0] if hr.dim() == 3 else lr

    def _degrade(self, x: torch.Tensor, p: dict[str, torch.Tensor], generator: torch.Generator | None) -> torch.Tensor:
        """Run the chain on the whole batch; an op's result is kept only where its per-sample mask is set.

        Masked selection (rather than indexing the firing subset) keeps the step free of host-device syncs.
        """
        if self.blur is not None and self.blur.prob > 0:
            # kornia's separable Gaussian, what its gaussian_blur2d runs, without that function's check that
            # reads every sigma back to the host (the sigmas are checked positive when the pipeline is built)
            kernel = get_gaussian_kernel1d(self.kernel_size, p["blur_value"].unsqueeze(1))
            blurred = filter2d_separable(x, kernel, kernel, border_type="reflect")
            x = torch.where(p["blur"].view(-1, 1, 1, 1), blurred, x)
        x = downsample(x, self.scale, self.mode)
        if self.noise is not None and self.noise.prob > 0:
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            x = x + noise * (p["noise_value"] * p["noise"]).view(-1, 1, 1, 1)
        if self.jpeg is not None and self.jpeg.prob > 0:
            x = x.clamp(0.0, 1.0)
            x = torch.where(p["jpeg"].view(-1, 1, 1, 1), jpeg_codec_differentiable(x, p["jpeg_value"]), x)
        if self.quantize:
            x = torch.round(x * 255.0) / 255.0
        return x.clamp(0.0, 1.0)
