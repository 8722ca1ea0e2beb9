"""Summarize a sweep: cross-run tables and plots of its runs' records, written into one summary folder.

From the runs' records (``records``: status, overrides, masking rows, FAIG index files, W&B runs) it writes
``runs.csv``, ``summary.csv``, ``overlap.csv``, ``seeds.csv`` (mean ± sd over seeds), ``criterion.csv`` (the FAIG
finding per run), ``sweep.md``, PNG plots and ``sweep_summary.json`` into one folder, each file atomically, and
logs them to one W&B summary run per folder. The names of the summary folder's files live here.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from faig_lightning import loggers
from faig_lightning.atomic import atomic_write_text
from faig_lightning.attribution.proportions import top_k
from faig_lightning.errors import FaigError
from faig_lightning.plotting import save_png
from faig_lightning.run_folder import ANALYSIS_TABLES
from faig_lightning.sweeps import plots, seeds
from faig_lightning.sweeps.records import COMPLETE, FAILED, INCOMPLETE, Overlap, RunRecord, find_runs, load_run

log = logging.getLogger(__name__)

WANDB_CHOICES = ("auto", "off")
RUNS_TABLE, SUMMARY_TABLE, OVERLAP_TABLE = "runs.csv", "summary.csv", "overlap.csv"
SEEDS_TABLE, CRITERION_TABLE = "seeds.csv", "criterion.csv"
SWEEP_REPORT = "sweep.md"
SWEEP_SUMMARY = "sweep_summary.json"
"""In the summary folder: the run counts, swept keys, files written, the criterion's verdicts and headline numbers."""
WANDB_SUMMARY_RUN = "wandb_summary_run.json"
"""In the summary folder: the W&B summary run's id, so that a rerun of ``faig-summarize`` updates that run."""
OVERLAP_COLUMNS = ["degradation", "proportion", "run_a", "run_b", "jaccard", "top_k"]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _is_path(value: str | None) -> bool:
    return value is not None and ("/" in value or os.sep in value)


def swept_keys(runs: Sequence[RunRecord]) -> list[str]:
    """Override keys whose value differs between runs or is missing in some, in order of first appearance; keys
    whose values are all paths (checkpoints, ``attribution.rankings_from`` of runs from several folders) are where
    the runs came from, not what was swept, and are left out."""
    keys = list(dict.fromkeys(k for r in runs for k in r.overrides))
    return [k for k in keys if len(values := {r.overrides.get(k) for r in runs}) > 1
            and not all(_is_path(v) for v in values - {None})]


# --- tables ----------------------------------------------------------------------------------------------------


