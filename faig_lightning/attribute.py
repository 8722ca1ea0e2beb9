"""``faig-attribute``: FAIG and its baselines on any baseline/target checkpoint pair (ours or BasicSR's).

With ``attribution.rankings_from=RUN_DIR`` it reuses that run's rankings (the nets are checked to be the same
weights) and only masks, so a dense proportion sweep costs masking alone: the model, scale, checkpoints, eval set
and degradation are the ones that run recorded (a command-line override that differs is refused), the analyses
run only when ``attribution.analyses`` is given, and the W&B run joins that run's group.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from faig_lightning import loggers
from faig_lightning.attribution import run_attribution, write_results
from faig_lightning.attribution.progress import ProgressBars
from faig_lightning.attribution.settings import AttributionSettings
from faig_lightning.attribution.tables import drop_markdown
from faig_lightning.checkpoints import load_weights
from faig_lightning.cli import main_with_exit_code, run_job, run_names
from faig_lightning.config import flat, plain
from faig_lightning.data import build_eval_set
from faig_lightning.data.eval_set import EVAL_SET_KEYS
from faig_lightning.errors import FaigError
from faig_lightning.nets.build import build_net, check_model
from faig_lightning.run_folder import NET_G_FILE, SETUP_KEYS, RunFolder, wandb_record
from faig_lightning.schemas import CONF_DIR

log = logging.getLogger(__name__)

CKPT_KEYS = ("baseline_ckpt", "target_ckpt")
FREE_KEYS = ("eval.cache_dir",)
"""Overrides that change where things are kept, not what is computed: never a conflict with the ranked run."""


def _given(cfg: DictConfig, key: str) -> Any:
    return None if OmegaConf.is_missing(cfg, key) or not cfg[key] else cfg[key]


def _absolute(path: str | None) -> str | None:
    return str(Path(path).resolve()) if path else None


def _absolute_eval(node: dict[str, Any]) -> dict[str, Any]:
    """The eval-set arguments with their folders absolute: a run's record then reads the same from any folder."""
    dirs = node.get("degraded_dirs")
    return {**node, "gt_dir": _absolute(node.get("gt_dir")),
            "degraded_dirs": {k: _absolute(v) for k, v in dirs.items()} if dirs else dirs}


def _overridden(overrides: Sequence[str]) -> dict[str, str]:
    """Config path -> the command-line override that sets it (a group override sets its package's node)."""
    return {(o.package or o.key_or_group): o.input_line for o in OverridesParser.create().parse_overrides(overrides)}


def _check_conflicts(setup: dict[str, Any], recorded: dict[str, Any], given: dict[str, str], source: Path) -> None:
    """Refuse a command-line override of the model, scale, eval set or degradation that differs from ``source``'s."""
    mine, theirs = OmegaConf.create(setup), OmegaConf.create(recorded)
    for path, line in given.items():
        top = path.split(".")[0]
        if top not in SETUP_KEYS or top in CKPT_KEYS or path in FREE_KEYS:
            continue
        new, old = OmegaConf.select(mine, path), OmegaConf.select(theirs, path)
        if plain(new) == plain(old):
            continue
        if isinstance(old, DictConfig) or isinstance(new, DictConfig):
            a, b = flat(plain(new) or {}), flat(plain(old) or {})
            detail = ", ".join(f"{k} {b.get(k)}" for k in dict.fromkeys([*b, *a]) if a.get(k) != b.get(k))
        else:
            sub = path[len(top) + 1:]
            detail = f"{sub} {plain(old)}" if sub else f"{plain(old)}"
        raise FaigError(f"{line} conflicts with {source}'s {top} ({detail}) — drop it, or rank again without "
                        "attribution.rankings_from")


def attribute(cfg: DictConfig, out_dir: Path, overrides: Sequence[str] = (), job: str | None = None,
              group: str | None = None) -> Path:
    """Check the settings, load both nets and the paired eval set, run every method, write into ``out_dir`` and
    log to the configured logger (W&B run ``job`` in ``group``; both default to the folder name).

    ``overrides`` are the command line's (Hydra's ``key=value``): with ``attribution.rankings_from`` they decide
    which settings the user asked for (conflicts with the ranked run, analyses)."""
    settings = AttributionSettings.from_mapping(plain(cfg.attribution))
    loggers.check_logger(plain(cfg.logger))
    setup = {"model": plain(cfg.model), "scale": cfg.scale, "eval": _absolute_eval(plain(cfg.eval)),
             "degradation": plain(cfg.degradation), **{key: _absolute(_given(cfg, key)) for key in CKPT_KEYS}}
    group = group or Path(out_dir).name
    if settings.rankings_from is not None:
        source = Path(settings.rankings_from).resolve()
        ranked = RunFolder(source)
        recorded = ranked.recorded_setup(ranked.read_results_summary(), EVAL_SET_KEYS)
        given = _overridden(overrides)
        _check_conflicts(setup, recorded, given, source)
        setup = {**recorded, "eval": {**recorded["eval"], "cache_dir": setup["eval"]["cache_dir"]},
                 **{key: setup[key] or _absolute(recorded[key]) for key in CKPT_KEYS}}
        analyses = settings.analyses if "attribution.analyses" in given else ()
        settings = settings.replace(rankings_from=str(source), analyses=analyses)
        record = wandb_record(source)
        group = record["group"] if record else source.name
    nets = []
    for key in CKPT_KEYS:
        if not setup[key]:
            raise FaigError(f"{key}=PATH is required (our {NET_G_FILE} / .ckpt, or a BasicSR .pth)")
        net = build_net(setup["model"])
        check_model(net, setup["scale"])  # before loading: a wrong scale names itself, not as a shape mismatch
        nets.append(load_weights(net, setup[key], key="ema").eval())
    settings.check_filters(len(settings.index(nets[1])))
    eval_set = build_eval_set(scale=setup["scale"], **setup["eval"])

    result = run_attribution(nets[0], nets[1], eval_set, scale=setup["scale"], settings=settings,
                             progress=ProgressBars(), pipeline=setup["degradation"])
    write_results(result, out_dir, provenance=setup)
    log.info("PSNR drop (dB) when the top filters are masked:\n%s", drop_markdown(result.masking))
    log.info("results written to %s", out_dir)
    if cfg.logger.kind == "wandb":  # the result files are the CSV record; W&B gets the curves, tables and panels
        config = {**plain(cfg), **setup, "attribution": {**plain(cfg.attribution), **settings.to_dict()}}
        from faig_lightning.callbacks.attribution import log_attribution  # Lightning's W&B logger is loaded now

        logger = loggers.build_logger(plain(cfg.logger), str(out_dir), job or Path(out_dir).name, group, config,
                                      job_type="attribute")
        try:
            log_attribution(logger.experiment, result, out_dir, nets[0], nets[1], eval_set[0], setup["scale"],
                            settings.panel_proportion)
        finally:
            loggers.finish(logger)
    return out_dir


@hydra.main(config_path=CONF_DIR, config_name="attribute", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    run_dir, job, group, multirun = run_names()  # named and grouped like faig-train's jobs
    overrides = list(HydraConfig.get().overrides.task)
    run_job("faig-attribute", run_dir, multirun, lambda: attribute(cfg, run_dir, overrides, job, group))


def main() -> None:
    """Console script ``faig-attribute``; bad input ends with one line and exit code 2."""
    main_with_exit_code("faig-attribute", _hydra_main)


if __name__ == "__main__":  # python -m: call the importable module's main, which submitit can pickle by reference
    from faig_lightning import attribute

    attribute.main()
