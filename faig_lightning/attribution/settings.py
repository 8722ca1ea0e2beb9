"""The one settings object of an attribution run, validated once when it is built.

``faig-train`` (its callback), ``faig-attribute`` and ``run_attribution`` all take an ``AttributionSettings``;
``AttributionSettings.from_mapping`` builds it from a config node (Hydra's ``attribution`` group) and turns
shorthand a command line produces (``proportions=5``, ``methods=faig``) into lists.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from faig_lightning.attribution.baselines import IG_VARIANTS
from faig_lightning.attribution.faig import AUTO_BUDGET, AUTO_START_STEPS, DEFAULT_RULE, DEFAULT_STEPS, DEFAULT_TOL
from faig_lightning.attribution.filters import FilterIndex
from faig_lightning.attribution.methods import METHODS, get_method
from faig_lightning.attribution.metrics import CHANNELS
from faig_lightning.attribution.modulation import DEFAULT_LAMBDAS
from faig_lightning.attribution.proportions import check_proportions, top_k
from faig_lightning.attribution.quadrature import RULES
from faig_lightning.attribution.validation import resolve_degradations
from faig_lightning.degradations import PAPER_LEVELS
from faig_lightning.errors import FaigError

ANALYSES = ("modulation", "locations", "prediction")
CONFIG_ONLY_KEYS = ("enabled",)
"""Keys of the ``attribution`` config group that switch the callback and are not engine settings."""


def _as_list(value: Any) -> list:
    """A list from a list/tuple, or a one-element list from a scalar (``proportions=5`` on a command line)."""
    if value is None:
        return []
    if isinstance(value, str | int | float | bool):
        return [value]
    return list(value)


def _check_int(key: str, value: Any, minimum: int, example: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise FaigError(f"attribution.{key} must be an integer >= {minimum}, got {value!r}; e.g. {example}")
    return value


@dataclass(frozen=True)
class AttributionSettings:
    """What to rank, how to integrate, what to mask and where to compute.

    - ``methods``: registered methods (``register_method``; default: the built-in ``METHODS``); ``degradations``:
      the ranked ones (None = every eval degradation but clean);
    - ``rule``/``steps``/``tol``/``auto_budget``: FAIG's quadrature (``official``/100 reproduces the paper's code;
      ``steps="auto"`` doubles from 8 nodes until the completeness gap is below ``tol`` or stops shrinking, within
      ``auto_budget`` nodes in all);
    - ``proportions``: masked percentages in (0, 100] (empty: no masking); ``seed``: the random baseline;
    - ``ig_variant``/``ig_steps``: IG's input-path sum (``srresnet``/``srcnn``: the official scripts' Riemann sums,
      100 points by default; ``gauss_legendre``: the same integral with 8 nodes by default); ``channel``: the
      gradient-map channel;
    - ``max_batch``: samples per gradient call (None: 1 on CPU, from free memory on a GPU); ``device``: ``auto``
      (a CUDA GPU when there is one, else the target's device), None (the target's), ``cpu``, ``cuda[:N]``;
      ``tf32``: allow TF32 convolutions/matmuls on GPUs (off by default, so GPU scores match the CPU's to float32
      precision; PyTorch's own default for convolutions is on);
    - ``panel_proportion``: the proportion shown in Figure-2 panels;
    - ``analyses``: among ``ANALYSES`` — ``modulation`` (the top ``analysis_proportion`` % filters of
      ``analysis_method`` set to ``lam * target + (1 - lam) * baseline`` for each of ``lambdas``), ``locations``
      (per layer, how many of each ranking's top filters it holds) and ``prediction`` (clean / blur / noise /
      blur+noise predicted from how much masking those filters changes the output, tested at the blur and noise
      sigmas ``prediction_blur`` and ``prediction_noise``); ``analysis_method`` None means ``faig`` when it is
      ranked, else the first method;
    - ``rankings_from``: a run folder whose rankings are reused (only masking is computed);
    - ``extra_units``: shell-style patterns of parameters outside the weights (norms, position-bias tables,
      prompts, biases) to rank too, each whole tensor as one unit numbered after the weights' units (empty: none);
      ``per_weight``: FAIG and IG score a unit by the mean over its weights instead of the sum, so units of
      different sizes (3x3 kernels, 1x1 kernels and Linear scalars, whole tensors) compare weight for weight; for
      nets whose units all have one size (the paper's) the rankings are the same. |theta - theta_bar| is a ratio
      of sums and does not change.
    """

    methods: tuple[str, ...] = METHODS
    degradations: tuple[str, ...] | None = None
    rule: str = DEFAULT_RULE
    steps: int | str = DEFAULT_STEPS
    tol: float = DEFAULT_TOL
    auto_budget: int = AUTO_BUDGET
    proportions: tuple[float, ...] = (1.0, 3.0, 5.0, 10.0)
    seed: int = 0
    ig_variant: str = "gauss_legendre"
    ig_steps: int | None = None
    channel: str = "grey"
    max_batch: int | None = None
    device: str | None = "auto"
    tf32: bool = False
    panel_proportion: float = 1.0
    rankings_from: str | None = None
    analyses: tuple[str, ...] = ANALYSES
    analysis_method: str | None = None
    analysis_proportion: float = 1.0
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS
    prediction_blur: tuple[float, ...] = PAPER_LEVELS.prediction_blur
    prediction_noise: tuple[float, ...] = PAPER_LEVELS.prediction_noise
    extra_units: tuple[str, ...] = ()
    per_weight: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        methods = tuple(dict.fromkeys(str(m) for m in _as_list(self.methods)))
        if not methods:
            raise FaigError(f"no attribution method chosen; set attribution.methods to some of {list(METHODS)}")
        for m in methods:
            get_method(m)  # a FaigError names the registered methods
        set_(self, "methods", methods)
        if self.degradations is not None:
            degs = tuple(dict.fromkeys(str(d) for d in _as_list(self.degradations)))
            if not degs:
                raise FaigError("attribution.degradations is empty; leave it null (every eval degradation but clean) "
                                "or name some, e.g. [blur,noise]")
            set_(self, "degradations", degs)
        if self.rule not in RULES:
            raise FaigError(f"unknown quadrature rule attribution.rule={self.rule!r}; choose among {list(RULES)}")
        if self.steps != "auto":
            _check_int("steps", self.steps, 1, "attribution.steps=100 (or auto)")
        if isinstance(self.tol, bool) or not isinstance(self.tol, int | float) or not 0 < self.tol < math.inf:
            raise FaigError(f"attribution.tol must be a number > 0, got {self.tol!r}; e.g. attribution.tol=0.01")
        set_(self, "tol", float(self.tol))
        _check_int("auto_budget", self.auto_budget, AUTO_START_STEPS, "attribution.auto_budget=100")
        if not isinstance(self.per_weight, bool):
            raise FaigError(f"attribution.per_weight must be true or false, got {self.per_weight!r}")
        if not isinstance(self.tf32, bool):
            raise FaigError(f"attribution.tf32 must be true or false, got {self.tf32!r}")
        set_(self, "proportions", check_proportions(_as_list(self.proportions)))
        if isinstance(self.panel_proportion, list | tuple):
            raise FaigError(f"attribution.panel_proportion must be one percentage, got {self.panel_proportion!r}")
        set_(self, "panel_proportion", check_proportions([self.panel_proportion], "attribution.panel_proportion")[0])
        _check_int("seed", self.seed, 0, "attribution.seed=0")
        if self.ig_variant not in IG_VARIANTS:
            raise FaigError(f"unknown attribution.ig_variant={self.ig_variant!r}; choose among {list(IG_VARIANTS)}")
        if self.ig_steps is not None:
            _check_int("ig_steps", self.ig_steps, 1, "attribution.ig_steps=100 (or null for the variant's default)")
        if self.channel not in CHANNELS:
            raise FaigError(f"unknown attribution.channel={self.channel!r}; choose among {list(CHANNELS)}")
        if self.max_batch is not None:
            _check_int("max_batch", self.max_batch, 1, "attribution.max_batch=8 (or null for the default)")
        set_(self, "device", check_device(self.device))
        analyses = tuple(dict.fromkeys(str(a) for a in _as_list(self.analyses)))
        unknown = [a for a in analyses if a not in ANALYSES]
        if unknown:
            raise FaigError(f"unknown attribution.analyses {unknown}; choose among {list(ANALYSES)} (or [] for none)")
        set_(self, "analyses", analyses)
        if self.analysis_method is not None and self.analysis_method not in methods:
            raise FaigError(f"attribution.analysis_method={self.analysis_method!r} is not among "
                            f"attribution.methods {list(methods)}; add it or pick one of them")
        if isinstance(self.analysis_proportion, list | tuple):
            raise FaigError("attribution.analysis_proportion must be one percentage, got "
                            f"{self.analysis_proportion!r}")
        set_(self, "analysis_proportion",
             check_proportions([self.analysis_proportion], "attribution.analysis_proportion")[0])
        lambdas = _as_list(self.lambdas)
        if not lambdas or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                                  for v in lambdas):
            raise FaigError(f"attribution.lambdas must list finite numbers, e.g. [0,0.5,1,1.5]; got {self.lambdas!r}")
        set_(self, "lambdas", tuple(float(v) for v in lambdas))
        for key, upper in (("prediction_blur", math.inf), ("prediction_noise", 1.0)):
            levels = _as_list(getattr(self, key))
            if not levels or not all(isinstance(v, int | float) and not isinstance(v, bool) and 0 < v <= upper
                                     for v in levels):
                raise FaigError(f"attribution.{key} must list sigmas in (0, {upper:g}], e.g. "
                                f"{list(getattr(type(self), key))}; got {getattr(self, key)!r}")
            set_(self, key, tuple(sorted({float(v) for v in levels})))
        if self.rankings_from is not None:
            set_(self, "rankings_from", str(self.rankings_from))
        extra = _as_list(self.extra_units)
        if not all(isinstance(v, str) and v for v in extra):
            raise FaigError("attribution.extra_units must list parameter-name patterns, e.g. "
                            f"['*relative_position_bias_table','*norm*'] (or [] for none); got {self.extra_units!r}")
        set_(self, "extra_units", tuple(dict.fromkeys(extra)))

    @classmethod
    def from_mapping(cls, node: Mapping[str, Any] | None) -> AttributionSettings:
        """Build from a plain mapping (an ``attribution`` config node); unknown keys are refused."""
        values = {k: v for k, v in dict(node or {}).items() if k not in CONFIG_ONLY_KEYS}
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise FaigError(f"unknown attribution setting(s) {unknown}; valid keys are {known}")
        return cls(**values)

    def replace(self, **changes: Any) -> AttributionSettings:
        """A validated copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (lists instead of tuples)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    def index(self, model: nn.Module) -> FilterIndex:
        """The units these settings rank in ``model``: its weights, plus ``extra_units``."""
        return FilterIndex.from_model(model, self.extra_units)

    def check_filters(self, num_filters: int) -> None:
        """Raise when a proportion selects no filter of a net with ``num_filters`` filters (``top_k``)."""
        for p in (*self.proportions, self.panel_proportion, self.analysis_proportion):
            if top_k(num_filters, p) < 1:
                smallest = math.ceil(100 * 10 / num_filters) / 10
                raise FaigError(f"masking {p:g} % of this net's {num_filters} filters selects none; use proportions "
                                f">= {smallest:g} (attribution.proportions)")

    def check_inputs(self, available: Sequence[str]) -> list[str]:
        """The ranked degradations given the eval set's ``available`` names; raise what the methods cannot use."""
        degs = resolve_degradations(self.degradations, available)
        for name in self.methods:
            get_method(name).check_inputs(available)
        return degs


def check_device(device: Any) -> str | None:
    """``device`` as a string after checking it names a device this machine has (None and "auto" stay)."""
    if device is None or device == "auto":
        return device
    try:
        dev = torch.device(str(device))
    except (RuntimeError, TypeError) as exc:
        raise FaigError(f"attribution.device={device!r} is not a device; use auto, cpu, cuda or cuda:N (or null "
                        "for the target's device)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise FaigError(f"attribution.device={device} but no CUDA GPU is visible; use attribution.device=auto "
                            "or attribution.device=cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise FaigError(f"attribution.device={device} but only {torch.cuda.device_count()} CUDA device(s) "
                            "exist; pick another index")
    elif dev.type not in ("cpu", "mps"):
        raise FaigError(f"attribution.device={device} is not supported; use cpu or cuda")
    return str(dev)
