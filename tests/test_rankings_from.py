"""Proportion sweeps on a finished run's rankings (``attribution.rankings_from``), from another folder.

One tiny run ranks on a two-photo eval set; ``faig-attribute -m`` then masks new proportions on its rankings from
another working directory, with default settings that differ from the run's (eval set, model): the run's own
setup is used, its numbers come back bit for bit, nothing else is recomputed, and W&B groups the sweep with it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY, cli_env, read_csv
from hydra import compose, initialize_config_dir

from faig_lightning.attribute import attribute
from faig_lightning.checkpoints import load_run_pair, read_state_dict
from faig_lightning.errors import FaigError
from faig_lightning.run_folder import wandb_record
from faig_lightning.schemas import CONF_DIR
from faig_lightning.sweeps.records import find_runs
from faig_lightning.sweeps.summarize import WANDB_SUMMARY_RUN, ranking_sources, swept_keys

pytestmark = pytest.mark.slow
EVAL = ["data.eval.photos=[chelsea,coffee]"]
RANKED = ["attribution.methods=[faig,random]", "attribution.steps=2", "attribution.proportions=[1,10]",
          "attribution.analyses=[modulation]", "attribution.lambdas=[0,1]"]


def _cli(cwd: Path, root: Path, module: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd,
                          env=cli_env(root), timeout=900)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="module")
def ranked(tmp_path_factory) -> Path:
    """``root/run``: a target trained from a baseline named by a relative path (cwd ``root``), ranked and masked
    at 1 and 10 %; ``root/props``: 1 and 5 % on its rankings, launched from ``root/elsewhere``."""
    root = tmp_path_factory.mktemp("rankings_from")
    _cli(root, root, "faig_lightning.train", *TINY, *EVAL, "stage=baseline", "logger=none", "hydra.run.dir=base")
    _cli(root, root, "faig_lightning.train", *TINY, *EVAL, "stage=target", "baseline_ckpt=base/baseline/net_g.pth",
         "logger=wandb", *RANKED, "hydra.run.dir=run")
    (root / "elsewhere").mkdir()
    _cli(root / "elsewhere", root, "faig_lightning.attribute", "-m", "attribution.rankings_from=../run",
         "attribution.proportions=[1],[5]", "degradation.blur.sigma=2.0", f"hydra.sweep.dir={root / 'props'}")
    return root


def test_new_proportions_on_the_runs_setup(ranked):
    run, props = ranked / "run", ranked / "props"
    original = json.loads((run / "summary.json").read_text())
    own_rows = read_csv(run / "masking.csv")
    assert (run / "modulation.csv").is_file() and original["settings"]["num_images"] == 2
    for job, proportion in (("0", "1.0"), ("1", "5.0")):
        summary = json.loads((props / job / "summary.json").read_text())
        assert summary["rankings_from"] == str(run)
        assert summary["settings"]["num_images"] == 2  # the run's two photos, not faig-attribute's three
        assert summary["unmasked"] == original["unmasked"]  # same nets, same eval set: the same numbers exactly
        assert summary["provenance"]["model"] == original["provenance"]["model"]
        assert summary["provenance"]["target_ckpt"] == str(run / "target" / "checkpoints" / "last.ckpt")
        rows = read_csv(props / job / "masking.csv")
        assert {r["proportion"] for r in rows} == {proportion}
        if proportion == "1.0":  # a proportion the run also masked: its rows, every digit
            assert rows == [r for r in own_rows if r["proportion"] == "1.0"]
        leftovers = [f for f in ("modulation.csv", "modulation.png", "filter_locations.csv",
                                 "degradation_prediction.json") if (props / job / f).exists()]
        assert not leftovers  # analyses only when asked for
        assert "modulation" not in summary["timings_s"] and "faig" not in summary["timings_s"]
        assert "PSNR drop (dB) when the top filters are masked" in (props / job / "attribute.log").read_text()


def _wandb_records(run_dir: Path) -> list[dict]:
    script = Path(sys.executable).parent / "wandb"
    proc = subprocess.run([str(script), "leet", "inspect", "--json", str(run_dir)], capture_output=True, text=True,
                          timeout=120, check=True)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def test_wandb_runs_join_the_ranked_runs_group(ranked):
    group = wandb_record(ranked / "run")["group"]
    for job, proportion in (("0", 1.0), ("1", 5.0)):
        record = wandb_record(ranked / "props" / job)
        assert record["group"] == group
        records = _wandb_records(Path(record["runs"]["attribute"]["dir"]))
        (run,) = [r["run"] for r in records if r["type"] == "run"]
        assert run["run_group"] == group
        logged = [r["history"]["item"] for r in records if r["type"] == "history"]
        (curve,) = [h for h in logged if "attribution/masked_percent" in h]  # one proportion: one point
        assert curve["attribution/masked_percent"] == proportion
        for row in read_csv(ranked / "props" / job / "masking.csv"):
            key = f"attribution/{row['method']}/mask_{row['masked_degradation']}/{row['input_degradation']}/psnr"
            assert curve[key] == float(row["psnr"])
    summary_run = json.loads((ranked / "props" / WANDB_SUMMARY_RUN).read_text())
    assert summary_run["group"] == group  # the sweep's summary run sits with them


def test_summary_overlays_the_new_proportions_on_the_run(ranked):
    props = ranked / "props"
    info = json.loads((props / "sweep_summary.json").read_text())
    assert info["swept_keys"] == ["attribution.proportions"] and info["complete"] == 2
    assert "1" not in info["criterion"]["passed"] + info["criterion"]["failed"]  # 5 % only: the 1 % rule n/a
    assert "0" in info["criterion"]["passed"] + info["criterion"]["failed"]
    assert {r["rankings_from"] for r in read_csv(props / "runs.csv")} == {str(ranked / "run")}
    assert (props / "curves_faig.png").stat().st_size > 5_000
    assert not list(props.glob("drop_vs_*.png"))  # proportions are the curves' x axis, not a swept level
    (source,) = ranking_sources(find_runs([props])).values()
    assert source.path == ranked / "run" and source.masking == read_csv(ranked / "run" / "masking.csv")
    together = find_runs([ranked / "run", props])  # the run summarised with its sweep: it is the reference curve
    assert ranking_sources(together) == {str(ranked / "run"): together[0]}
    assert swept_keys(together) == ["attribution.proportions"]  # its settings are the sweep's: not swept


def test_conflicting_override_is_one_line(ranked):
    run = ranked / "run"
    proc = _cli(ranked, ranked, "faig_lightning.attribute", f"attribution.rankings_from={run}", "model.num_feat=8",
                f"hydra.run.dir={ranked / 'conflict'}", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"faig-attribute: error: model.num_feat=8 conflicts with {run}'s model (num_feat 4) — drop it, or rank "
        "again without attribution.rankings_from"]


@pytest.mark.parametrize(("override", "detail"), [
    ("scale=3", "scale (2)"), ("eval.photos=[chelsea]", "eval (photos ['chelsea', 'coffee'])"),
    ("degradation.blur.sigma=3.0", "degradation (blur.sigma 2.0)"), ("model=srresnet", "model (num_feat 4, "),
])
def test_conflicts_are_refused_before_any_work(ranked, tmp_path, override, detail):
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("attribute", overrides=[f"attribution.rankings_from={ranked / 'run'}", override])
    with pytest.raises(FaigError, match="conflicts with") as err:
        attribute(cfg, tmp_path / "out", overrides=[f"attribution.rankings_from={ranked / 'run'}", override])
    assert f"{override} conflicts with {ranked / 'run'}'s {detail}" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_run_pair_loads_from_another_folder(ranked, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    baseline, target, scale = load_run_pair(ranked / "run")
    stage = json.loads((ranked / "run" / "target" / "summary.json").read_text())
    assert all(Path(stage[k]).is_absolute() for k in ("net_g", "last_ckpt", "best_ckpt"))
    for net, path in ((baseline, ranked / "base" / "baseline" / "net_g.pth"), (target, stage["net_g"])):
        expected = read_state_dict(path)
        assert all(torch.equal(v, expected[k]) for k, v in net.state_dict().items())
    assert scale == 2


def test_analyses_run_when_asked(ranked, tmp_path, single_thread):
    """In this process with one thread, as the run's subprocesses computed (thread counts change the low bits)."""
    overrides = [f"attribution.rankings_from={ranked / 'run'}", "attribution.proportions=[10]",
                 "attribution.analyses=[locations]", "logger=none", f"eval.cache_dir={tmp_path / 'cache'}"]
    with initialize_config_dir(CONF_DIR, version_base="1.3"):
        cfg = compose("attribute", overrides=overrides)
    attribute(cfg, tmp_path / "out", overrides=overrides)
    assert read_csv(tmp_path / "out" / "masking.csv") == [
        r for r in read_csv(ranked / "run" / "masking.csv") if r["proportion"] == "10.0"]
    assert (tmp_path / "out" / "filter_locations.csv").is_file() and not (tmp_path / "out" / "modulation.csv").exists()
