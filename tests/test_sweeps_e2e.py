"""End to end on a tiny config: a level sweep and its summary, reused rankings on other nets, reruns.

Proportion sweeps on reused rankings: tests/test_rankings_from.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import TINY, cli_env, faig_train, read_csv, run_cli, wandb_config_value

from faig_lightning.sweeps import summarize

SETTINGS = ["attribution.methods=[faig,random]", "attribution.steps=2", "attribution.proportions=[1,10]"]


@pytest.mark.slow
def test_level_sweep_summary_and_wandb(tmp_path):
    base = tmp_path / "base"
    faig_train(tmp_path, "stage=baseline", "logger=none", f"hydra.run.dir={base}")
    sweep = tmp_path / "sweep"
    faig_train(tmp_path, "stage=target", f"baseline_ckpt={base}/baseline/net_g.pth", "logger=wandb",
               "degradation.blur.sigma=1.0,3.0", *SETTINGS, f"hydra.sweep.dir={sweep}", multirun=True)

    # the multirun-end callback summarised the sweep: every number copied exactly from each run's masking.csv
    summary = read_csv(sweep / "summary.csv")
    for job, sigma in (("0", "1.0"), ("1", "3.0")):
        mine = [r for r in summary if r["run"] == job]
        assert {r["status"] for r in mine} == {"complete"} and {r["degradation.blur.sigma"] for r in mine} == {sigma}
        own = read_csv(sweep / job / "masking.csv")
        assert len(mine) == len(own) == 2 * 2 * 2 * 3  # methods x ranked degradations x proportions x inputs
        assert [{k: r[k] for k in own[0]} for r in mine] == own
    overlap = read_csv(sweep / "overlap.csv")
    assert {r["jaccard"] for r in overlap if r["run_a"] == r["run_b"]} == {"1.0"}
    assert {(r["run_a"], r["run_b"]) for r in overlap} == {("0", "0"), ("0", "1"), ("1", "0"), ("1", "1")}
    for png in ("drop_vs_degradation.blur.sigma.png", "curves_faig.png", "overlap_blur_p1.png"):
        assert (sweep / png).stat().st_size > 5_000, png
    assert len(list((sweep / "wandb").glob("offline-run-*"))) == 1  # the W&B summary run of the sweep

    # per run: the masking table as W&B scalars over masked_percent, headline summary values, flat config keys
    for job, sigma in (("0", 1.0), ("1", 3.0)):
        (wb_run,) = (sweep / job / "wandb").glob("offline-run-*")
        history = next(wb_run.glob("*.wandb")).read_bytes()
        for key in (b"attribution/masked_percent", b"attribution/faig/mask_blur/blur/psnr_drop",
                    b"attribution/random/mask_noise/clean/psnr", b"attribution/faig/p1/noise/selectivity",
                    b"attribution/completeness_gap/blur", b"attribution/unmasked/target/blur/psnr"):
            assert key in history, key
        assert wandb_config_value(wb_run, "degradation.blur.sigma") == sigma

    # rankings are only reused on the nets they were computed on
    proc = run_cli(tmp_path, "faig_lightning.attribute", f"attribution.rankings_from={sweep / '0'}",
                   f"target_ckpt={sweep / '1' / 'target' / 'net_g.pth'}", f"hydra.run.dir={tmp_path / 'bad'}",
                   check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].endswith(
        "(or drop attribution.rankings_from to rank anew)"), proc.stderr[-2000:]
    assert "computed on other target weights" in proc.stderr


@pytest.mark.slow
def test_rerun_finishes_an_interrupted_attribution(tmp_path):
    """Kill the run during the attribution after training; the same command then computes only what is missing."""
    run = tmp_path / "run"
    args = ["stage=both", "logger=csv", "attribution.methods=[faig,ig]", "attribution.steps=2",
            "attribution.proportions=[1]", f"hydra.run.dir={run}"]
    cmd = [sys.executable, "-m", "faig_lightning.train", *TINY, *args]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          env=cli_env(tmp_path)) as proc:
        for line in proc.stdout:
            if line.startswith("  ig:"):  # the IG baseline is running: training is over, results not written
                proc.kill()
                break
        proc.wait(timeout=60)
    assert proc.returncode != 0
    assert (run / "target" / "checkpoints" / "last.ckpt").is_file() and not (run / "summary.json").exists()
    assert json.loads((run / "status.json").read_text())["status"] == "running"
    summarize([run], tmp_path / "sweep_view", wandb="off")
    (record,) = read_csv(tmp_path / "sweep_view" / "runs.csv")
    assert record["status"] == "incomplete"

    second = faig_train(tmp_path, *args)
    assert "training is done; recomputing its final metrics" in second.stdout
    for stage in ("baseline", "target"):
        stage_summary = json.loads((run / stage / "summary.json").read_text())
        assert stage_summary["start_step"] == stage_summary["global_step"] == 4
        assert stage_summary["fit"] == "skipped (already at max_steps)"
        assert stage_summary["final_metrics"]["val/psnr/noise"] > 10
    attribution = json.loads((run / "summary.json").read_text())
    assert attribution["settings"]["methods"] == ["faig", "ig"] and (run / "masking.csv").is_file()
    assert json.loads((run / "status.json").read_text())["status"] == "complete"
    assert (run / "baseline" / "metrics.csv").is_file()  # csv logger: one file per stage
    assert "PSNR drop (dB) when the top filters are masked" in (run / "train.log").read_text()  # logged, not printed

    # a result file lost later: the rerun recomputes the attribution; with nothing lost it recomputes nothing
    (run / "attribution" / "faig" / "noise_index.txt").unlink()
    third = faig_train(tmp_path, *args)
    assert (run / "attribution" / "faig" / "noise_index.txt").is_file() and "not recomputed" not in third.stdout
    fourth = faig_train(tmp_path, *args)
    assert "complete for this target and these settings; not recomputed" in fourth.stdout

    # another architecture than the checkpoints': one line naming the fix, before any work
    changed = faig_train(tmp_path, *args, "model.num_feat=8", check=False)
    lines = changed.stderr.strip().splitlines()
    assert changed.returncode == 2 and len(lines) == 1 and lines[0].startswith("faig-train: error: cannot resume: ")
    assert lines[0].endswith("or add resume=false to start this stage afresh")

    # a truncated last.ckpt: likewise
    last = run / "target" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:2000])
    bad = faig_train(tmp_path, *args, check=False)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"faig-train: error: cannot resume: {last} is empty, truncated or corrupt (an interrupted save?); add "
        "resume=false to start this stage afresh"]
