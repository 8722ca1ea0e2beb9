"""``faig-attribute``: FAIG and its baselines on any baseline/target checkpoint pair (ours or BasicSR's).

With ``attribution.rankings_from=RUN_DIR`` it reuses that run's rankings (the nets are checked to be the same
weights) and only masks, so a dense proportion sweep costs masking alone; the model, scale and checkpoints
default to the ones that run recorded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from faig_lightning.attribution import run_attribution, write_results
from faig_lightning.attribution.report import ProgressBars, drop_markdown
from faig_lightning.attribution.settings import AttributionSettings
from faig_lightning.attribution.stored import read_results_summary
from faig_lightning.attribution.validation import check_model
from faig_lightning.checkpoints import load_weights
from faig_lightning.cli import main_with_exit_code, run_job
from faig_lightning.config import CONF_DIR, plain
from faig_lightning.data import build_eval_set
from faig_lightning.errors import FaigError
from faig_lightning.nets import build_net

log = logging.getLogger(__name__)


def _given(cfg: DictConfig, key: str) -> Any:
    return None if OmegaConf.is_missing(cfg, key) or not cfg[key] else cfg[key]


def attribute(cfg: DictConfig, out_dir: Path) -> Path:
    """Check the settings, load both nets and the paired eval set, run every method, write into ``out_dir``."""
    settings = AttributionSettings.from_mapping(plain(cfg.attribution))
    model, scale = plain(cfg.model), cfg.scale
    ckpts = {key: _given(cfg, key) for key in ("baseline_ckpt", "target_ckpt")}
    if settings.rankings_from is not None:
        recorded = read_results_summary(settings.rankings_from).get("provenance", {})
        model, scale = recorded.get("model", model), recorded.get("scale", scale)
        ckpts = {key: path or recorded.get(key) for key, path in ckpts.items()}
    nets = []
    for key, path in ckpts.items():
        if not path:
            raise FaigError(f"{key}=PATH is required (our net_g.pth / .ckpt, or a BasicSR .pth)")
        net = build_net(model)
        check_model(net, scale)  # before loading: a wrong scale names itself, not as a shape mismatch
        nets.append(load_weights(net, path, key="ema").eval())
    settings.check_filters(len(settings.index(nets[1])))
    eval_set = build_eval_set(scale=scale, **OmegaConf.to_container(cfg.eval, resolve=True))

    result = run_attribution(nets[0], nets[1], eval_set, scale=scale, settings=settings, progress=ProgressBars(),
                             pipeline=plain(cfg.degradation))
    write_results(result, out_dir, provenance={**{k: str(v) for k, v in ckpts.items()}, "model": model,
                                               "scale": scale})
    log.info("PSNR drop (dB) when the top filters are masked:\n%s", drop_markdown(result.masking))
    log.info("results written to %s", out_dir)
    return out_dir


@hydra.main(config_path=CONF_DIR, config_name="attribute", version_base="1.3")
def _hydra_main(cfg: DictConfig) -> None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    run_job("faig-attribute", run_dir, hc.mode == RunMode.MULTIRUN, lambda: attribute(cfg, run_dir))


def main() -> None:
    """Console script ``faig-attribute``; bad input ends with one line and exit code 2."""
    main_with_exit_code("faig-attribute", _hydra_main)


if __name__ == "__main__":
    main()
