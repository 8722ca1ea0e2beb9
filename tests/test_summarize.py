"""faig-summarize on fabricated run folders (no training): tables, overlaps, plots, CLI errors, offline W&B."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import read_csv

from faig_lightning.errors import FaigError
from faig_lightning.run_folder import WANDB_RECORD_FILE
from faig_lightning.sweeps import find_runs, overlaps, summarize
from faig_lightning.sweeps.cli import main
from faig_lightning.sweeps.summarize import WANDB_SUMMARY_RUN

NUM_FILTERS = 1000
PROPORTIONS = [1, 10]
DEGRADATIONS = ["blur", "noise"]
INPUTS = ["clean", "blur", "noise"]
METHODS = ["faig", "random"]
MASKING_COLUMNS = ["method", "masked_degradation", "proportion", "num_masked", "input_degradation", "psnr", "ssim",
                   "psnr_drop", "grad_mse_x1000"]
SIGMA = "degradation.blur.sigma"


def make_run(folder: Path, sigma: str, seed: int, failed: bool = False, logger: dict | None = None) -> None:
    """A run folder as faig-attribute leaves it; FAIG rankings are seeded permutations, metrics awkward floats."""
    (folder / ".hydra").mkdir(parents=True)
    overrides = [f"{SIGMA}={sigma}", "stage=target", "+x=1", f"hydra.run.dir={folder}"]
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"logger": logger or {"kind": "none"}}))
    if failed:
        (folder / "status.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: out of memory"}))
        return
    rng = np.random.default_rng(seed)
    for method in METHODS:
        for deg in DEGRADATIONS:
            path = folder / "attribution" / method / f"{deg}_index.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(map(str, rng.permutation(NUM_FILTERS))) + "\n")
    rows = [MASKING_COLUMNS]
    for method in METHODS:
        for deg in DEGRADATIONS:
            for p in PROPORTIONS:
                for inp in INPUTS:
                    metrics = [f"{20 + 10 * rng.random():.17g}", "0.90000000000000002", f"{rng.random():.17g}",
                               "1.2345678901234567e-05"]
                    rows.append([method, deg, f"{p:.1f}", str(NUM_FILTERS * p // 100), inp, *metrics])
    (folder / "masking.csv").write_text("".join(",".join(r) + "\n" for r in rows))
    if seed == 0:  # only one run has the modulation analysis
        lines = ["method,degradation,proportion,lambda,input_degradation,psnr,ssim"]
        lines += [f"faig,blur,1.0,{lam},{inp},{20 + rng.random():.17g},0.5" for lam in (0.0, 0.5) for inp in INPUTS]
        (folder / "modulation.csv").write_text("\n".join(lines) + "\n")
    settings = {"methods": METHODS, "degradations": DEGRADATIONS, "proportions": PROPORTIONS}
    (folder / "summary.json").write_text(json.dumps({"num_filters": NUM_FILTERS, "settings": settings}))
    (folder / "status.json").write_text(json.dumps({"status": "complete", "error": None}))


def make_sweep(root: Path, logger: dict | None = None) -> Path:
    """A multirun folder: jobs 0 and 1 complete (sigma 1.0, 2.0), job 2 failed."""
    (root / "multirun.yaml").parent.mkdir(parents=True)
    (root / "multirun.yaml").write_text("{}\n")
    make_run(root / "0", "1.0", seed=0, logger=logger)
    make_run(root / "1", "2.0", seed=1, logger=logger)
    make_run(root / "2", "3.0", seed=2, failed=True, logger=logger)
    return root


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = make_sweep(tmp_path_factory.mktemp("summarize") / "sweep")
    assert summarize([root], wandb="off") == root
    return root


def test_summary_csv_copies_masking_strings_exactly(sweep):
    summary = read_csv(sweep / "summary.csv")
    assert list(summary[0]) == ["run", "status", SIGMA, *MASKING_COLUMNS]
    for run, sigma in [("0", "1.0"), ("1", "2.0")]:
        expected = read_csv(sweep / run / "masking.csv")
        got = [r for r in summary if r["run"] == run]
        assert [{c: r[c] for c in MASKING_COLUMNS} for r in got] == expected
        assert {r[SIGMA] for r in got} == {sigma} and {r["status"] for r in got} == {"complete"}
    assert "0.90000000000000002" in (sweep / "summary.csv").read_text()


def test_analysis_rows_are_gathered_across_runs(sweep):
    gathered = read_csv(sweep / "modulation.csv")
    own = read_csv(sweep / "0" / "modulation.csv")
    assert [{k: v for k, v in r.items() if k not in ("run", SIGMA)} for r in gathered] == own
    assert {(r["run"], r[SIGMA]) for r in gathered} == {("0", "1.0")}
    assert not (sweep / "filter_locations.csv").exists()  # no run has it


def test_failed_run_is_listed(sweep):
    runs = read_csv(sweep / "runs.csv")
    assert [(r["run"], r["status"], r[SIGMA]) for r in runs] == [
        ("0", "complete", "1.0"), ("1", "complete", "2.0"), ("2", "failed", "3.0")]
    assert runs[2]["reason"] == "RuntimeError: out of memory"
    failed = [r for r in read_csv(sweep / "summary.csv") if r["run"] == "2"]
    assert len(failed) == 1 and failed[0]["status"] == "failed" and failed[0][SIGMA] == "3.0"
    assert all(failed[0][c] == "" for c in MASKING_COLUMNS)
    info = json.loads((sweep / "sweep_summary.json").read_text())
    assert (info["complete"], info["failed"], info["incomplete"], info["swept_keys"]) == (2, 1, 0, [SIGMA])


def test_overlap_matches_naive_jaccard(sweep):
    rows = read_csv(sweep / "overlap.csv")
    assert len(rows) == len(DEGRADATIONS) * len(PROPORTIONS) * 4  # 2 complete runs: 4 ordered pairs each
    for row in rows:
        p = float(row["proportion"])
        k = int(NUM_FILTERS * p / 100)
        top = [set((sweep / r / "attribution" / "faig" / f"{row['degradation']}_index.txt").read_text().split()[:k])
               for r in (row["run_a"], row["run_b"])]
        assert int(row["top_k"]) == k
        assert float(row["jaccard"]) == len(top[0] & top[1]) / len(top[0] | top[1])
        if row["run_a"] == row["run_b"]:
            assert row["jaccard"] == "1.0"
    assert any(float(r["jaccard"]) < 1 for r in rows)


def test_markdown_report_targeted_and_other_drops(sweep):
    """sweep.md: targeted = drop on the masked degradation's input, other = mean over the other ranked inputs."""
    text = (sweep / "sweep.md").read_text()
    rows = read_csv(sweep / "1" / "masking.csv")
    drop = {(r["masked_degradation"], r["input_degradation"]): float(r["psnr_drop"]) for r in rows
            if r["method"] == "faig" and r["proportion"] == "10.0"}
    cells = [f"{drop[d, d]:.2f}" for d in ("blur", "noise")]
    others = [f"{drop['blur', 'noise']:.2f}", f"{drop['noise', 'blur']:.2f}"]  # one other ranked input each
    assert f"| 1 | 2.0 | faig | 10 | {cells[0]} | {others[0]} | {cells[1]} | {others[1]} |" in text
    assert "| 2 | failed (RuntimeError: out of memory) | 3.0 |" in text
    assert "## Jaccard overlap of the FAIG top 1 % noise filters" in text


