"""What a researcher sees in W&B, read back from offline runs: images, config, groups, names, tags, summary."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from helpers import TINY, cli_env, faig_train
from PIL import Image

from faig_lightning.attribution import Figure2Panel, figure2_panel
from faig_lightning.attribution.engine import MaskingRow
from faig_lightning.attribution.headline import headline
from faig_lightning.checkpoints import load_weights
from faig_lightning.config import flat
from faig_lightning.data import build_eval_set
from faig_lightning.errors import FaigError
from faig_lightning.loggers import check_logger
from faig_lightning.module import val_panel
from faig_lightning.nets import MSRResNet
from faig_lightning.run_folder import wandb_record
from faig_lightning.seeding import derive_seed

WANDB = str(Path(sys.executable).with_name("wandb"))


def inspect(run_dir: str | Path) -> dict:
    """An offline W&B run's name, config, tags and summary, as ``wandb leet inspect --summary --json`` reads them."""
    return json.loads(subprocess.run([WANDB, "leet", "inspect", "--summary", "--json", str(run_dir)],
                                     capture_output=True, text=True, check=True).stdout)


def run_group(run_dir: str | Path) -> str:
    """The group in an offline W&B run's run record."""
    lines = subprocess.run([WANDB, "leet", "inspect", "--json", str(run_dir)], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    return next(r["run"] for r in map(json.loads, lines) if r["type"] == "run")["run_group"]


def net(path: Path) -> torch.nn.Module:
    return load_weights(MSRResNet(scale=2, num_feat=4, num_block=1), path).eval()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(tmp folder, run folder) of one two-stage offline-W&B run with image panels and a user tag."""
    tmp = tmp_path_factory.mktemp("wandb")
    run = tmp / "run"
    faig_train(tmp, "stage=both", "logger=wandb", "eval.log_images=true", "logger.tags=[mine]",
               f"hydra.run.dir={run}")
    return tmp, run


def stage_run(run: Path, stage: str) -> tuple[Path, dict]:
    """The offline W&B run folder of a stage (from the run folder's record) and what W&B holds for it."""
    folder = Path(wandb_record(run)["runs"][stage]["dir"])
    return folder, inspect(folder)


@pytest.mark.slow
def test_logged_images_are_the_8bit_panels(trained):
    """The last val panels and the Figure-2 rows in the W&B run equal the panels recomputed from the saved nets."""
    tmp, run = trained
    item = build_eval_set(scale=2, photos=["chelsea"], cache_dir=tmp / "cache")[0]
    baseline, target = net(run / "baseline" / "net_g.pth"), net(run / "target" / "net_g.pth")
    with torch.no_grad():
        for stage, model in (("baseline", baseline), ("target", target)):
            folder, logged = stage_run(run, stage)
            for name, lq in item["lq"].items():
                (file,) = logged["summary"][f"val/panel/{name}"]["filenames"]
                image = np.asarray(Image.open(folder / "files" / file).convert("RGB")).astype(int)
                truth = val_panel(lq, model(lq[None])[0], item["gt"]).astype(int)
                assert image.shape == truth.shape and np.abs(image - truth).max() <= 1, (stage, name)
    rankings = {deg: np.loadtxt(run / "attribution" / "faig" / f"{deg}_index.txt", dtype=np.int64)
                for deg in ("blur", "noise")}
    panel = figure2_panel(baseline, target, item, rankings, scale=2, proportion=1)
    folder, logged = stage_run(run, "target")
    for inp, rows in panel.rows.items():
        entry = logged["summary"][f"attribution/figure2/{inp}"]
        image = np.asarray(Image.open(folder / "files" / entry["path"]).convert("RGB")).astype(int)
        truth = Figure2Panel(panel.columns, {inp: rows}).grid().astype(int)
        assert image.shape == truth.shape and np.abs(image - truth).max() <= 1, inp
        assert entry["caption"] == " | ".join(panel.columns)


@pytest.mark.slow
def test_config_is_what_each_stage_used(trained):
    """One flat config per stage: the user's seed, the stage's derived seed, the stage's own degradation and
    optimisation settings, no module hyper-parameters merged in."""
    _, run = trained
    for stage in ("baseline", "target"):
        config = stage_run(run, stage)[1]["config"]
        hp = torch.load(run / stage / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
        summary = json.loads((run / stage / "summary.json").read_text())
        assert config["seed"] == 0 and config["stage"] == stage
        assert config["stage_seed"] == hp["seed"] == summary["stage_seed"] == derive_seed(0, stage)
        assert {k: v for k, v in config.items() if k.startswith("degradation.")} == \
            flat({"degradation": hp["degradation"]})
        assert (config["train.lr"], config["baseline_ckpt"]) == (hp["lr"], hp["baseline_ckpt"])
        assert not any(isinstance(v, dict) and v for v in config.values())
        assert not any(k.startswith(f"{j}.") for k in config for j in config), "a key both flat and nested"
        assert not set(config) & {"net", "lr", "betas", "degradation", "baseline_degradation", "baseline", "target"}
        assert any(k.startswith("attribution.") for k in config) == (stage == "target")
    clean = stage_run(run, "baseline")[1]["config"]
    assert clean["degradation.blur"] is None and clean["degradation.noise"] is None


@pytest.mark.slow
def test_groups_names_tags_and_record(trained):
    """A run folder records its W&B runs; targets trained on a named baseline join its group (a sweep of them
    too); a multirun is otherwise grouped by sweep folder and names each run by its swept values; tags name stage,
    model, experiment, user's."""
    tmp, run = trained
    record = wandb_record(run)
    assert wandb_record(run / "target" / "checkpoints" / "last.ckpt") == record
    for stage in ("baseline", "target"):
        entry = record["runs"][stage]
        logged = inspect(entry["dir"])
        assert (logged["run_id"], logged["name"]) == (entry["id"], entry["name"]) == (entry["id"], f"run-{stage}")
        assert logged["tags"] == entry["tags"] == [stage, "srresnet_small", "mine"]
        assert run_group(entry["dir"]) == record["group"] == "run"

    later = tmp / "later"  # a sweep of targets on the named baseline: the baseline's group, not the sweep's
    faig_train(tmp, "stage=target", f"baseline_ckpt={run}/baseline/net_g.pth", "attribution=none", "logger=wandb",
               "target.lr=0.001,0.002", f"hydra.sweep.dir={later}", multirun=True)
    for job, lr in (("0", "0.001"), ("1", "0.002")):
        entry = wandb_record(later / job)["runs"]["target"]
        assert run_group(entry["dir"]) == entry["group"] == "run"
        assert entry["name"] == f"later-target.lr={lr}-target"

    sweep = tmp / "blur_sweep"
    faig_train(tmp, "stage=baseline", "experiment=quickstart", "baseline.max_steps=2", "seed=0,1", "logger=wandb",
               f"hydra.sweep.dir={sweep}", multirun=True)
    for job, seed in (("0", 0), ("1", 1)):
        entry = wandb_record(sweep / job)["runs"]["baseline"]
        logged = inspect(entry["dir"])
        assert logged["name"] == f"blur_sweep-seed={seed}-baseline"
        assert logged["tags"] == ["baseline", "srresnet_small", "quickstart"]
        assert run_group(entry["dir"]) == "blur_sweep" and logged["config"]["seed"] == seed


@pytest.mark.slow
def test_summary_holds_the_headline_numbers(trained):
    """The run summary's attribution scalars are exactly the headline of summary.json: no curves, no modulation;
    selectivity = targeted - other drop, a number for every method, proportion and degradation."""
    _, run = trained
    summary = stage_run(run, "target")[1]["summary"]
    truth = json.loads((run / "summary.json").read_text())["headline"]
    scalars = {k: v for k, v in summary.items() if k.startswith("attribution/") and not isinstance(v, dict)}
    assert set(scalars) == set(truth)
    assert all(v == pytest.approx(truth[k], nan_ok=True) for k, v in scalars.items())
    selectivity = [k for k in scalars if k.endswith("/selectivity")]
    assert len(selectivity) == 4 * 4 * 2  # methods x proportions x degradations
    for key in selectivity:
        stem = key.rsplit("/", 1)[0]
        assert scalars[key] == pytest.approx(scalars[f"{stem}/targeted_drop"] - scalars[f"{stem}/other_drop"])


def test_selectivity_is_a_number_when_the_other_drop_is_not_positive():
    rows = [MaskingRow("faig", m, 1.0, 3, i, 30.0, 0.9, drop, 0.0)
            for m, i, drop in (("blur", "blur", 2.0), ("blur", "noise", -0.5), ("blur", "clean", 9.0),
                               ("noise", "noise", 0.0), ("noise", "blur", 0.0))]
    result = SimpleNamespace(masking=rows, completeness={}, steps=8, unmasked={}, locations=[], prediction=None)
    out = headline(result)
    assert out["attribution/faig/p1/blur/other_drop"] == -0.5  # the other ranked degradation's input only
    assert out["attribution/faig/p1/blur/selectivity"] == 2.5
    assert out["attribution/faig/p1/noise/selectivity"] == 0.0
    single = headline(SimpleNamespace(**{**vars(result), "masking": rows[:3]}))  # one ranked: every other input
    assert single["attribution/faig/p1/blur/other_drop"] == 4.25 and single["attribution/faig/p1/blur/selectivity"] \
        == -2.25
    assert not math.isnan(out["attribution/steps_used"])


def test_online_without_key_or_network_is_one_line_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    with pytest.raises(FaigError, match=r"W&B mode online but no API key \(WANDB_API_KEY or wandb login\)"):
        check_logger({"kind": "wandb", "mode": "online"})
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    with socket.socket() as sock:  # a local port nothing listens on: connections are refused at once
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(FaigError, match=r"127\.0\.0\.1 unreachable — use logger\.mode=offline or WANDB_MODE=offline"):
        check_logger({"kind": "wandb", "mode": "online"})

    env = {k: v for k, v in cli_env(tmp_path).items() if k not in ("WANDB_API_KEY", "NETRC")}
    env.update(HOME=str(tmp_path), WANDB_MODE="online")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "faig_lightning.train", *TINY, f"hydra.run.dir={tmp_path / 'run'}"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and time.monotonic() - start < 60
    assert proc.stderr.strip().splitlines()[-1].startswith("faig-train: error: W&B mode online but no API key"), \
        proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "baseline").exists()
