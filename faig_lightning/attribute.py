"""``faig-attribute``: FAIG and its baselines on any baseline/target checkpoint pair (ours or BasicSR's)."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from faig_lightning.attribution import run_attribution, write_results
from faig_lightning.attribution.report import drop_markdown, print_progress
from faig_lightning.checkpoints import load_weights
from faig_lightning.config import CONF_DIR, engine_settings, exit_on_user_error
from faig_lightning.data import build_eval_set
from faig_lightning.errors import FaigError


def attribute(cfg: DictConfig, out_dir: Path) -> Path:
    """Load both nets and the paired eval set, run every method, write the results into ``out_dir``."""
    nets = []
    for key in ("baseline_ckpt", "target_ckpt"):
        if OmegaConf.is_missing(cfg, key) or not cfg[key]:
            raise FaigError(f"{key}=PATH is required (our net_g.pth / .ckpt, or a BasicSR .pth)")
        nets.append(load_weights(instantiate(cfg.model), cfg[key], key="ema").eval())
    eval_set = build_eval_set(scale=cfg.scale, **OmegaConf.to_container(cfg.eval, resolve=True))

    result = run_attribution(nets[0], nets[1], eval_set, scale=cfg.scale, progress=print_progress,
                             **engine_settings(cfg.attribution))
    write_results(result, out_dir)
    print("PSNR drop (dB) when the top filters are masked:")
    print(drop_markdown(result.masking))
    print(f"results written to {out_dir}")
    return out_dir


@hydra.main(config_path=CONF_DIR, config_name="attribute", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Console script ``faig-attribute``; bad input ends with one clear message."""
    with exit_on_user_error("faig-attribute"):
        attribute(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