def test_plots_written(sweep):
    names = [f"drop_vs_{SIGMA}.png", "curves_faig.png", "curves_random.png"]
    names += [f"overlap_{d}_p{p}.png" for d in DEGRADATIONS for p in PROPORTIONS]
    for name in names:
        assert (sweep / name).stat().st_size > 5000, name
    assert set(json.loads((sweep / "sweep_summary.json").read_text())["files"]) >= set(names)


def test_status_of_interrupted_old_and_partial_runs(tmp_path):
    for name in ("running", "old", "partial", "stopped"):
        make_run(tmp_path / name, "1.0", seed=0)
    (tmp_path / "running" / "status.json").write_text(json.dumps({"status": "running", "error": None}))
    (tmp_path / "old" / "status.json").unlink()
    (tmp_path / "partial" / "masking.csv").unlink()
    (tmp_path / "stopped" / "status.json").write_text(json.dumps({
        "status": "interrupted", "signal": "SIGTERM", "detail": "the target stage stopped at step 6 of 8"}))
    running, old, partial, stopped = find_runs([tmp_path / n for n in ("running", "old", "partial", "stopped")])
    assert (running.status, running.reason) == ("incomplete", "interrupted or still running (status.json says running)")
    assert (stopped.status, stopped.reason) == (
        "incomplete", "interrupted by SIGTERM: the target stage stopped at step 6 of 8 — rerun its command to resume")
    assert (old.status, old.reason) == ("complete", "")
    assert (partial.status, partial.reason) == ("incomplete", "no attribution results (masking.csv missing)")


def test_overlap_of_different_nets_is_empty(tmp_path):
    make_run(tmp_path / "a", "1.0", seed=0)
    make_run(tmp_path / "b", "1.0", seed=1)
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    (tmp_path / "b" / "summary.json").write_text(json.dumps({**summary, "num_filters": 500}))
    rows = overlaps(find_runs([tmp_path / "a", tmp_path / "b"]))
    pairs = {(o.run_a, o.run_b): o for o in rows if (o.degradation, o.proportion) == ("blur", 1)}
    assert pairs["a", "b"].jaccard is None and pairs["b", "a"].top_k is None
    assert pairs["b", "b"].jaccard == 1.0 and pairs["b", "b"].top_k == 5