def _csv_text(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def runs_table(runs: Sequence[RunRecord], keys: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """``runs.csv``: one row per run with its status, reason, W&B run (id and path), the run whose rankings it
    reused, and swept override values."""
    columns = ["run", "path", "status", "reason", "wandb_id", "wandb_path", "rankings_from", *keys]
    return columns, [[r.name, str(r.path), r.status, r.reason, r.wandb_run.get("id", ""), r.wandb_run.get("path", ""),
                      r.source or "", *(r.overrides.get(k, "") for k in keys)] for r in runs]


def summary_table(runs: Sequence[RunRecord], keys: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """``summary.csv``: every masking.csv row of every run (exact strings); one empty row for a run without."""
    masking_columns = list(dict.fromkeys(c for r in runs for c in r.masking_columns))
    columns = ["run", "status", *keys, *masking_columns]
    rows = []
    for run in runs:
        head = [run.name, run.status, *(run.overrides.get(k, "") for k in keys)]
        for row in run.masking or [{}]:
            rows.append(head + [row.get(c) or "" for c in masking_columns])
    return columns, rows


def analysis_table(runs: Sequence[RunRecord], keys: Sequence[str], name: str) -> tuple[list[str], list[list[str]]]:
    """Every row of each complete run's analysis table ``name`` (one of ``ANALYSIS_TABLES``, e.g.
    ``modulation.csv``), exact strings, after the run's name and swept values; runs without it contribute nothing."""
    columns: list[str] = []
    rows = []
    for run in (r for r in runs if r.complete):
        try:
            found, table = run.folder.read_table(name)
        except FileNotFoundError:
            continue
        columns = columns or found
        head = [run.name, *(run.overrides.get(k, "") for k in keys)]
        rows += [head + [row.get(c) or "" for c in columns] for row in table]
    return ["run", *keys, *columns], rows


def _top_sets(runs: Sequence[RunRecord]) -> dict[tuple[str, str], dict[float, frozenset[int]]]:
    """Top-p % FAIG filter sets per (run, degradation) and proportion p: the first ``top_k(N, p)`` indices."""
    sets = {}
    for run in runs:
        for deg in run.degradations:
            index_file = run.folder.index_file("faig", deg)
            if index_file.is_file():
                order = index_file.read_text().split()
                sets[run.name, deg] = {
                    p: frozenset(int(i) for i in order[: top_k(run.num_filters, p)]) for p in run.proportions
                }
    return sets


def overlaps(runs: Sequence[RunRecord]) -> list[Overlap]:
    """Jaccard overlap of the top-p % FAIG filters for every ordered pair of complete runs (a run with itself too).

    Per degradation ranked by both runs and proportion listed by both; pairs of different nets (filter counts) and
    empty top sets get ``jaccard=None``.
    """
    done = [r for r in runs if r.complete]
    sets = _top_sets(done)
    result = []
    for deg in dict.fromkeys(d for _, d in sets):
        ranked = [r for r in done if (r.name, deg) in sets]
        for p in dict.fromkeys(p for r in ranked for p in sets[r.name, deg]):
            for a in ranked:
                for b in ranked:
                    set_a, set_b = sets[a.name, deg].get(p), sets[b.name, deg].get(p)
                    if set_a is None or set_b is None:
                        continue
                    same_net = a.num_filters == b.num_filters
                    k = top_k(a.num_filters, p) if same_net else None
                    jaccard = len(set_a & set_b) / len(set_a | set_b) if same_net and k else None
                    result.append(Overlap(deg, p, a.name, b.name, jaccard, k))
    return result


def overlap_table(rows: Sequence[Overlap]) -> tuple[list[str], list[list[Any]]]:
    """``overlap.csv``: one row per (degradation, proportion, run pair); empty jaccard when not comparable."""
    return OVERLAP_COLUMNS, [
        [o.degradation, f"{o.proportion:g}", o.run_a, o.run_b, "" if o.jaccard is None else repr(o.jaccard),
         "" if o.top_k is None else o.top_k]
        for o in rows
    ]


def markdown_report(runs: Sequence[RunRecord], keys: Sequence[str], overlap_rows: Sequence[Overlap]) -> str:
    """``sweep.md``: the runs with their status, the targeted / other PSNR drop (dB) per run, method and
    proportion, and the FAIG overlap matrices — the tables to paste into a report."""

    def fmt(v: float | None, digits: int) -> str:
        return "" if v is None else f"{v:.{digits}f}"

    lines = ["## Runs", "", "| run | status | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    lines += [f"| {r.name} | {r.status}{' (' + r.reason + ')' if r.reason else ''} | "
              + " | ".join(r.overrides.get(k, "") for k in keys) + " |" for r in runs]
    done = [r for r in runs if r.complete]
    degs = list(dict.fromkeys(d for r in done for d in r.degradations))
    head = [f"mask {d}: {c}" for d in degs for c in ("targeted", "other")]
    lines += ["", "## PSNR drop (dB) when the top filters are masked", "",
              "targeted: on inputs with the masked degradation; other: mean over the other ranked degradations' "
              "inputs", "", "| run | " + " | ".join([*keys, "method", "masked %", *head]) + " |",
              "|---|" + "---|" * (len(keys) + 2 + len(head))]
    for run in done:
        drops = run.drops()
        for method, prop in dict.fromkeys((m, p) for m, p, _ in drops):
            cells = [fmt(drops.get((method, prop, d), (None, None))[i], 2) for d in degs for i in (0, 1)]
            lines.append(f"| {run.name} | " + " | ".join([*(run.overrides.get(k, "") for k in keys), method,
                                                          f"{prop:g}", *cells]) + " |")
    for deg, prop in dict.fromkeys((o.degradation, o.proportion) for o in overlap_rows):
        cells = {(o.run_a, o.run_b): o.jaccard for o in overlap_rows if (o.degradation, o.proportion) == (deg, prop)}
        names = list(dict.fromkeys(a for a, _ in cells))
        lines += ["", f"## Jaccard overlap of the FAIG top {prop:g} % {deg} filters", "",
                  "| run | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        lines += [f"| {a} | " + " | ".join(fmt(cells.get((a, b)), 3) for b in names) + " |" for a in names]
    return "\n".join(lines) + "\n"


# --- writing ---------------------------------------------------------------------------------------------------


def _file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)


def ranking_sources(runs: Sequence[RunRecord]) -> dict[str, RunRecord]:
    """The complete runs whose rankings complete runs of ``runs`` reused, by path: from ``runs`` when among them,
    else read from their folders (when they still exist)."""
    known = {str(r.path): r for r in runs}
    found = {}
    for path in dict.fromkeys(r.source for r in runs if r.complete and r.source):
        record = known.get(path) or (load_run(path, Path(path).name) if Path(path).is_dir() else None)
        if record is not None and record.complete:
            found[path] = record
    return found


def _write_plots(runs: Sequence[RunRecord], keys: Sequence[str], overlap_rows: Sequence[Overlap],
                 out: Path) -> list[Path]:
    done = [r for r in runs if r.complete]
    if not done:
        return []
    written = []
    for key in (k for k in keys if k != plots.PROPORTIONS_KEY and any(k in r.overrides for r in done)):
        path = out / f"drop_vs_{_file_name(key)}.png"
        written.append(save_png(plots.drop_vs_figure(done, key), path))
    ranked = ranking_sources(done)
    for method in dict.fromkeys(row["method"] for r in done for row in r.masking):
        path = out / f"curves_{_file_name(method)}.png"
        written.append(save_png(plots.curves_figure(done, method, keys, ranked), path))
    for deg, p in dict.fromkeys((o.degradation, o.proportion) for o in overlap_rows):
        path = out / f"overlap_{_file_name(deg)}_p{p:g}.png"
        cells = [o for o in overlap_rows if o.degradation == deg and o.proportion == p]
        written.append(save_png(plots.overlap_figure(cells, f"FAIG top {p:g}% filters, {deg}"), path))
    return written


TEXT_COLUMNS = ("run", "run_a", "run_b", "wandb_id")
"""Columns that stay text in the W&B tables even when they look like numbers (job names ``0``, ``1``, …)."""


def _wandb_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> Any:
    """One summary table for W&B: numbers as numbers, booleans as booleans, names and ids as text."""
    import wandb

    def cell(column: str, value: Any) -> Any:
        if not isinstance(value, str) or column in TEXT_COLUMNS:
            return value
        try:
            return float(value) if value else None
        except ValueError:
            return value

    return wandb.Table(columns=list(columns), data=[[cell(c, v) for c, v in zip(columns, row, strict=True)]
                                                    for row in rows], allow_mixed_types=True)


def sweep_headline(runs: Sequence[RunRecord], checks: Sequence[dict[str, Any]], passed: dict[str, bool],
             criterion: seeds.Criterion) -> dict[str, Any]:
    """The sweep in a few numbers: runs per status, complete runs that show the criterion's finding (``passed``:
    run name -> whether it does; ``checks``: the criterion's rows), and per masked degradation the criterion
    method's mean targeted and other drops (dB)."""
    out: dict[str, Any] = {f"sweep/{s}": sum(r.status == s for r in runs) for s in (COMPLETE, FAILED, INCOMPLETE)}
    out |= {"sweep/runs": len(runs), "sweep/criterion/passed": sum(passed.values()),
            "sweep/criterion/failed": len(passed) - sum(passed.values()),
            "sweep/criterion/all_passed": bool(passed) and all(passed.values())}
    key = f"sweep/{criterion.method}/p{criterion.proportion:g}"
    for masked in dict.fromkeys(c["masked_degradation"] for c in checks):
        for part in ("targeted", "other"):
            values = [c[part] for c in checks if c["masked_degradation"] == masked and c[part] is not None]
            out[f"{key}/{masked}/{part}_drop_mean"] = sum(values) / len(values) if values else None
    return out


def log_to_wandb(runs: Sequence[RunRecord], out: Path, keys: Sequence[str],
                 tables: dict[str, tuple[list[str], list[list[Any]]]], files: Sequence[Path],
                 summary: dict[str, Any]) -> Path | None:
    """Log the tables, PNGs and ``summary`` numbers to the folder's one W&B summary run when the runs logged to W&B
    (``logger.kind: wandb``); return the W&B run folder, or ``None`` when the runs did not use W&B.

    The run joins the runs' W&B group (the folder's name when they recorded none); its config holds the swept keys
    and each run's value of them. Its id is kept in ``WANDB_SUMMARY_RUN``, so summarising the folder again updates
    that run. Uses the logger settings of the first complete run's ``.hydra/config.yaml``; ``WANDB_MODE`` wins over
    its mode.
    """
    source = next((r for r in runs if r.complete), runs[0])
    config = source.folder.read_hydra_config() if source.folder.hydra_config.is_file() else None
    logger = (config or {}).get("logger") or {}
    if logger.get("kind") != "wandb":
        return None
    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    group = next((r.wandb["group"] for r in runs if r.wandb.get("group")), out.resolve().name)
    known = _read_json(out / WANDB_SUMMARY_RUN) or {}
    run = wandb.init(project=logger.get("project") or "faig-lightning", entity=logger.get("entity"), group=group,
                     name=f"{group}-summary", job_type="summary", dir=str(out), id=known.get("id"), resume="allow",
                     mode=loggers.resolve_wandb_mode(logger.get("mode")), reinit="finish_previous")
    atomic_write_text(out / WANDB_SUMMARY_RUN, json.dumps({"id": run.id, "group": group}, indent=2) + "\n")
    run.config.update({"swept_keys": list(keys), "runs": [r.name for r in runs],
                       **{k: [r.overrides.get(k) for r in runs] for k in keys}}, allow_val_change=True)
    data: dict[str, Any] = {f"sweep/{Path(name).stem}": _wandb_table(*table) for name, table in tables.items()}
    data |= {f"sweep/{f.stem}": wandb.Image(str(f)) for f in files if f.suffix == ".png"}
    run.log(data)
    run.summary.update(summary)
    run_dir = Path(run.dir).parent
    run.finish()
    return run_dir


def summarize(dirs: Sequence[str | os.PathLike], out_dir: str | os.PathLike | None = None,
              wandb: str = "auto", criterion: seeds.Criterion | None = None) -> Path:
    """Write the cross-run summary of the runs in ``dirs`` into ``out_dir`` and return it.

    ``out_dir`` defaults to the folder given when there is only one. ``wandb="auto"`` also logs the summary to W&B
    when the runs did; ``"off"`` never does. Failed and incomplete runs are listed in every table. ``criterion``
    (default ``seeds.Criterion()``: FAIG vs random at 1 %) is checked on every complete run.
    """
    criterion = criterion or seeds.Criterion()
    if wandb not in WANDB_CHOICES:
        raise FaigError(f"unknown wandb choice {wandb!r} — use one of {WANDB_CHOICES}")
    if out_dir is None and len(dirs) > 1:
        raise FaigError(f"{len(dirs)} folders given — name the output folder (--out OUT / out_dir=…)")
    runs = find_runs(dirs)
    out = Path(dirs[0] if out_dir is None else out_dir)
    if out.exists() and not out.is_dir():
        raise FaigError(f"output {out} is a file — pass a folder (--out OUT / out_dir=…)")
    for run in runs:
        log.info("%s: %s%s", run.name, run.status, f" — {run.reason}" if run.reason else "")
    keys = swept_keys(runs)
    overlap_rows = overlaps(runs)
    checks = seeds.criterion_checks(runs, criterion)
    tables = {
        RUNS_TABLE: runs_table(runs, keys),
        SUMMARY_TABLE: summary_table(runs, keys),
        OVERLAP_TABLE: overlap_table(overlap_rows),
        SEEDS_TABLE: seeds.seeds_table(runs, keys, criterion.reference),
        CRITERION_TABLE: seeds.criterion_table(checks),
    }
    for name in ANALYSIS_TABLES:
        columns, rows = analysis_table(runs, keys, name)
        if rows:
            tables[name] = (columns, rows)
    files = [atomic_write_text(out / name, _csv_text(*table)) for name, table in tables.items()]
    report = markdown_report(runs, keys, overlap_rows) + "\n" + seeds.seeds_markdown(runs, keys, criterion, checks)
    files.append(atomic_write_text(out / SWEEP_REPORT, report))
    files += _write_plots(runs, keys, overlap_rows, out)
    # a run that did not mask the criterion's proportion (another job of a proportion sweep) neither passes nor fails
    checked = {c["run"] for c in checks}
    passed = {r.name: criterion.passed(r) for r in runs if r.name in checked}
    numbers = sweep_headline(runs, checks, passed, criterion)
    info = {**{s: numbers[f"sweep/{s}"] for s in (COMPLETE, FAILED, INCOMPLETE)}, "runs": len(runs),
            "swept_keys": keys, "files": [f.name for f in files],
            "criterion": {"rule": criterion.describe(), "passed": [n for n, ok in passed.items() if ok],
                          "failed": [n for n, ok in passed.items() if not ok],
                          "all_passed": numbers["sweep/criterion/all_passed"]}, "headline": numbers}
    files.append(atomic_write_text(out / SWEEP_SUMMARY, json.dumps(info, indent=2) + "\n"))
    log.info("wrote %d files to %s: %s", len(files), out, ", ".join(f.name for f in files))
    if wandb == "auto":
        wandb_dir = log_to_wandb(runs, out, keys, tables, files, numbers)
        if wandb_dir is not None:
            log.info("logged the summary to W&B (%s)", wandb_dir)
    return out
