"""The experiment presets: what each composes to, and the paper-size preset on the embedded photos, run tiny."""

from __future__ import annotations

import json

import pytest
from helpers import TINY, run_cli
from hydra import compose, initialize_config_dir

from faig_lightning.attribution.filters import FilterIndex
from faig_lightning.nets import build_net
from faig_lightning.schemas import CONF_DIR


def composed(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def test_paper_size_preset_on_the_embedded_photos() -> None:
    """The paper's 64x16 MSRResNet (its 151,936 filters), the built-in photos (no folder to give), batch 16 of
    64 px, the paper's betas, EMA and PSNR crop; schedules short enough for minutes on one GPU."""
    cfg = composed("experiment=paper_srresnet_builtin")
    assert (cfg.model.num_feat, cfg.model.num_block, cfg.scale) == (64, 16, 2)
    assert len(FilterIndex.from_model(build_net(cfg.model))) == 151_936
    assert cfg.data.train_source == "builtin" and cfg.data.train_dir is None
    assert (cfg.data.batch_size, cfg.data.gt_size, cfg.eval.crop_border) == (16, 64, 2)
    paper = composed("experiment=paper_srresnet")
    for stage in ("baseline", "target"):
        assert list(cfg[stage].betas) == list(paper[stage].betas) and cfg[stage].ema_decay == paper[stage].ema_decay
        assert cfg[stage].scheduler_period == cfg[stage].max_steps  # one cosine period per stage
        assert cfg[stage].max_steps % cfg[stage].val_every == 0  # validated (and checkpointed) at the end
    assert cfg.baseline.max_steps + cfg.target.max_steps <= 12_000
    assert cfg.trainer.accelerator == "gpu"


@pytest.mark.slow
def test_paper_size_preset_runs_tiny_on_the_cpu(tmp_path) -> None:
    """``experiment=paper_srresnet_builtin`` end to end on the CPU with a tiny net: both stages on the built-in
    photos, then the attribution with its modulation points."""
    run = tmp_path / "run"
    run_cli(tmp_path, "faig_lightning.train", "experiment=paper_srresnet_builtin", "trainer=cpu", *TINY,
            "logger=csv", "attribution.methods=[faig,random]", "attribution.proportions=[5]",
            "attribution.analyses=[modulation]", f"hydra.run.dir={run}")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["settings"]["lambdas"] == [0, 0.5, 1, 1.5]
    for stage in ("baseline", "target"):
        assert json.loads((run / stage / "summary.json").read_text())["global_step"] == 4
