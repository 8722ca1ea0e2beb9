"""The paper's levels have one home, ``PAPER_LEVELS``: every config and default that restates one agrees with it."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from faig_lightning.attribution.prediction import conditions, synthesise
from faig_lightning.attribution.settings import AttributionSettings
from faig_lightning.data.eval_set import PAPER_EVAL_DEGRADATIONS
from faig_lightning.data.make_eval_set import make_eval_set
from faig_lightning.degradations import PAPER_LEVELS, DegradationPipeline, DegradationSpec

CONF = Path(__file__).resolve().parents[1] / "conf"


def _degradation(name: str, scale: int = 2) -> dict:
    cfg = OmegaConf.load(CONF / "degradation" / f"{name}.yaml")
    cfg.scale = scale
    return OmegaConf.to_container(cfg, resolve=True)


def test_training_config_is_the_table():
    """``degradation=blur_noise`` (key for key, in order) and ``degradation=clean`` restate the table's defaults."""
    cfg = _degradation("blur_noise")
    want = dataclasses.asdict(PAPER_LEVELS.training(scale=2))
    assert cfg == want and list(cfg) == list(want)
    assert list(cfg["blur"]) == list(want["blur"]) and list(cfg["noise"]) == list(want["noise"])
    assert DegradationSpec.from_config(cfg) == PAPER_LEVELS.training(scale=2)
    assert DegradationSpec.from_config(_degradation("clean")) == DegradationSpec(scale=2)


@pytest.mark.parametrize("degradation", ["blur_noise", "clean"])
def test_generated_eval_set_follows_the_table(degradation: str):
    """The eval set's generated levels are the target's, else (clean target) the config's fallbacks: both the
    paper's; ``make_eval_set``'s defaults are the same."""
    root = OmegaConf.create({"scale": 2, "degradation": _degradation(degradation), "paths": {"cache_dir": "cache"},
                             "eval": OmegaConf.load(CONF / "evalset" / "default.yaml")})
    assert OmegaConf.to_container(root.eval.degradations, resolve=True) == PAPER_EVAL_DEGRADATIONS
    assert root.eval.downsample == PAPER_LEVELS.downsample
    defaults = {k: p.default for k, p in inspect.signature(make_eval_set).parameters.items()}
    assert (defaults["blur_sigma"], defaults["blur_kernel_size"], defaults["noise_sigma"], defaults["downsample"]) == (
        PAPER_LEVELS.blur_sigma, PAPER_LEVELS.kernel_size, PAPER_LEVELS.noise_sigma, PAPER_LEVELS.downsample)


def test_prediction_levels_and_inputs_follow_the_table():
    """Prediction tests the table's levels, marks the paper's training levels seen, and synthesises through the
    spec: without a training pipeline, the paper's kernel and resize."""
    settings = AttributionSettings()
    assert (settings.prediction_blur, settings.prediction_noise) == (PAPER_LEVELS.prediction_blur,
                                                                    PAPER_LEVELS.prediction_noise)
    conds = conditions({"blur": PAPER_LEVELS.prediction_blur, "noise": PAPER_LEVELS.prediction_noise},
                       PAPER_LEVELS.training())
    seen = {c.name for c in conds if c.seen}
    assert f"blur{PAPER_LEVELS.blur_sigma:g}+noise{PAPER_LEVELS.noise_sigma:g}" in seen and "blur1" not in seen
    gt = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(0))
    (cond,) = [c for c in conds if c.name == "blur2+noise0.1"]
    paper = DegradationPipeline(scale=2, **PAPER_EVAL_DEGRADATIONS["blur"], noise={"sigma": 0.1})
    assert torch.equal(synthesise(gt, cond, scale=2, pipeline=None, seed=3), paper.deterministic(gt, seed=3))