def test_find_runs_names_and_errors(tmp_path):
    make_run(tmp_path / "a" / "0", "1.0", seed=0, failed=True)
    make_run(tmp_path / "b" / "10", "1.0", seed=0, failed=True)
    make_run(tmp_path / "b" / "9", "1.0", seed=0, failed=True)
    assert [r.name for r in find_runs([tmp_path / "a", tmp_path / "b"])] == ["a/0", "b/9", "b/10"]
    assert [r.name for r in find_runs([tmp_path / "b" / "10"])] == ["10"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FaigError, match="no runs in"):
        find_runs([tmp_path / "empty"])
    with pytest.raises(FaigError, match="--out"):
        summarize([tmp_path / "a", tmp_path / "b"])


def test_cli_prints_runs_table(tmp_path, capsys):
    make_run(tmp_path / "sweep" / "0", "1.0", seed=0, failed=True)
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "out"), "--wandb", "off"]) == 0
    out = capsys.readouterr().out
    assert "| 0 | failed | RuntimeError: out of memory |" in out and str(tmp_path / "out") in out


def test_cli_missing_dir_is_one_line_exit_2(tmp_path):
    script = Path(sys.executable).parent / "faig-summarize"
    proc = subprocess.run([str(script), str(tmp_path / "nope")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("faig-summarize: error:"), proc.stderr


def _wandb_records(run_dir: Path) -> list[dict]:
    """The records of an offline W&B run, read back with ``wandb leet inspect --json``."""
    script = Path(sys.executable).parent / "wandb"
    proc = subprocess.run([str(script), "leet", "inspect", "--json", str(run_dir)], capture_output=True, text=True,
                          timeout=120, check=True)
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def test_wandb_summary_run_is_one_run_per_folder(tmp_path, monkeypatch):
    """Summarising twice updates one W&B run in the members' group: the swept keys in its config, the members'
    W&B ids in its runs table, a boolean ``passed`` in its criterion table, headline numbers in its summary."""
    for var, sub in [("WANDB_CONFIG_DIR", "config"), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")]:
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / sub))
    monkeypatch.setenv("WANDB_MODE", "offline")
    root = make_sweep(tmp_path / "sweep", logger={"kind": "wandb", "project": "p"})
    for job in ("0", "1", "2"):  # what loggers.build_logger records for a faig-train job's two stages
        runs = {stage: {"id": f"{stage}{job}", "path": f"e/p/{stage}{job}", "group": "sweep-group"}
                for stage in ("baseline", "target")}
        (root / job / WANDB_RECORD_FILE).write_text(json.dumps({"group": "sweep-group", "runs": runs}))
    summarize([root])
    summarize([root])
    folders = sorted((root / "wandb").glob("offline-run-*"))
    run_id = json.loads((root / WANDB_SUMMARY_RUN).read_text())["id"]
    assert folders and {f.name.rsplit("-", 1)[1] for f in folders} == {run_id}

    records = _wandb_records(folders[-1])
    (run,) = [r["run"] for r in records if r["type"] == "run"]
    assert run["run_group"] == "sweep-group" and run["run_id"] == run_id
    config = {k: v for r in records if r["type"] == "config" for k, v in r["config"].get("update", {}).items()}
    assert config["swept_keys"] == [SIGMA] and config[SIGMA] == ["1.0", "2.0", "3.0"]
    assert config["runs"] == ["0", "1", "2"]
    assert [r["wandb_id"] for r in read_csv(root / "runs.csv")] == ["target0", "target1", "target2"]
    tables = {t.name.split("_")[0]: json.loads(t.read_text())
              for t in (folders[-1] / "files" / "media" / "table" / "sweep").glob("*.table.json")}
    runs_table = [dict(zip(tables["runs"]["columns"], row, strict=True)) for row in tables["runs"]["data"]]
    assert [(r["run"], r["wandb_id"], r["wandb_path"]) for r in runs_table] == [
        (job, f"target{job}", f"e/p/target{job}") for job in ("0", "1", "2")]
    criterion = [dict(zip(tables["criterion"]["columns"], row, strict=True)) for row in tables["criterion"]["data"]]
    assert criterion and all(isinstance(r["passed"], bool) and isinstance(r["run"], str) for r in criterion)
    summary = json.loads((root / "sweep_summary.json").read_text())["headline"]
    script = Path(sys.executable).parent / "wandb"
    logged = json.loads(subprocess.run([str(script), "leet", "inspect", "--summary", "--json", str(folders[-1])],
                                       capture_output=True, text=True, timeout=120, check=True).stdout)["summary"]
    assert {k: logged[k] for k in summary if summary[k] is not None} == {k: v for k, v in summary.items()
                                                                        if v is not None}
    assert summary["sweep/complete"] == 2 and summary["sweep/failed"] == 1
    passed = {r["run"] for r in criterion} - {r["run"] for r in criterion if not r["passed"]}
    assert summary["sweep/criterion/passed"] == len(passed) and summary["sweep/criterion/failed"] == 2 - len(passed)
    blur = [r for r in criterion if r["masked_degradation"] == "blur"]
    assert summary["sweep/faig/p1/blur/targeted_drop_mean"] == pytest.approx(
        sum(r["targeted"] for r in blur) / len(blur), rel=1e-12)
