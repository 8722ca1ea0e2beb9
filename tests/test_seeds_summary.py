"""faig-summarize across seeds: mean ± sd of the drops, the ratio to random, and the 1 % criterion per run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import yaml
from helpers import read_csv

from faig_lightning.sweeps import load_run, summarize
from faig_lightning.sweeps.seeds import Criterion

COLUMNS = ["method", "masked_degradation", "proportion", "num_masked", "input_degradation", "psnr", "ssim",
           "psnr_drop", "grad_mse_x1000"]
# per seed: (faig targeted, faig other, random targeted) for blur and noise at 1 %
DROPS = {
    0: {"blur": (1.6, 0.5, 0.2), "noise": (3.2, 0.4, 0.3)},
    1: {"blur": (2.0, 0.9, 0.4), "noise": (4.0, 1.0, 0.8)},   # noise: exactly 5x random (holds)
    2: {"blur": (1.2, 0.6, 0.1), "noise": (3.0, 0.2, 0.7)},   # blur: other exactly half (fails); noise: < 5x random
}


def make_run(folder: Path, seed: int) -> None:
    """A complete run folder whose masking table has the drops of ``DROPS[seed]`` at 1 % (and a 10 % row)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["experiment=quickstart", f"seed={seed}"]))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"logger": {"kind": "none"}}))
    rows = []
    for masked, (faig, other, rand) in DROPS[seed].items():
        unmasked = "blur" if masked == "noise" else "noise"
        for method, targeted, off in (("faig", faig, other), ("random", rand, 0.05)):
            for prop, scale in ((1, 1.0), (10, 1.5)):
                for inp, drop in (("clean", 0.1), (masked, targeted * scale), (unmasked, off * scale)):
                    rows.append([method, masked, f"{prop:.1f}", str(prop * 10), inp, "25.0", "0.9", repr(drop), "1"])
    with open(folder / "masking.csv", "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows([COLUMNS, *rows])
    settings = {"methods": ["faig", "random"], "degradations": ["blur", "noise"], "proportions": [1, 10]}
    (folder / "summary.json").write_text(json.dumps({"num_filters": 1000, "settings": settings}))
    (folder / "status.json").write_text(json.dumps({"status": "complete", "error": None}))


def make_sweep(root: Path) -> Path:
    for seed in DROPS:
        make_run(root / str(seed), seed)
    (root / "multirun.yaml").write_text("{}\n")
    return root


def test_mean_sd_and_ratio_to_random_over_seeds(tmp_path):
    root = summarize([make_sweep(tmp_path / "sweep")], wandb="off")
    rows = {(r["method"], r["proportion"], r["masked_degradation"]): r for r in read_csv(root / "seeds.csv")}
    assert "seed" not in read_csv(root / "seeds.csv")[0]  # the seed is what is averaged over
    for masked in ("blur", "noise"):
        faig = np.array([DROPS[s][masked][0] for s in DROPS])
        other = np.array([DROPS[s][masked][1] for s in DROPS])
        rand = np.array([DROPS[s][masked][2] for s in DROPS])
        row = rows["faig", "1", masked]
        assert row["runs"] == "3"
        np.testing.assert_allclose(float(row["targeted_mean"]), faig.mean(), rtol=1e-12)
        np.testing.assert_allclose(float(row["targeted_sd"]), faig.std(ddof=1), rtol=1e-12)
        np.testing.assert_allclose(float(row["other_mean"]), other.mean(), rtol=1e-12)
        np.testing.assert_allclose(float(row["other_sd"]), other.std(ddof=1), rtol=1e-12)
        np.testing.assert_allclose(float(row["ratio_to_random"]), faig.mean() / rand.mean(), rtol=1e-12)
        np.testing.assert_allclose(float(row["min_ratio_to_random"]), (faig / rand).min(), rtol=1e-12)
        np.testing.assert_allclose(float(rows["faig", "10", masked]["targeted_mean"]), 1.5 * faig.mean(), rtol=1e-12)
        assert rows["random", "1", masked]["ratio_to_random"] == ""  # random against itself is not reported
    text = (root / "sweep.md").read_text()
    assert "## Across seeds: PSNR drop (dB), mean ± sd" in text
    assert f"| faig | 1 | blur | 3 | {np.mean([1.6, 2.0, 1.2]):.2f} ± {np.std([1.6, 2.0, 1.2], ddof=1):.2f} |" in text


def test_criterion_per_run_with_its_boundaries(tmp_path):
    root = summarize([make_sweep(tmp_path / "sweep")], wandb="off")
    checks = {(r["run"], r["masked_degradation"]): r for r in read_csv(root / "criterion.csv")}
    assert {k: v["passed"] for k, v in checks.items()} == {
        ("0", "blur"): "True", ("0", "noise"): "True",
        ("1", "blur"): "True", ("1", "noise"): "True",   # 4.0 >= 5 x 0.8: the bound is inclusive
        ("2", "blur"): "False", ("2", "noise"): "False",
    }
    assert checks["2", "blur"]["reason"] == "other 0.60 >= half the targeted"
    assert checks["2", "noise"]["reason"] == "targeted 3.00 < 5x random 0.70"
    summary = json.loads((root / "sweep_summary.json").read_text())["criterion"]
    assert summary["passed"] == ["0", "1"] and summary["failed"] == ["2"] and summary["all_passed"] is False
    row = "| 2 | noise | 3.00 | 0.20 | 0.70 | 4.3 | no: targeted 3.00 < 5x random 0.70 |"
    assert row in (root / "sweep.md").read_text()


def test_criterion_settings_and_missing_results(tmp_path):
    make_run(tmp_path / "run", 2)
    run = load_run(tmp_path / "run", "run")
    assert not Criterion().passed(run)
    assert Criterion(factor=4.0, min_drop=1.0).check(run)[1]["passed"]  # 3.0 >= 4 x 0.7
    assert not Criterion(min_drop=3.5).check(run)[1]["passed"]
    assert not Criterion(method="ig").passed(run)  # no IG rows: nothing shows the finding
    assert Criterion(method="faig", reference="faig").check(run)[0]["reason"].startswith("targeted 1.20 < 5x faig")


def test_replicates_with_different_degradations(tmp_path):
    """Replicates of one setting need not mask the same degradations: each key averages the runs that have it."""
    root = make_sweep(tmp_path / "sweep")
    kept = [r for r in read_csv(root / "2" / "masking.csv") if r["masked_degradation"] == "blur"]
    with open(root / "2" / "masking.csv", "w", newline="") as fh:
        csv.writer(fh, lineterminator="\n").writerows([COLUMNS, *([r[c] for c in COLUMNS] for r in kept)])
    rows = {(r["method"], r["proportion"], r["masked_degradation"]): r
            for r in read_csv(summarize([root], wandb="off") / "seeds.csv")}
    assert rows["faig", "1", "blur"]["runs"] == "3" and rows["faig", "1", "noise"]["runs"] == "2"
    np.testing.assert_allclose(float(rows["faig", "1", "noise"]["ratio_to_random"]), 7.2 / 1.1, rtol=1e-12)
