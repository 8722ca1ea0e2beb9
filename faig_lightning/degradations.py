"""Batched LR synthesis on the input's device: blur -> downsample xs -> noise -> optional JPEG -> 8-bit quantise.

Matches the FAIG training/test degradations: isotropic Gaussian blur with a reflect-101 border (``cv2.filter2D``),
bilinear downsampling (what the official ``cv2.resize`` call really did), additive Gaussian noise on the [0, 1]
scale, then round-and-clip to 8 bit. Each op fires per sample with its own probability.

One home per piece, kornia's layout: ``PAPER_LEVELS`` is the table of the paper's levels; ``DegradationSpec`` (with
its ops ``Blur``, ``Noise``, ``Jpeg``) the validated, typed configuration, built from a Hydra/dict config by
``DegradationSpec.from_config``; ``spec.sample`` / ``spec.midpoint`` a batch's per-sample ``DegradationParams``;
``degrade(x, spec, params)`` the pure chain; ``DegradationPipeline`` the thin ``nn.Module`` that samples and
degrades (and returns every sample's parameters as labels).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Self

import torch
import torch.nn.functional as F
from kornia.enhance import jpeg_codec_differentiable
from kornia.filters import filter2d_separable, get_gaussian_kernel1d, get_gaussian_kernel2d

from faig_lightning.errors import FaigError

DOWNSAMPLE_MODES = ("bilinear", "bicubic", "area")
SCALES = (1, 2, 3, 4)
LABEL_KEYS = ("blur", "blur_sigma", "noise", "noise_sigma", "jpeg", "jpeg_quality")
_DTYPES = (torch.float32, torch.float64)


@dataclass(frozen=True)
class PaperLevels:
    """The paper's degradation levels: the defaults of the target's training degradation, of the generated eval
    set (``data.eval_set``, ``data.make_eval_set``) and of degradation prediction's test inputs."""

    kernel_size: int = 21
    """Side of the Gaussian blur kernel."""
    blur_sigma: float = 2.0
    """Blur sigma of the target's training and of the eval set's ``blur`` input."""
    noise_sigma: float = 0.1
    """Noise sigma ([0, 1] units, 25.5 / 255) of the target's training and of the eval set's ``noise`` input."""
    prob: float = 0.5
    """Probability with which each training op fires, independently per sample."""
    downsample: str = "bilinear"
    """The resize (the official code's ``cv2.resize``, INTER_LINEAR)."""
    prediction_blur: tuple[float, ...] = (1.0, 2.0, 3.0)
    """Blur sigmas of degradation prediction's test inputs (levels the target never saw included)."""
    prediction_noise: tuple[float, ...] = (0.05, 0.1, 0.2)
    """Noise sigmas of degradation prediction's test inputs."""

    def training(self, scale: int = 2) -> DegradationSpec:
        """The target's training degradation: blur and noise at these levels, each firing with ``prob``."""
        return DegradationSpec(scale=scale, blur=Blur(prob=self.prob, kernel_size=self.kernel_size,
                                                      sigma=self.blur_sigma),
                               downsample=self.downsample, noise=Noise(prob=self.prob, sigma=self.noise_sigma))


PAPER_LEVELS = PaperLevels()
"""The one table of the paper's levels."""


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parse_prob(op: str, prob: object) -> float:
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


