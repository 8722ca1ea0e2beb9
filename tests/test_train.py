"""End-to-end `faig-train` runs on a tiny config: both stages, multirun, resume, DDP, bad input."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
from helpers import faig_train

from faig_lightning.attribution import run_attribution
from faig_lightning.checkpoints import load_weights
from faig_lightning.data import build_eval_set
from faig_lightning.nets import MSRResNet


@pytest.mark.slow
def test_both_stages_one_run_folder(tmp_path):
    run = tmp_path / "run"
    faig_train(tmp_path, "stage=both", "logger=wandb", f"hydra.run.dir={run}")
    for stage in ("baseline", "target"):
        summary = json.loads((run / stage / "summary.json").read_text())
        assert summary["global_step"] == 4
        assert (run / stage / "checkpoints" / "last.ckpt").is_file()
        pth = torch.load(run / stage / "net_g.pth", weights_only=True)
        assert set(pth) == {"params", "params_ema"}
        assert any(not torch.equal(pth["params"][k], pth["params_ema"][k]) for k in pth["params"])  # EMA differs
        net = load_weights(MSRResNet(scale=2, num_feat=4, num_block=1), run / stage / "net_g.pth")
        assert net(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)
        assert {"val/psnr/clean", "val/psnr/blur", "val/psnr/noise", "val/ssim/noise"} <= set(summary["final_metrics"])
    # the target started from the baseline: its hyper-parameters name the baseline checkpoint
    ckpt = torch.load(run / "target" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["baseline_ckpt"].endswith("baseline/checkpoints/last.ckpt")
    assert ckpt["hyper_parameters"]["net"]["_target_"] == "faig_lightning.nets.MSRResNet"
    runs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # one W&B run per stage
    # the attribution callback ran after the target stage and wrote the faig-attribute artifacts
    for name in ("masking.csv", "curves.png", "summary.json", "attribution/faig/blur_index.txt",
                 "attribution/random/noise_scores.npy"):
        assert (run / name).is_file(), name
    logged = runs[-1].joinpath(next(p.name for p in runs[-1].glob("*.wandb"))).read_bytes()
    assert b"attribution/masking" in logged and b"attribution/figure2/blur" in logged


@pytest.mark.slow
def test_interrupted_run_resumes_from_last_ckpt(tmp_path):
    run = tmp_path / "run"
    faig_train(tmp_path, "stage=baseline", "logger=none", f"hydra.run.dir={run}")
    proc = faig_train(tmp_path, "stage=baseline", "logger=none", f"hydra.run.dir={run}", "baseline.max_steps=8")
    summary = json.loads((run / "baseline" / "summary.json").read_text())
    assert summary["start_step"] == 4 and summary["global_step"] == 8, proc.stdout[-2000:]


def _results(run) -> tuple[dict[str, torch.Tensor], str]:
    """The target's exported weights and the masking table of a finished two-stage run."""
    weights = torch.load(run / "target" / "net_g.pth", weights_only=True)
    return {**weights["params"], **{f"ema.{k}": v for k, v in weights["params_ema"].items()}}, \
        (run / "masking.csv").read_text()


def _assert_identical(a, b) -> None:
    (wa, ma), (wb, mb) = _results(a), _results(b)
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert ma == mb


@pytest.mark.slow
def test_logger_progress_bar_and_interruption_do_not_change_results(tmp_path):
    """Same seed, same machine: csv vs offline W&B with the progress bar, and a target stage stopped at step 2 and
    resumed from last.ckpt, give bit-identical target weights and masking tables; another seed does not."""
    reference, plotted, resumed, other = (tmp_path / name for name in ("csv", "wandb", "resumed", "seed1"))
    faig_train(tmp_path, "logger=csv", f"hydra.run.dir={reference}")
    faig_train(tmp_path, "logger=wandb", "trainer.enable_progress_bar=true", f"hydra.run.dir={plotted}")
    _assert_identical(reference, plotted)

    faig_train(tmp_path, "logger=none", "target.max_steps=2", f"hydra.run.dir={resumed}")  # stops after epoch 0
    faig_train(tmp_path, "logger=none", f"hydra.run.dir={resumed}")
    summary = json.loads((resumed / "target" / "summary.json").read_text())
    assert (summary["fit"], summary["start_step"], summary["global_step"]) == ("resumed", 2, 4)
    _assert_identical(reference, resumed)
    stage_seeds = {json.loads((resumed / s / "summary.json").read_text())["stage_seed"] for s in ("baseline", "target")}
    assert len(stage_seeds) == 2  # each stage has its own stream

    faig_train(tmp_path, "logger=none", "seed=1", f"hydra.run.dir={other}")
    assert not torch.equal(_results(reference)[0]["conv_first.weight"], _results(other)[0]["conv_first.weight"])
    # a stage seed depends on the run's seed and the stage only: seed 1's baseline was initialised differently
    proc = faig_train(tmp_path, "logger=none", "seed=0", f"hydra.run.dir={other}", check=False)
    assert proc.returncode == 2 and "trained with another seed than seed=0" in proc.stderr


