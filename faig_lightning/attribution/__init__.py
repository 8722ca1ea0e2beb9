"""Plain-torch attribution engine: FAIG, its baselines, masking and metrics (no Lightning, no Hydra).

Typical use::

    from faig_lightning.attribution import AttributionSettings, run_attribution, write_results
    result = run_attribution(baseline, target, eval_set, scale=2, settings=AttributionSettings(proportions=[1, 5]))
    write_results(result, "outputs/attribution")
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

# bound now, not on first use: the function shares its module's name, and importing the module (the engine does)
# sets the package attribute to the module, which a lazy name would then never replace (numpy only, cheap)
from faig_lightning.attribution.quadrature import RULES, quadrature

if TYPE_CHECKING:
    from faig_lightning.attribution.baselines import abs_filter_change, compute_ig, random_scores
    from faig_lightning.attribution.engine import AttributionResult, MaskingRow, run_attribution
    from faig_lightning.attribution.evalset import EvalItem
    from faig_lightning.attribution.faig import Completeness, FaigResult, compute_faig, discriminative_scores
    from faig_lightning.attribution.filters import FilterIndex, UnitGroup, ranking
    from faig_lightning.attribution.masking import FilterMasker
    from faig_lightning.attribution.methods import (
        METHODS,
        AttributionContext,
        AttributionMethod,
        MethodScores,
        get_method,
        register_method,
    )
    from faig_lightning.attribution.metrics import Evaluator, gradient_map, gradient_mse_x1000, psnr, quantize, ssim
    from faig_lightning.attribution.panels import Figure2Panel, figure2_panel
    from faig_lightning.attribution.report import write_results
    from faig_lightning.attribution.settings import AttributionSettings
    from faig_lightning.attribution.tables import masking_markdown

_HOMES = {
    "baselines": ("abs_filter_change", "compute_ig", "random_scores"),
    "engine": ("AttributionResult", "MaskingRow", "run_attribution"),
    "evalset": ("EvalItem",),
    "faig": ("Completeness", "FaigResult", "compute_faig", "discriminative_scores"),
    "filters": ("FilterIndex", "UnitGroup", "ranking"),
    "masking": ("FilterMasker",),
    "methods": ("METHODS", "AttributionContext", "AttributionMethod", "MethodScores", "get_method", "register_method"),
    "metrics": ("Evaluator", "gradient_map", "gradient_mse_x1000", "psnr", "quantize", "ssim"),
    "panels": ("Figure2Panel", "figure2_panel"),
    "report": ("write_results",),
    "settings": ("AttributionSettings",),
    "tables": ("masking_markdown",),
}
_MODULE_OF = {name: module for module, names in _HOMES.items() for name in names}

__all__ = [
    "METHODS",
    "RULES",
    "AttributionContext",
    "AttributionMethod",
    "AttributionResult",
    "AttributionSettings",
    "Completeness",
    "EvalItem",
    "Evaluator",
    "FaigResult",
    "Figure2Panel",
    "FilterIndex",
    "FilterMasker",
    "MaskingRow",
    "MethodScores",
    "UnitGroup",
    "abs_filter_change",
    "compute_faig",
    "compute_ig",
    "discriminative_scores",
    "figure2_panel",
    "get_method",
    "gradient_map",
    "gradient_mse_x1000",
    "masking_markdown",
    "psnr",
    "quadrature",
    "quantize",
    "random_scores",
    "ranking",
    "register_method",
    "run_attribution",
    "ssim",
    "write_results",
]


def __getattr__(name: str) -> object:
    """Import ``name`` from its module on first access (PEP 562): a reader of stored results (``faig-summarize``)
    loads neither torch nor the engine."""
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
    globals()[name] = value
    return value