class _Op:
    """What the three ops share: a firing probability ``prob`` and a parameter that is a number (fixed) or a
    [lo, hi] range drawn uniformly per sample, normalised to a float or a (lo, hi) tuple when the op is built."""

    NAME: ClassVar[str]
    PARAM: ClassVar[str]
    prob: float

    @property
    def bounds(self) -> tuple[float, float]:
        """The parameter's [lo, hi] range (lo == hi: fixed)."""
        value = getattr(self, self.PARAM)
        return (float(value[0]), float(value[1])) if isinstance(value, tuple) else (float(value), float(value))

    @property
    def mid(self) -> float:
        """Midpoint of the range: the parameter used by the evaluation form."""
        lo, hi = self.bounds
        return (lo + hi) / 2

    @property
    def active(self) -> bool:
        """Whether the op can fire at all (``prob > 0``)."""
        return self.prob > 0

    def text(self) -> str:
        """Compact description for logs."""
        lo, hi = self.bounds
        value = f"{lo:g}" if lo == hi else f"[{lo:g}, {hi:g}]"
        return f"p={self.prob:g}, {self.PARAM}={value}"

    @classmethod
    def from_config(cls, cfg: object) -> Self:
        """The op from its config mapping (e.g. a DictConfig), every key checked; an instance is returned as is."""
        if isinstance(cfg, cls):
            return cfg
        if not isinstance(cfg, Mapping):
            raise FaigError(f"degradation '{cls.NAME}' must be a mapping such as {{'prob': 0.5, ...}} or null to "
                            f"disable it, got {cfg!r}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in cfg if k not in valid)
        if unknown:
            raise FaigError(f"unknown key(s) {unknown} in degradation '{cls.NAME}'; valid keys are {valid}")
        return cls(**{str(k): v for k, v in cfg.items()})


@dataclass(frozen=True)
class Blur(_Op):
    """Isotropic Gaussian blur (reflect-101 border): ``sigma`` in (0, inf), a number or [lo, hi]."""

    NAME: ClassVar[str] = "blur"
    PARAM: ClassVar[str] = "sigma"
    prob: float = 1.0
    kernel_size: int = PAPER_LEVELS.kernel_size
    sigma: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "prob", _parse_prob("blur", self.prob))
        ks = self.kernel_size
        if not isinstance(ks, int) or isinstance(ks, bool) or ks < 1 or ks % 2 == 0:
            raise FaigError(f"blur.kernel_size must be an odd positive int (e.g. 21), got {ks!r}")
        if self.sigma is None:
            raise FaigError("blur needs a 'sigma' (number or [lo, hi] in (0, inf)), e.g. {'sigma': 2.0}")
        lo, hi = _parse_range("blur", "sigma", self.sigma, 0.0, math.inf, lo_open=True)
        object.__setattr__(self, "sigma", lo if _is_number(self.sigma) else (lo, hi))


@dataclass(frozen=True)
class Noise(_Op):
    """Additive Gaussian noise after the resize: ``sigma`` in [0, 1] (image units), a number or [lo, hi]."""

    NAME: ClassVar[str] = "noise"
    PARAM: ClassVar[str] = "sigma"
    prob: float = 1.0
    sigma: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "prob", _parse_prob("noise", self.prob))
        if self.sigma is None:
            raise FaigError("noise needs a 'sigma' (number or [lo, hi] in [0, 1], image units), e.g. {'sigma': 0.1}")
        lo, hi = _parse_range("noise", "sigma", self.sigma, 0.0, 1.0)
        object.__setattr__(self, "sigma", lo if _is_number(self.sigma) else (lo, hi))


@dataclass(frozen=True)
class Jpeg(_Op):
    """Differentiable JPEG (kornia) after the noise: ``quality`` an int in [1, 100] or a [lo, hi] pair of ints
    (drawn as a uniform integer)."""

    NAME: ClassVar[str] = "jpeg"
    PARAM: ClassVar[str] = "quality"
    prob: float = 1.0
    quality: Any = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "prob", _parse_prob("jpeg", self.prob))
        quality = self.quality
        if quality is None:
            raise FaigError("jpeg needs a 'quality' (int or [lo, hi] of ints in [1, 100]), e.g. {'quality': 75}")
        items = list(quality) if isinstance(quality, Sequence) and not isinstance(quality, str) else [quality]
        if not all(isinstance(q, int) and not isinstance(q, bool) for q in items):
            raise FaigError(f"jpeg.quality must be an int or a [lo, hi] pair of ints in [1, 100], got {quality!r}")
        lo, hi = _parse_range("jpeg", "quality", quality, 1, 100)
        object.__setattr__(self, "quality", int(lo) if _is_number(quality) else (int(lo), int(hi)))