@pytest.mark.slow
def test_ddp_two_cpu_processes_and_sharded_attribution(tmp_path):
    """Both stages under DDP (gloo, 2 processes); the callback shards the eval images across the processes and
    all-reduces the scores: the same scores and masking metrics as one process on the exported checkpoints."""
    run = tmp_path / "run"
    faig_train(tmp_path, "stage=both", "logger=csv", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
               "data.eval.photos=[chelsea,motorcycle_left]", "attribution.steps=4", "attribution.proportions=[1,10]",
               "attribution.methods=[faig]", f"hydra.run.dir={run}")
    nets = [MSRResNet(scale=2, num_feat=4, num_block=1) for _ in range(2)]
    for net, stage in zip(nets, ("baseline", "target"), strict=True):
        assert json.loads((run / stage / "summary.json").read_text())["global_step"] == 4
        load_weights(net, run / stage / "net_g.pth")
    eval_set = build_eval_set(scale=2, photos=["chelsea", "motorcycle_left"], cache_dir=tmp_path / "cache")
    single = run_attribution(nets[0], nets[1], list(eval_set), scale=2, methods=["faig"], steps=4,
                             proportions=[1, 10])
    for deg in ("blur", "noise"):
        ddp = np.load(run / "attribution" / "faig" / f"{deg}_scores.npy")
        ref = single.scores["faig"][deg]
        # float32 sums over whole images in another order (threads, shards) differ by up to ~1e-3 relative;
        # a shard missing from the all-reduce would be off by tens of percent
        np.testing.assert_allclose(ddp, ref, rtol=5e-3, atol=1e-4 * np.abs(ref).max())
    settings = json.loads((run / "summary.json").read_text())["settings"]
    assert (settings["world_size"], settings["images_per_process"], settings["num_images"]) == (2, 1, 2)
    rows = list(csv.DictReader((run / "masking.csv").open()))
    ref_rows = {(r.method, r.masked_degradation, r.proportion, r.input_degradation): r.psnr for r in single.masking}
    for row in rows:
        key = (row["method"], row["masked_degradation"], float(row["proportion"]), row["input_degradation"])
        assert abs(float(row["psnr"]) - ref_rows[key]) < 1e-3


NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without a GPU")


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad_ckpts")
    (folder / "empty.pth").write_bytes(b"")
    (folder / "text.pth").write_text("not a checkpoint\n")
    return folder


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["attribution.proportions=[0]"], "attribution.proportions value 0 must be a percentage in (0, 100]"),
        (["attribution.proportions=[0.1]"], "selects none; use proportions >= 0.8"),
        (["attribution.methods=[foo]"], "unknown attribution method 'foo'"),
        (["+attribution.stpes=4"], "unknown attribution setting(s) ['stpes']"),
        pytest.param(["attribution.device=cuda"], "use attribution.device=auto or attribution.device=cpu",
                     marks=NO_GPU),
        pytest.param(["trainer=gpu"], "add trainer=cpu", marks=NO_GPU),
        pytest.param(["experiment=paper_srresnet"], "add trainer=cpu", marks=NO_GPU),
        (["degradation.noise.prob=1.5"], "noise.prob must be a number in [0, 1]"),
        (["+trainer.max_steps=2"], "trainer.max_steps would be ignored: set it per stage"),
        (["+trainer.max_epochs=1"], "trainer.max_epochs would be ignored"),
        (["+trainer.gradient_clip_vall=1"], "unknown Trainer argument(s) ['gradient_clip_vall']"),
        (["+target.warmup=10"], "unknown key(s) ['warmup'] in target"),
        (["+data.iters_per_epoch=5"], "data.iters_per_epoch would be ignored"),
        (["+eval.crop=4"], "unknown key(s) ['crop'] in eval"),
        (["target.monitor=val/psnr/jpeg"], "target.monitor=val/psnr/jpeg is not a validation metric"),
        (["stage=target"], "stage=target needs baseline_ckpt"),
        (["stage=target", "baseline_ckpt=/nonexistent/net_g.pth"], "checkpoint not found: /nonexistent/net_g.pth"),
        (["stage=target", "baseline_ckpt={ckpts}/empty.pth"], "is empty (0 bytes"),
        (["stage=target", "baseline_ckpt={ckpts}/text.pth"], "is corrupt, truncated or not a PyTorch file"),
        (["data.gt_size=15"], "gt_size"),
        (["logger.kind=tensorboard"], "unknown logger kind 'tensorboard'"),
        (["seed=-1"], "seed must be an integer in [0, 4294967295], got -1"),
        (["+data.seed=3"], "data.seed would be ignored: the crops follow the run's seed"),
        (["target.freeze=[conv_frist]"], "freeze: 'conv_frist' names no parameter or module of the net"),
    ],
)
def test_bad_input_fails_before_training_with_one_line(tmp_path, bad_checkpoints, overrides, message):
    """Every setting is checked before the first training step: exit 2, one stderr line, no checkpoint."""
    run = tmp_path / "run"
    overrides = [o.format(ckpts=bad_checkpoints) for o in overrides]
    proc = faig_train(tmp_path, "logger=none", f"hydra.run.dir={run}", *overrides, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("faig-train: error:") and message in lines[0], proc.stderr[-3000:]
    assert not list(tmp_path.rglob("*.ckpt"))
    assert json.loads((run / "status.json").read_text())["status"] == "failed"
    assert message in (run / "train.log").read_text()  # the run folder records the error


def test_shorthand_settings_are_lists(monkeypatch):
    """``proportions=5`` and ``methods=faig`` (no brackets) mean one-element lists; an empty WANDB_MODE is unset."""
    from hydra import compose, initialize_config_dir

    from faig_lightning.attribution import AttributionSettings
    from faig_lightning.config import plain
    from faig_lightning.loggers import requested_wandb_mode
    from faig_lightning.schemas import CONF_DIR

    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["attribution.proportions=5", "attribution.methods=faig"])
    settings = AttributionSettings.from_mapping(plain(cfg.attribution))
    assert settings.proportions == (5.0,) and settings.methods == ("faig",)
    monkeypatch.setenv("WANDB_MODE", "")
    assert requested_wandb_mode(None) is None and "WANDB_MODE" not in os.environ


