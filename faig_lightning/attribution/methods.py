"""Attribution methods: one contract (:class:`AttributionMethod`) and the registry that ``run_attribution`` ranks with.

A method turns an :class:`AttributionContext` (the nets, eval set, ranked degradations, filter index, settings and
device of a run, all checked once by the engine before any method runs) into :class:`MethodScores`: a score per
filter (unit) of ``ctx.index`` for each ranked degradation, the most discriminative first after a descending sort.
The built-ins are ``faig``, ``ig``, ``abs_filter_change`` and ``random`` (``METHODS``, in this order, the default of
``AttributionSettings.methods``).

A new method is a subclass registered under a new name, then chosen like a built-in::

    from faig_lightning.attribution import run_attribution
    from faig_lightning.attribution.methods import AttributionMethod, MethodScores, register_method

    class WeightChange(AttributionMethod):
        name = "weight_change"

        def attribute(self, ctx):
            b, t = ctx.baseline.state_dict(), ctx.target.state_dict()
            change = ctx.index.per_filter({n: t[n] - b[n] for n in ctx.index.weight_names}).double().cpu()
            return MethodScores({d: change.numpy() for d in ctx.degradations})

    register_method(WeightChange())
    result = run_attribution(baseline, target, eval_set, scale=2, methods=["faig", "weight_change"])

A method reads what it needs from ``ctx.settings`` and may override ``check_inputs`` to refuse an eval set it cannot
use (IG needs clean inputs) before any method runs.

For the command line (``faig-attribute attribution.methods=[faig,weight_change]``), a package declares its methods
as entry points of the group ``faig_lightning.methods`` (``weight_change = "my_package.methods:WeightChange"`` under
``[project.entry-points."faig_lightning.methods"]``); a name the registry lacks is looked up there, loaded,
instantiated and registered.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from faig_lightning.attribution.baselines import abs_filter_change_unchecked, ig_unchecked, random_scores
from faig_lightning.attribution.evalset import EvalItem
from faig_lightning.attribution.faig import Progress, ReduceFn, faig_unchecked
from faig_lightning.attribution.filters import FilterIndex
from faig_lightning.attribution.validation import require_clean
from faig_lightning.errors import FaigError

__all__ = [
    "METHODS",
    "AttributionContext",
    "AttributionMethod",
    "MethodScores",
    "get_method",
    "register_method",
]


@dataclass(frozen=True)
class AttributionContext:
    """One run's checked inputs: baseline and target (same architecture, finite, different), the eval set (valid
    for ``scale``), the ranked ``degradations``, the target's filter ``index``, the validated ``settings`` (the
    run's ``AttributionSettings``; typed ``Any`` because settings.py validates names against this registry) and
    the resolved ``device``; ``reduce_fn`` sums tensors over DDP processes (each holds its eval-set shard) and
    ``progress(stage, done, total)`` reports progress."""

    baseline: nn.Module
    target: nn.Module
    eval_set: Sequence[EvalItem]
    scale: int
    degradations: list[str]
    index: FilterIndex
    settings: Any
    device: torch.device
    reduce_fn: ReduceFn | None = None
    progress: Progress | None = None


@dataclass(frozen=True)
class MethodScores:
    """What a method returns: ``scores[degradation]``, one score per filter (ranked as float64), and a
    method-specific ``detail`` (FAIG's :class:`~faig_lightning.attribution.faig.FaigResult`, else None)."""

    scores: Mapping[str, np.ndarray]
    detail: Any = None

    def checked(self, method: str, degradations: Sequence[str], num_filters: int) -> dict[str, np.ndarray]:
        """The scores as float64 arrays in ``degradations`` order; raise when one is missing or not ``(N,)``."""
        missing = [d for d in degradations if d not in self.scores]
        if missing:
            raise FaigError(f"attribution method {method!r} returned no scores for {missing}")
        out = {}
        for d in degradations:
            scores = np.asarray(self.scores[d], dtype=np.float64)
            if scores.shape != (num_filters,):
                raise FaigError(f"attribution method {method!r} returned scores of shape {scores.shape} for {d!r}; "
                                f"expected ({num_filters},), one per filter of the index")
            out[d] = scores
        return out


class AttributionMethod(ABC):
    """A filter-ranking method; ``name`` is how ``attribution.methods`` chooses it."""

    name: ClassVar[str]

    def check_inputs(self, available: Sequence[str]) -> None:
        """Raise a FaigError when an eval set with the degradations ``available`` lacks what this method needs."""
        return None

    @abstractmethod
    def attribute(self, ctx: AttributionContext) -> MethodScores:
        """Scores of every filter of ``ctx.index`` for each degradation of ``ctx.degradations``."""


class Faig(AttributionMethod):
    """FAIG (:func:`~faig_lightning.attribution.faig.compute_faig`): the discriminative scores ``D_d``; the detail
    is the :class:`~faig_lightning.attribution.faig.FaigResult`."""

    name = "faig"

    def attribute(self, ctx: AttributionContext) -> MethodScores:
        """FAIG with the run's quadrature settings."""
        cfg = ctx.settings
        result = faig_unchecked(
            ctx.baseline, ctx.target, ctx.eval_set, ctx.index, ctx.degradations, steps=cfg.steps, rule=cfg.rule,
            tol=cfg.tol, budget=cfg.auto_budget, max_batch=cfg.max_batch, device=ctx.device, reduce_fn=ctx.reduce_fn,
            progress=ctx.progress, per_weight=cfg.per_weight,
        )  # fmt: skip
        return MethodScores(result.discriminative, result)


class IntegratedGradients(AttributionMethod):
    """IG along input paths from the clean LR image (:func:`~faig_lightning.attribution.baselines.compute_ig`)."""

    name = "ig"

    def check_inputs(self, available: Sequence[str]) -> None:
        """IG starts its input paths at the clean LR image."""
        require_clean(available)

    def attribute(self, ctx: AttributionContext) -> MethodScores:
        """IG of the target with the run's ``ig_variant`` and ``ig_steps``."""
        cfg = ctx.settings
        return MethodScores(ig_unchecked(
            ctx.target, ctx.eval_set, ctx.index, ctx.degradations, variant=cfg.ig_variant, steps=cfg.ig_steps,
            max_batch=cfg.max_batch, device=ctx.device, reduce_fn=ctx.reduce_fn, progress=ctx.progress,
            per_weight=cfg.per_weight,
        ))  # fmt: skip


class AbsFilterChange(AttributionMethod):
    """``|theta - theta_bar|`` relative to the baseline, one ranking for every degradation
    (:func:`~faig_lightning.attribution.baselines.abs_filter_change`)."""

    name = "abs_filter_change"

    def attribute(self, ctx: AttributionContext) -> MethodScores:
        """The same degradation-agnostic scores for each degradation."""
        change = abs_filter_change_unchecked(ctx.baseline, ctx.target, ctx.index)
        return MethodScores({d: change for d in ctx.degradations})


class RandomRanking(AttributionMethod):
    """A seeded random permutation per degradation (:func:`~faig_lightning.attribution.baselines.random_scores`)."""

    name = "random"

    def attribute(self, ctx: AttributionContext) -> MethodScores:
        """Permutations from the run's ``seed``."""
        return MethodScores(random_scores(len(ctx.index), ctx.degradations, ctx.settings.seed))


_REGISTRY: dict[str, AttributionMethod] = {}
ENTRY_POINT_GROUP = "faig_lightning.methods"
"""The entry-point group where installed packages declare their methods (name = method name)."""


def register_method(method: AttributionMethod) -> AttributionMethod:
    """Make ``method`` choosable as ``attribution.methods=[..., method.name]``; returns it. A FaigError names a
    name already taken."""
    name = getattr(method, "name", None)
    if not isinstance(method, AttributionMethod) or not isinstance(name, str) or not name:
        raise FaigError(f"register an AttributionMethod instance with a non-empty name, got {method!r}")
    if name in _REGISTRY:
        raise FaigError(f"attribution method {name!r} is already registered; pick another name "
                        f"(registered: {list(_REGISTRY)})")
    _REGISTRY[name] = method
    return method


def get_method(name: str) -> AttributionMethod:
    """The registered method called ``name``; a FaigError names the registered ones."""
    method = _REGISTRY.get(name) or _from_entry_point(name)
    if method is None:
        raise FaigError(f"unknown attribution method {name!r}; choose among {list(_REGISTRY)}, e.g. "
                        "attribution.methods=[faig,random]")
    return method


def _from_entry_point(name: str) -> AttributionMethod | None:
    """The method an installed package declares as entry point ``name`` (a class or an instance), registered; None
    when no package declares it."""
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not found:
        return None
    try:
        loaded = found[0].load()
    except Exception as exc:  # the plugin's own import error, named with its entry point
        raise FaigError(f"attribution method {name!r} ({found[0].value}) failed to load: {exc}") from None
    method = loaded() if isinstance(loaded, type) else loaded
    if getattr(method, "name", None) != name:
        got = getattr(method, "name", None)
        raise FaigError(f"entry point {name!r} = {found[0].value} gives a method named {got!r}; the entry point's "
                        "name must be the method's name")
    return register_method(method)


METHODS: tuple[str, ...] = tuple(
    register_method(method).name
    for method in (Faig(), IntegratedGradients(), AbsFilterChange(), RandomRanking())
)
"""The built-in methods, in order: the default of ``AttributionSettings.methods``."""
