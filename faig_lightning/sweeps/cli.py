"""``faig-summarize DIR [DIR ...] [--out OUT] [--wandb auto|off]``: cross-run tables and plots of a sweep."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from faig_lightning import __version__
from faig_lightning.cli import USER_ERROR_EXIT, quiet_broken_pipe, report_user_error
from faig_lightning.errors import FaigError
from faig_lightning.sweeps.summarize import RUNS_TABLE, SWEEP_SUMMARY, WANDB_CHOICES, summarize

PROG = "faig-summarize"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Summarize faig-train / faig-attribute runs across a sweep: runs.csv, summary.csv, overlap.csv, "
        "seeds.csv (mean ± sd over seeds), criterion.csv (the FAIG 1 % finding per run), sweep.md, plots and "
        "sweep_summary.json (failed and incomplete runs are listed too).",
    )
    parser.add_argument("dirs", nargs="+", metavar="DIR", help="a multirun folder (with 0/, 1/, …) or a run folder")
    parser.add_argument("--out", help="output folder (default: DIR when only one is given; required for several)")
    parser.add_argument("--wandb", choices=WANDB_CHOICES, default="auto",
                        help="auto: also log a W&B summary run when the runs logged to W&B; off: never")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    return parser


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _runs_markdown(runs_csv: Path) -> str:
    with open(runs_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    lines = ["| run | status | reason |", "|---|---|---|"]
    lines += ["| " + " | ".join(_cell(r[c]) for c in ("run", "status", "reason")) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``faig-summarize``; a user error prints one line ``faig-summarize: error: …`` and returns 2; a closed
    stdout ends quietly."""
    with quiet_broken_pipe():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    log = logging.getLogger("faig_lightning.sweeps")
    if not log.handlers:
        log.addHandler(logging.StreamHandler(sys.stderr))
        log.setLevel(logging.INFO)
    try:
        out = summarize(args.dirs, args.out, wandb=args.wandb)
    except FaigError as err:
        report_user_error(PROG, err)
        return USER_ERROR_EXIT
    files = json.loads((out / SWEEP_SUMMARY).read_text())["files"]
    print(_runs_markdown(out / RUNS_TABLE))
    print(f"\n{len(files) + 1} files in {out}: {', '.join(files)}, {SWEEP_SUMMARY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