@pytest.mark.slow
def test_retrain_stage_trains_only_the_chosen_filters(tmp_path):
    """stage=retrain from a finished run: the top 5 % FAIG blur filters train, every other parameter of the raw
    and the EMA weights equals the baseline's; the summary compares baseline, target and retrained nets. The run
    ranked the biases too (attribution.extra_units), so the retrain numbers units as it did."""
    from faig_lightning.attribution import FilterIndex

    run, retrain = tmp_path / "run", tmp_path / "retrain"
    faig_train(tmp_path, "stage=both", "logger=none", "attribution.methods=[faig,random]",
               "attribution.proportions=[5]", "attribution.analyses=[]", "attribution.extra_units=[*bias]",
               f"hydra.run.dir={run}")
    proc = faig_train(tmp_path, "stage=retrain", f"retrain.from_run={run}", "retrain.degradations=[blur]",
                      "retrain.proportion=5", "retrain.max_steps=4", "retrain.val_every=2", "retrain.lr=1e-2",
                      "logger=none", f"hydra.run.dir={retrain}")
    assert "gain recovered" in proc.stderr + proc.stdout
    summary = json.loads((retrain / "retrain" / "summary.json").read_text())
    net = MSRResNet(scale=2, num_feat=4, num_block=1)
    index = FilterIndex.from_model(net, ["*bias"])
    order = np.loadtxt(run / "attribution" / "faig" / "blur_index.txt", dtype=np.int64)
    chosen = sorted(order[: index.top_k(5)].tolist())
    ckpt = torch.load(retrain / "retrain" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["train_filters"] == chosen
    assert ckpt["hyper_parameters"]["extra_units"] == ["*bias"]
    masks = index.masks(chosen)
    start = torch.load(run / "baseline" / "net_g.pth", weights_only=True)["params_ema"]
    got = torch.load(retrain / "retrain" / "net_g.pth", weights_only=True)
    for kind in ("params", "params_ema"):
        for name, value in got[kind].items():
            keep = torch.ones_like(value, dtype=torch.bool)
            if name in masks:
                keep = ~index.layer(name).weight_mask(masks[name]).expand_as(value)
            assert torch.equal(value[keep], start[name][keep]), (kind, name)
        assert any(not torch.equal(got[kind][n], start[n]) for n in masks)
    rows = summary["retrain"]["inputs"]
    assert set(rows) == {"clean", "blur", "noise"}
    for row in rows.values():
        if row["target_gain_db"] > 0:
            assert row["recovered"] == pytest.approx(row["retrained_gain_db"] / row["target_gain_db"])
        else:  # no gain to recover
            assert row["recovered"] is None
        assert row["baseline_psnr"] != row["retrained_psnr"]
    # bad input: neither a run nor index files, and a ranking the run does not hold
    bad = faig_train(tmp_path, "stage=retrain", "logger=none", f"hydra.run.dir={tmp_path / 'bad'}", check=False)
    assert bad.returncode == 2 and "stage=retrain needs retrain.from_run=RUN" in bad.stderr
    bad = faig_train(tmp_path, "stage=retrain", f"retrain.from_run={run}", "retrain.method=ig", "logger=none",
                     f"hydra.run.dir={tmp_path / 'bad2'}", check=False)
    assert bad.returncode == 2 and "retrain.method=ig" in bad.stderr
