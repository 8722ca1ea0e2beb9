"""The Hydra configs: their folder (``CONF_DIR``) and the schemas of ``faig-train`` and ``faig-attribute``,
registered in Hydra's ConfigStore when this module is imported (before anything composes ``CONF_DIR``'s configs).

Each schema holds a config's keys, types and defaults, read typed by the code that uses them: the top-level
keys (``TrainConfig``, ``AttributeConfig``), each training stage (``StageConfig``, ``RetrainConfig``), the metrics
(``EvalConfig``) and the attribution (``AttributionConfig``: ``enabled`` and ``AttributionSettings``' own keys and
defaults). Keys a schema lacks can still be added (``+target.warmup=10``): the code that reads a section refuses
them in one line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from faig_lightning.attribution.settings import CONFIG_ONLY_KEYS, AttributionSettings

CONF_DIR = str(Path(__file__).parent / "conf")
"""The Hydra configs: ``faig_lightning/conf``, a link to the repository's top-level ``conf/`` in a checkout and a
folder of the package in a wheel, so installed console scripts find them too. Their defaults lists name the
schemas registered below (``train_schema``, ``attribute_schema``, ``attribution_schema``)."""


@dataclass
class StageConfig:
    """One training stage's optimisation (``baseline.*`` / ``target.*``); the defaults are the paper's target
    stage: Adam, cosine annealing with restarts every ``scheduler_period`` steps down to ``eta_min``, an EMA of
    the weights, a validation (and checkpoint) every ``val_every`` steps keeping the best ``monitor`` score.
    ``freeze`` names modules or parameters the stage leaves untouched, e.g. ``[conv_first,conv_last]``."""

    max_steps: int = 100_000
    lr: float = 5.0e-5
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    weight_decay: float = 0.0
    scheduler_period: int = 250_000
    eta_min: float = 1.0e-7
    ema_decay: float = 0.999
    val_every: int = 5000
    monitor: str = "val/psnr/mean"
    freeze: Any = field(default_factory=list)  # a list of names, or one name


@dataclass
class RetrainConfig(StageConfig):
    """``stage=retrain``: fine-tune only chosen filters of a baseline on the target's degradations.

    ``from_run`` (a finished run) gives the baseline to start from, the target to compare with and its rankings;
    ``method`` and ``degradations`` choose whose top ``proportion`` % filters (united; None = every degradation
    the run ranked); ``index`` lists index files instead (one filter per line, most important first);
    ``target_ckpt`` is the target the gain is measured against (default: ``from_run``'s)."""

    from_run: str | None = None
    method: str = "faig"
    degradations: Any = None
    proportion: int | float = 1
    index: Any = field(default_factory=list)
    target_ckpt: str | None = None


@dataclass
class EvalConfig:
    """How validation measures: PSNR / SSIM with ``crop_border`` pixels cut from each side (None = the scale, the
    paper's 2 at x2), on RGB or on BT.601 Y (``y_channel``), and whether image panels are logged."""

    crop_border: int | None = None
    y_channel: bool = False
    log_images: bool = True


@dataclass
class TrainConfig:
    """``faig-train``'s own keys (the groups -- model, degradation, data, trainer, logger, attribution -- come from
    ``conf/``): the run's ``name`` (in its folder's name), ``seed``, ``scale``, the ``baseline_ckpt`` a
    ``stage=target`` run starts from, ``resume`` (continue from ``<run>/<stage>/checkpoints/last.ckpt``),
    ``compile`` (``torch.compile`` the training forward: true, or a mode such as ``reduce-overhead``), ``fast`` (the
    whole training step on the device: the training images as one uint8 store on the GPU, crops cut there, no step
    waiting for the GPU; the same crops, draws and updates), each stage's optimisation and the metrics."""

    name: str = "faig"
    seed: int = 0
    scale: int = 2
    baseline_ckpt: str | None = None
    resume: bool = True
    compile: bool | str = False
    fast: bool = False
    baseline: StageConfig = field(
        default_factory=lambda: StageConfig(max_steps=1_000_000, lr=2.0e-4, monitor="val/psnr/clean"))
    target: StageConfig = field(default_factory=StageConfig)
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class AttributeConfig:
    """``faig-attribute``'s own keys: the ``scale`` and the two checkpoints (ours or BasicSR's) it ranks."""

    name: str = "attribute"
    scale: int = 2
    baseline_ckpt: str | None = MISSING
    target_ckpt: str | None = MISSING


def _config_value(value: Any) -> Any:
    """A settings default as a config value, as the configs write numbers: tuples as lists, whole floats as ints
    (``proportions: [1, 3, 5, 10]``); the settings turn them back into floats."""
    if isinstance(value, tuple):
        return [_config_value(v) for v in value]
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _attribution_config() -> type:
    """The ``attribution`` group's schema: ``enabled`` (run it after the target stage), then every field of
    ``AttributionSettings`` with its default, untyped: the settings check and normalise the values themselves
    (``proportions=5`` means ``[5]``)."""
    fields: list[tuple[str, Any, Any]] = [(CONFIG_ONLY_KEYS[0], bool, field(default=True))]
    for f in dataclasses.fields(AttributionSettings):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        fields.append((f.name, Any, field(default_factory=lambda d=default: _config_value(d))))
    schema = dataclasses.make_dataclass("AttributionConfig", fields)
    schema.__module__ = __name__  # pickled configs (submitit jobs) find it here
    return schema


AttributionConfig = _attribution_config()

_store = ConfigStore.instance()
_store.store(name="train_schema", node=TrainConfig)
_store.store(name="attribute_schema", node=AttributeConfig)
_store.store(name="attribution_schema", node=AttributionConfig)