@dataclass(frozen=True)
class DegradationSpec:
    """The validated degradation: xS resize ``scale`` (1 = none) with ``downsample``, optional ``blur``, ``noise``
    and ``jpeg`` ops (None disables one), and 8-bit ``quantize``. An op may be given as its config mapping
    (``{'prob', 'kernel_size', 'sigma'}``, ``{'prob', 'sigma'}``, ``{'prob', 'quality'}``; ``prob`` defaults to 1)."""

    scale: int = 2
    blur: Blur | None = None
    downsample: str = PAPER_LEVELS.downsample
    noise: Noise | None = None
    jpeg: Jpeg | None = None
    quantize: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.scale, int) or isinstance(self.scale, bool) or self.scale not in SCALES:
            raise FaigError(f"scale must be an int in {list(SCALES)} (1 = no resize), got {self.scale!r}")
        if self.downsample not in DOWNSAMPLE_MODES:
            raise FaigError(
                f"unknown downsample mode {self.downsample!r}; valid modes are {list(DOWNSAMPLE_MODES)}"
            )
        if not isinstance(self.quantize, bool):
            raise FaigError(f"quantize must be true or false, got {self.quantize!r}")
        for name, op in (("blur", Blur), ("noise", Noise), ("jpeg", Jpeg)):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else op.from_config(value))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> DegradationSpec:
        """The spec of a config mapping (a dict or a Hydra ``degradation`` node), every key checked."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in cfg if k not in valid)
        if unknown:
            raise FaigError(f"unknown key(s) {unknown} in the degradation; valid keys are {valid}")
        return cls(**{str(k): v for k, v in cfg.items()})

    def _ops(self) -> tuple[tuple[str, _Op | None], ...]:
        return ("blur", self.blur), ("noise", self.noise), ("jpeg", self.jpeg)

    @property
    def margin(self) -> int:
        """HR pixels of context each side that a crop needs for its centre to be degraded as in the whole image.

        The blur reads ``kernel_size // 2`` pixels around each pixel and the antialiased bicubic resize ``2 * scale``
        (bilinear and area resizes by an integer factor read only their own cell); rounded up to a multiple of
        ``scale`` so that the LR grid of the crop stays aligned with the image's.
        """
        need = self.blur.kernel_size // 2 if self.blur is not None and self.blur.active else 0
        need += 2 * self.scale if self.downsample == "bicubic" and self.scale > 1 else 0
        return -(-need // self.scale) * self.scale

    def describe(self) -> str:
        """One line naming every configured op, for logs."""
        blur = f"blur(k={self.blur.kernel_size}, {self.blur.text()})" if self.blur else "blur=off"
        noise = f"noise({self.noise.text()})" if self.noise else "noise=off"
        jpeg = f"jpeg({self.jpeg.text()})" if self.jpeg else "jpeg=off"
        return f"{blur}, downsample={self.downsample} x{self.scale}, {noise}, {jpeg}, quantize={self.quantize}"

    def sample(
        self, batch: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
    ) -> DegradationParams:
        """Random per-sample parameters: per active op (in the order blur, noise, jpeg), whether it fires
        (``rand < prob``) then its value (uniform in [lo, hi]; JPEG quality a uniform integer)."""
        draws: dict[str, Draw | None] = {}
        for name, op in self._ops():
            if op is None or not op.active:
                draws[name] = None
                continue
            fire = torch.rand(batch, generator=generator, device=device) < op.prob
            lo, hi = op.bounds
            if isinstance(op, Jpeg):
                value = torch.randint(int(lo), int(hi) + 1, (batch,), generator=generator, device=device)
                value = value.to(dtype)
            else:
                value = lo + (hi - lo) * torch.rand(batch, generator=generator, device=device, dtype=dtype)
            draws[name] = Draw(fire, value)
        return DegradationParams(**draws)

    def midpoint(self, batch: int, device: torch.device, dtype: torch.dtype) -> DegradationParams:
        """The evaluation form's parameters: every active op fires, at its range midpoint."""
        draws = {name: None if op is None or not op.active else
                 Draw(torch.full((batch,), True, dtype=torch.bool, device=device),
                      torch.full((batch,), op.mid, dtype=dtype, device=device))
                 for name, op in self._ops()}
        return DegradationParams(**draws)


