"""Read the rankings of a finished run back, to evaluate new masking proportions without ranking again."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from faig_lightning.errors import FaigError

if TYPE_CHECKING:
    from faig_lightning.attribution.settings import AttributionSettings

SUMMARY = "summary.json"
"""Written last by ``write_results``: its presence means the run's result files are complete."""
SETUP_KEYS = ("model", "scale", "eval", "degradation", "baseline_ckpt", "target_ckpt")
"""What a run ranked on: the net, its scale, the eval-set arguments, the target's degradation and the checkpoints."""


def read_results_summary(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The attribution ``summary.json`` of ``run_dir``; raise when the run has no complete results."""
    path = Path(run_dir) / SUMMARY
    if not Path(run_dir).is_dir():
        raise FaigError(f"attribution.rankings_from={run_dir} is not a folder; pass a run folder holding "
                        "attribution results (summary.json, masking.csv, attribution/)")
    try:
        summary = json.loads(path.read_text())
    except FileNotFoundError:
        raise FaigError(f"attribution.rankings_from={run_dir} has no complete attribution results ({SUMMARY} is "
                        "missing); rerun that run to finish its attribution, or point at another run") from None
    except json.JSONDecodeError as exc:
        raise FaigError(f"{path} is not valid JSON ({exc.msg}); rerun that run's attribution") from None
    if not isinstance(summary, dict) or "settings" not in summary or "fingerprints" not in summary:
        raise FaigError(f"{path} is not an attribution summary of this version (no settings/fingerprints); rerun "
                        "that run's attribution to record them")
    return summary


def recorded_setup(run_dir: str | os.PathLike, summary: dict[str, Any]) -> dict[str, Any]:
    """The ``SETUP_KEYS`` of a finished run: the ``provenance`` of its ``summary``, with the eval set and
    degradation a ``faig-train`` run does not record there read from its saved Hydra config (``data.eval``)."""
    from omegaconf import OmegaConf

    from faig_lightning.data.eval_set import EVAL_SET_KEYS

    setup = dict(summary.get("provenance", {}))
    missing = [k for k in ("eval", "degradation") if k not in setup]
    config_file = Path(run_dir) / ".hydra" / "config.yaml"
    if missing and config_file.is_file():
        config = OmegaConf.load(config_file)
        found = {"eval": OmegaConf.select(config, "data.eval") or OmegaConf.select(config, "eval"),
                 "degradation": OmegaConf.select(config, "degradation")}
        setup |= {k: OmegaConf.to_container(found[k], resolve=True) for k in missing if found[k] is not None}
        if isinstance(setup.get("eval"), dict):
            setup["eval"] = {k: v for k, v in setup["eval"].items() if k in EVAL_SET_KEYS}
    absent = [k for k in SETUP_KEYS if k not in setup]
    if absent:
        raise FaigError(f"{Path(run_dir) / SUMMARY} does not record {absent} (nor has the run a .hydra/config.yaml); "
                        "rerun that run's attribution to record them")
    return setup


def check_same_nets(summary: dict[str, Any], fingerprints: dict[str, str], num_filters: int, source: str) -> None:
    """Raise unless the stored rankings were computed on exactly these baseline and target weights."""
    stored = summary["fingerprints"]
    if summary.get("num_filters") != num_filters:
        raise FaigError(f"rankings in {source} are for a net with {summary.get('num_filters')} filters, this one has "
                        f"{num_filters}; use the same model and checkpoints as that run")
    changed = [role for role in ("baseline", "target") if stored.get(role) != fingerprints[role]]
    if changed:
        raise FaigError(f"rankings in {source} were computed on other {' and '.join(changed)} weights; pass the same "
                        "baseline_ckpt/target_ckpt as that run (or drop attribution.rankings_from to rank anew)")


def read_rankings(
    run_dir: str | os.PathLike, summary: dict[str, Any], settings: AttributionSettings
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]], list[str], list[str]]:
    """Rankings and scores of the requested methods/degradations that ``run_dir`` holds, with those lists.

    Requested methods the run did not compute are left out (the run's own methods are the menu); none left is an
    error, as is a requested degradation the run did not rank.
    """
    stored = summary["settings"]
    have_methods, have_degs = list(stored.get("methods", [])), list(stored.get("degradations", []))
    methods = [m for m in settings.methods if m in have_methods]
    if not methods:
        raise FaigError(f"{run_dir} holds rankings for {have_methods}, none of attribution.methods="
                        f"{list(settings.methods)}; request some of those")
    degs = list(settings.degradations) if settings.degradations is not None else have_degs
    missing = [d for d in degs if d not in have_degs]
    if missing:
        raise FaigError(f"{run_dir} ranked {have_degs}, not {missing}; set attribution.degradations accordingly")
    rankings: dict[str, dict[str, np.ndarray]] = {}
    scores: dict[str, dict[str, np.ndarray]] = {}
    n = int(summary["num_filters"])
    for method in methods:
        rankings[method], scores[method] = {}, {}
        for deg in degs:
            folder = Path(run_dir) / "attribution" / method
            try:
                order = np.loadtxt(folder / f"{deg}_index.txt", dtype=np.int64, ndmin=1)
                values = np.load(folder / f"{deg}_scores.npy")
            except (OSError, ValueError) as exc:
                raise FaigError(f"cannot read the {method} ranking for {deg} in {folder} ({exc}); rerun that run's "
                                "attribution") from None
            if len(order) != n or len(values) != n or not np.array_equal(np.sort(order), np.arange(n)):
                raise FaigError(f"{folder}/{deg}_index.txt is not a ranking of all {n} filters; rerun that run's "
                                "attribution")
            rankings[method][deg], scores[method][deg] = order, values
    return rankings, scores, methods, degs


def results_complete(out_dir: str | os.PathLike, settings: AttributionSettings, fingerprints: dict[str, str]) -> bool:
    """Whether ``out_dir`` holds every result file of an attribution of these weights with these settings."""
    out = Path(out_dir)
    try:
        summary = json.loads((out / SUMMARY).read_text())
        stored = summary["settings"]
        same = summary["fingerprints"] == fingerprints and stored["requested"] == settings.to_dict()
    except (OSError, ValueError, KeyError, TypeError):
        return False
    files = [out / "attribution" / m / f"{d}_{kind}" for m in stored["methods"] for d in stored["degradations"]
             for kind in ("index.txt", "scores.npy")]
    if settings.proportions:
        files.append(out / "masking.csv")
    return same and all(f.is_file() for f in files)