@dataclass(frozen=True)
class Draw:
    """One op's per-sample parameters: whether it fires (bool, (B,)) and its value ((B,), also where it does not)."""

    fire: torch.Tensor
    value: torch.Tensor


@dataclass(frozen=True)
class DegradationParams:
    """A batch's per-sample parameters, one ``Draw`` per op; None where the op is off for the whole batch (then
    ``degrade`` skips it, drawing no noise for it)."""

    blur: Draw | None = None
    noise: Draw | None = None
    jpeg: Draw | None = None

    def labels(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """``blur``/``noise``/``jpeg`` (bool, whether the op fired) and ``blur_sigma``/``noise_sigma``/
        ``jpeg_quality`` (the parameter used, 0 where the op did not fire), each of length ``batch``."""
        out = {}
        for name, key in zip(("blur", "noise", "jpeg"), LABEL_KEYS[1::2], strict=True):
            draw: Draw | None = getattr(self, name)
            if draw is None:
                out[name] = torch.zeros(batch, dtype=torch.bool, device=device)
                out[key] = torch.zeros(batch, dtype=dtype, device=device)
            else:
                out[name], out[key] = draw.fire, draw.value * draw.fire
        return out


def gaussian_kernel2d(kernel_size: int, sigma: float) -> torch.Tensor:
    """Normalised isotropic Gaussian kernel, shape (kernel_size, kernel_size), float32 (wraps kornia)."""
    if not isinstance(kernel_size, int) or isinstance(kernel_size, bool) or kernel_size < 1 or kernel_size % 2 == 0:
        raise FaigError(f"kernel_size must be an odd positive int (e.g. 21), got {kernel_size!r}")
    if not _is_number(sigma) or sigma <= 0:
        raise FaigError(f"sigma must be a number > 0, got {sigma!r}")
    return get_gaussian_kernel2d(kernel_size, (float(sigma), float(sigma)))[0]


def downsample(x: torch.Tensor, scale: int, mode: str = PAPER_LEVELS.downsample) -> torch.Tensor:
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


def degrade(
    x: torch.Tensor, spec: DegradationSpec, params: DegradationParams, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The chain on a (B, 3, H, W) batch: blur -> downsample -> noise -> JPEG -> quantise, each op applied where its
    per-sample ``params`` fire (``spec.sample`` or ``spec.midpoint``); noise from ``generator`` (on ``x``'s device)
    or the global RNG.

    Masked selection (rather than indexing the firing subset) keeps the step free of host-device syncs.
    """
    if params.blur is not None:
        # kornia's separable Gaussian, what its gaussian_blur2d runs, without that function's check that reads
        # every sigma back to the host (the sigmas were checked positive when the spec was built)
        kernel = get_gaussian_kernel1d(spec.blur.kernel_size, params.blur.value.unsqueeze(1))
        blurred = filter2d_separable(x, kernel, kernel, border_type="reflect")
        x = torch.where(params.blur.fire.view(-1, 1, 1, 1), blurred, x)
    x = downsample(x, spec.scale, spec.downsample)
    if params.noise is not None:
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + noise * (params.noise.value * params.noise.fire).view(-1, 1, 1, 1)
    if params.jpeg is not None:
        x = x.clamp(0.0, 1.0)
        x = torch.where(params.jpeg.fire.view(-1, 1, 1, 1), jpeg_codec_differentiable(x, params.jpeg.value), x)
    if spec.quantize:
        x = torch.round(x * 255.0) / 255.0
    return x.clamp(0.0, 1.0)


def check_images(hr: torch.Tensor, spec: DegradationSpec, generator: torch.Generator | None = None) -> torch.Tensor:
    """``hr`` as a (B, 3, H, W) float batch that ``spec`` can degrade (a (3, H, W) image gets a batch axis); one
    FaigError for a wrong shape, dtype, generator device or an image too small for the blur kernel."""
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
    if spec.blur is not None and spec.blur.active and min(h, w) <= spec.blur.kernel_size // 2:
        k = spec.blur.kernel_size
        raise FaigError(
            f"image {h}x{w} is too small for the {k}x{k} blur kernel "
            f"(reflect border needs H, W > {k // 2}); use larger crops or a smaller kernel_size"
        )
    return hr.unsqueeze(0) if hr.dim() == 3 else hr


class DegradationPipeline(torch.nn.Module):
    """Batched HR -> LR synthesis, the thin module over ``DegradationSpec`` and ``degrade``.

    Arguments: those of ``DegradationSpec`` (op configs as dicts/DictConfigs or ``Blur``/``Noise``/``Jpeg``). A
    sigma/quality is a number (fixed) or a [lo, hi] range drawn uniformly per sample (JPEG quality: uniform
    integer). ``forward`` draws each op per sample; ``deterministic`` always applies every configured op (prob > 0)
    with the range midpoint and seeded noise.
    """

    def __init__(
        self,
        scale: int = 2,
        blur: Mapping | Blur | None = None,
        downsample: str = PAPER_LEVELS.downsample,
        noise: Mapping | Noise | None = None,
        jpeg: Mapping | Jpeg | None = None,
        quantize: bool = True,
    ) -> None:
        super().__init__()
        self.spec = DegradationSpec(scale, blur, downsample, noise, jpeg, quantize)

    @classmethod
    def from_spec(cls, spec: DegradationSpec) -> DegradationPipeline:
        """The module degrading with ``spec``."""
        return cls(**{f.name: getattr(spec, f.name) for f in fields(spec)})

    @property
    def scale(self) -> int:
        """The resize factor."""
        return self.spec.scale

    @property
    def margin(self) -> int:
        """``DegradationSpec.margin``: the HR context each side a crop needs."""
        return self.spec.margin

    def describe(self) -> str:
        """One line naming every configured op, for logs."""
        return self.spec.describe()

    def extra_repr(self) -> str:
        """Shown by ``repr(module)``."""
        return self.describe()

    @torch.no_grad()
    def forward(
        self, hr: torch.Tensor, generator: torch.Generator | None = None, margin: int = 0
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Degrade a batch with per-sample random ops; returns (lr, labels) with per-sample labels of length B.

        ``margin`` (a multiple of ``scale``, at least ``self.margin``): the batch holds that many pixels of context
        around each crop; the whole padded crop is degraded and only the LR of its centre is returned, so the
        blur's border handling never reaches it (the official order: degrade the image, then crop). JPEG blocks are
        aligned to the padded crop, not to the image. Labels: ``DegradationParams.labels``. Randomness comes from
        ``generator`` (on the images' device) or the global RNG.
        """
        x = check_images(hr, self.spec, generator)
        if margin and (margin % self.scale or min(x.shape[-2:]) <= 2 * margin):
            raise FaigError(f"margin {margin} must be a multiple of scale {self.scale} and leave a centre in the "
                            f"{x.shape[-2]}x{x.shape[-1]} crop")
        b, device, dtype = x.shape[0], x.device, x.dtype
        params = self.spec.sample(b, generator, device, dtype)
        lr = degrade(x, self.spec, params, generator)
        if margin:
            cut = margin // self.scale
            lr = lr[..., cut:-cut, cut:-cut]
        return (lr[0] if hr.dim() == 3 else lr), params.labels(b, device, dtype)

    @torch.no_grad()
    def deterministic(self, hr: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Evaluation form: every configured op with prob > 0 always applied at its range midpoint; noise from a
        generator seeded with ``seed`` (same seed -> bit-identical output)."""
        x = check_images(hr, self.spec)
        generator = torch.Generator(device=x.device).manual_seed(seed)
        lr = degrade(x, self.spec, self.spec.midpoint(x.shape[0], x.device, x.dtype), generator)
        return lr[0] if hr.dim() == 3 else lr
