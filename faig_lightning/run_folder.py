"""The run folder: the one place that names the files of a ``faig-train`` / ``faig-attribute`` run and reads them.

A run folder ``<run>/`` holds:

- ``summary.json`` (``RunFolder.results_summary``): the attribution results' summary, written last, so its
  presence means the result files are complete;
- ``masking.csv``, ``curves.png`` and the analysis files (``ANALYSIS_FILES``);
- ``attribution/<method>/<degradation>_index.txt`` (every filter index, most discriminative first) and
  ``_scores.npy`` (float32 scores);
- ``status.json`` (the job's status), ``wandb_run.json`` (its W&B runs), ``.hydra/config.yaml``,
  ``.hydra/overrides.yaml`` and ``.lock`` (held while a job runs);
- one folder per training stage (``StageFolder``): ``net_g.pth``, ``checkpoints/last.ckpt`` and the stage's own
  ``summary.json`` (``StageFolder.summary``; not the results summary).

Plain Python (numpy, json; omegaconf and yaml imported only by the readers that need them) that imports no other
layer of the package: reading a finished run loads neither torch nor Lightning.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from faig_lightning.atomic import atomic_path, atomic_write_text
from faig_lightning.errors import FaigError

SUMMARY_FILE = "summary.json"
"""The results summary of a run folder and, under the same name, each stage's own summary."""
MASKING_FILE = "masking.csv"
CURVES_FILE = "curves.png"
RANKINGS_DIR = "attribution"
STATUS_FILE = "status.json"
WANDB_RECORD_FILE = "wandb_run.json"
LOCK_FILE = ".lock"
HYDRA_DIR = ".hydra"
NET_G_FILE = "net_g.pth"
CHECKPOINTS_DIR = "checkpoints"
LAST_CKPT_FILE = "last.ckpt"
BEST_CKPT_PREFIX = "best-step"  # checkpoints/best-step<N>.ckpt: the best validation checkpoint, at step N
HPC_CKPT_GLOB = "hpc_ckpt_*.ckpt"  # what Lightning's SLURM auto-requeue saves in the stage folder
FILTER_LOCATIONS, UNIT_TYPES, MODULATION, MODULATION_STRIP, PREDICTION = (
    "filter_locations", "unit_types", "modulation", "modulation_strip", "degradation_prediction")
"""The analyses' file stems."""
ANALYSIS_TABLES = tuple(f"{stem}.csv" for stem in (MODULATION, FILTER_LOCATIONS, UNIT_TYPES, PREDICTION))
"""The analyses' CSV tables (one row per measurement; ``RunFolder.read_table``)."""
ANALYSIS_FILES = (f"{FILTER_LOCATIONS}.csv", f"{FILTER_LOCATIONS}.png", f"{UNIT_TYPES}.csv", f"{MODULATION}.csv",
                  f"{MODULATION}.png", f"{MODULATION_STRIP}.png", f"{PREDICTION}.json", f"{PREDICTION}.csv",
                  f"{PREDICTION}.png")
"""Every file the analyses may write (removed with the other results before a new attribution writes)."""
SETUP_KEYS = ("model", "scale", "eval", "degradation", "baseline_ckpt", "target_ckpt")
"""What a run ranked on: the net, its scale, the eval-set arguments, the target's degradation and the checkpoints."""


class UnreadableRecord(FaigError):
    """A record file (``status.json``, ``wandb_run.json``) exists but is not a JSON object."""


def _json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file is absent; ``UnreadableRecord`` when it is not one."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise UnreadableRecord(f"{path} is unreadable ({exc})") from None
    if not isinstance(data, dict):
        raise UnreadableRecord(f"{path} is not a JSON object")
    return data


def _load_index(path: Path) -> np.ndarray:
    """The integers of an index file, one per line (``OSError`` / ``ValueError`` when it cannot be read)."""
    return np.loadtxt(path, dtype=np.int64, ndmin=1)


def read_index_file(path: str | os.PathLike, num_filters: int) -> np.ndarray:
    """Global filter indices of an index file (one per line, most discriminative first), checked to be distinct
    filters of a net with ``num_filters`` filters."""
    try:
        order = _load_index(Path(path))
    except (OSError, ValueError) as exc:
        raise FaigError(f"cannot read the index file {path} ({exc}); pass a file with one filter index per line") \
            from None
    if len(order) == 0 or order.min() < 0 or order.max() >= num_filters or len(np.unique(order)) != len(order):
        raise FaigError(f"{path} must list distinct filter indices in [0, {num_filters}) (this net's filters); check "
                        "that it was ranked on the same model")
    return order


def check_same_nets(summary: dict[str, Any], fingerprints: dict[str, str], num_filters: int, source: str) -> None:
    """Raise unless the rankings of a results ``summary`` were computed on exactly these baseline and target
    weights (``fingerprints``) of a net with ``num_filters`` filters; ``source`` names the run in the message."""
    stored = summary["fingerprints"]
    if summary.get("num_filters") != num_filters:
        raise FaigError(f"rankings in {source} are for a net with {summary.get('num_filters')} filters, this one has "
                        f"{num_filters}; use the same model and checkpoints as that run")
    changed = [role for role in ("baseline", "target") if stored.get(role) != fingerprints[role]]
    if changed:
        raise FaigError(f"rankings in {source} were computed on other {' and '.join(changed)} weights; pass the same "
                        "baseline_ckpt/target_ckpt as that run (or drop attribution.rankings_from to rank anew)")


def wandb_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The W&B identity of the run folder ``path`` (or of the run folder holding the file ``path``, such as
    ``<run>/baseline/net_g.pth`` or ``<run>/target/checkpoints/last.ckpt``), or None when it logged no W&B run.

    The record: ``group``, ``project``, ``entity`` and per stage (job type) under ``runs``: ``id``, ``name``,
    ``path`` (entity/project/id), ``dir`` (the local run folder, what ``wandb sync`` takes), ``mode``, ``group``
    and ``tags``.
    """
    path = Path(path)
    folders = [path] if path.is_dir() else list(path.parents)[:3]
    for folder in folders:
        record = RunFolder(folder).read_wandb_record()
        if record is not None:
            return record
    return None


@dataclass(frozen=True)
class StageFolder:
    """``<run>/<stage>/``: one training stage's exported net, Lightning checkpoints and own summary."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def net_g(self) -> Path:
        """The stage's net as a BasicSR file (``net_g.pth``: raw ``params`` and ``params_ema``)."""
        return self.path / NET_G_FILE

    @property
    def checkpoints(self) -> Path:
        """The folder of the stage's Lightning checkpoints."""
        return self.path / CHECKPOINTS_DIR

    @property
    def last_ckpt(self) -> Path:
        """The stage's last Lightning checkpoint (``checkpoints/last.ckpt``), where a rerun resumes."""
        return self.checkpoints / LAST_CKPT_FILE

    @property
    def summary(self) -> Path:
        """The stage's own summary (steps, metrics, checkpoints); not the run's results summary."""
        return self.path / SUMMARY_FILE

    def best_ckpt(self) -> Path | None:
        """The stage's best validation checkpoint (``checkpoints/best-step<N>.ckpt``), None when there is none."""
        return next(iter(sorted(self.checkpoints.glob(f"{BEST_CKPT_PREFIX}*.ckpt"))), None)

    def hpc_ckpts(self) -> list[Path]:
        """The checkpoints Lightning's SLURM auto-requeue left (``hpc_ckpt_<n>.ckpt``), oldest first."""
        return sorted(self.path.glob(HPC_CKPT_GLOB), key=lambda p: int(p.stem.rsplit("_", 1)[1]))


@dataclass(frozen=True)
class RunFolder:
    """``<run>/``: the path of every file a run writes, and the readers of a finished run."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # --- names -------------------------------------------------------------------------------------------------

    @property
    def results_summary(self) -> Path:
        """The attribution results' summary, written last: present means the results are complete."""
        return self.path / SUMMARY_FILE

    @property
    def masking(self) -> Path:
        """The masking table (one row per method, proportion, masked and input degradation)."""
        return self.path / MASKING_FILE

    @property
    def curves(self) -> Path:
        """The masking curves' figure."""
        return self.path / CURVES_FILE

    @property
    def filter_locations_csv(self) -> Path:
        """Per method, degradation and layer: the share of the layer's filters among the top filters."""
        return self.path / f"{FILTER_LOCATIONS}.csv"

    @property
    def filter_locations_png(self) -> Path:
        return self.path / f"{FILTER_LOCATIONS}.png"

    @property
    def unit_types_csv(self) -> Path:
        """The filter locations summed per unit type."""
        return self.path / f"{UNIT_TYPES}.csv"

    @property
    def modulation_csv(self) -> Path:
        """PSNR of each input as each degradation's filters move from the baseline's to the target's."""
        return self.path / f"{MODULATION}.csv"

    @property
    def modulation_png(self) -> Path:
        return self.path / f"{MODULATION}.png"

    @property
    def modulation_strip_png(self) -> Path:
        return self.path / f"{MODULATION_STRIP}.png"

    @property
    def prediction_json(self) -> Path:
        """The degradation prediction from the top filters' activations: accuracy and confusion."""
        return self.path / f"{PREDICTION}.json"

    @property
    def prediction_csv(self) -> Path:
        return self.path / f"{PREDICTION}.csv"

    @property
    def prediction_png(self) -> Path:
        return self.path / f"{PREDICTION}.png"

    def result_files(self) -> list[Path]:
        """The results besides the rankings: masking table, results summary, curves and every analysis file
        (present or not)."""
        return [self.masking, self.results_summary, self.curves, *(self.path / name for name in ANALYSIS_FILES)]

    @property
    def rankings_dir(self) -> Path:
        """``attribution/``: the rankings and scores of every method."""
        return self.path / RANKINGS_DIR

    def index_file(self, method: str, degradation: str) -> Path:
        """``attribution/<method>/<degradation>_index.txt``: every filter index, most discriminative first."""
        return self.rankings_dir / method / f"{degradation}_index.txt"

    def scores_file(self, method: str, degradation: str) -> Path:
        """``attribution/<method>/<degradation>_scores.npy``: the float32 score of every filter."""
        return self.rankings_dir / method / f"{degradation}_scores.npy"

    @property
    def status(self) -> Path:
        """The job's status record (``running``, ``complete``, ``failed``, ``interrupted``)."""
        return self.path / STATUS_FILE

    @property
    def wandb_runs(self) -> Path:
        """The record of the W&B runs logged from this folder (one per job type; ``read_wandb_record``)."""
        return self.path / WANDB_RECORD_FILE

    @property
    def lock(self) -> Path:
        """The lock file held while a job runs in this folder."""
        return self.path / LOCK_FILE

    @property
    def hydra_dir(self) -> Path:
        """Hydra's record of the job (``.hydra/``); its presence makes a folder a run folder."""
        return self.path / HYDRA_DIR

    @property
    def hydra_config(self) -> Path:
        """The job's resolved config, as Hydra saved it."""
        return self.hydra_dir / "config.yaml"

    @property
    def hydra_overrides(self) -> Path:
        """The job's command-line overrides, as Hydra saved them."""
        return self.hydra_dir / "overrides.yaml"

    def stage(self, name: str) -> StageFolder:
        """The folder of the training stage ``name`` (``baseline``, ``target``, ``retrain``)."""
        return StageFolder(self.path / name)

    def is_run(self) -> bool:
        """Whether this is a run folder (Hydra recorded a job in it)."""
        return self.hydra_dir.is_dir()

    # --- readers -----------------------------------------------------------------------------------------------

    def read_status(self) -> dict[str, Any] | None:
        """The job's status record; None when there is none; ``UnreadableRecord`` when it is not a JSON object."""
        return _json_object(self.status)

    def read_wandb_record(self) -> dict[str, Any] | None:
        """This folder's W&B record (see ``wandb_record``); None when it has none."""
        return _json_object(self.wandb_runs) if self.wandb_runs.is_file() else None

    def read_overrides(self) -> dict[str, str]:
        """``key -> value`` of the job's command-line overrides: ``+``/``++``/``~`` prefixes stripped, ``hydra.*``
        left out; empty when Hydra recorded none."""
        import yaml

        if not self.hydra_overrides.is_file():
            return {}
        overrides = {}
        for item in yaml.safe_load(self.hydra_overrides.read_text()) or []:
            key, sep, value = str(item).lstrip("+~").partition("=")
            if sep and not key.startswith("hydra."):
                overrides[key] = value
        return overrides

    def results_summary_record(self) -> dict[str, Any] | None:
        """The results summary as it is, without checks; None when absent, unreadable or not a JSON object."""
        try:
            return _json_object(self.results_summary)
        except UnreadableRecord:
            return None

    def read_results_summary(self, option: str = "attribution.rankings_from") -> dict[str, Any]:
        """The results summary, checked to be a complete one of this version (with ``settings`` and
        ``fingerprints``); one FaigError naming the fix when it is not (``option``: the setting that named this
        folder, for the message)."""
        path = self.results_summary
        if not self.path.is_dir():
            raise FaigError(f"{option}={self.path} is not a folder; pass a run folder holding "
                            f"attribution results ({SUMMARY_FILE}, {MASKING_FILE}, {RANKINGS_DIR}/)")
        try:
            summary = json.loads(path.read_text())
        except FileNotFoundError:
            raise FaigError(f"{option}={self.path} has no complete attribution results "
                            f"({SUMMARY_FILE} is missing); rerun that run to finish its attribution, or point at "
                            "another run") from None
        except json.JSONDecodeError as exc:
            raise FaigError(f"{path} is not valid JSON ({exc.msg}); rerun that run's attribution") from None
        if not isinstance(summary, dict) or "settings" not in summary or "fingerprints" not in summary:
            raise FaigError(f"{path} is not an attribution summary of this version (no settings/fingerprints); rerun "
                            "that run's attribution to record them")
        return summary

    def read_hydra_config(self) -> Any:
        """The job's config as Hydra saved it (an omegaconf ``DictConfig``); one FaigError when it is missing."""
        from omegaconf import OmegaConf

        if not self.hydra_config.is_file():
            raise FaigError(f"{self.hydra_config} is missing: {self.path} is not a Hydra run folder of faig-train or "
                            "faig-attribute")
        return OmegaConf.load(self.hydra_config)

    def recorded_setup(self, summary: dict[str, Any], eval_keys: Collection[str]) -> dict[str, Any]:
        """The ``SETUP_KEYS`` of this finished run: the ``provenance`` of its results ``summary``, with the eval set
        and degradation a ``faig-train`` run does not record there read from its saved Hydra config (``data.eval``,
        only its ``eval_keys``: the eval-set arguments)."""
        from omegaconf import OmegaConf

        setup = dict(summary.get("provenance", {}))
        missing = [k for k in ("eval", "degradation") if k not in setup]
        if missing and self.hydra_config.is_file():
            config = self.read_hydra_config()
            found = {"eval": OmegaConf.select(config, "data.eval") or OmegaConf.select(config, "eval"),
                     "degradation": OmegaConf.select(config, "degradation")}
            setup |= {k: OmegaConf.to_container(found[k], resolve=True) for k in missing if found[k] is not None}
            if isinstance(setup.get("eval"), dict):
                setup["eval"] = {k: v for k, v in setup["eval"].items() if k in eval_keys}
        absent = [k for k in SETUP_KEYS if k not in setup]
        if absent:
            raise FaigError(f"{self.results_summary} does not record {absent} (nor has the run a "
                            f"{HYDRA_DIR}/config.yaml); rerun that run's attribution to record them")
        return setup

    def read_rankings(
        self, summary: dict[str, Any], methods: Sequence[str], degradations: Sequence[str] | None
    ) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]], list[str], list[str]]:
        """Rankings and scores of the requested ``methods`` and ``degradations`` (None: every ranked one) that this
        run holds, with those lists; ``summary`` is its ``read_results_summary``.

        Requested methods the run did not compute are left out (the run's own methods are the menu); none left is
        an error, as is a requested degradation the run did not rank.
        """
        stored = summary["settings"]
        have_methods, have_degs = list(stored.get("methods", [])), list(stored.get("degradations", []))
        requested = list(methods)
        methods = [m for m in requested if m in have_methods]
        if not methods:
            raise FaigError(f"{self.path} holds rankings for {have_methods}, none of attribution.methods="
                            f"{requested}; request some of those")
        degs = list(degradations) if degradations is not None else have_degs
        missing = [d for d in degs if d not in have_degs]
        if missing:
            raise FaigError(f"{self.path} ranked {have_degs}, not {missing}; set attribution.degradations accordingly")
        rankings: dict[str, dict[str, np.ndarray]] = {}
        scores: dict[str, dict[str, np.ndarray]] = {}
        n = int(summary["num_filters"])
        for method in methods:
            rankings[method], scores[method] = {}, {}
            for deg in degs:
                index_file = self.index_file(method, deg)
                try:
                    order = _load_index(index_file)
                    values = np.load(self.scores_file(method, deg))
                except (OSError, ValueError) as exc:
                    raise FaigError(f"cannot read the {method} ranking for {deg} in {index_file.parent} ({exc}); "
                                    "rerun that run's attribution") from None
                if len(order) != n or len(values) != n or not np.array_equal(np.sort(order), np.arange(n)):
                    raise FaigError(f"{index_file} is not a ranking of all {n} filters; rerun that run's "
                                    "attribution")
                rankings[method][deg], scores[method][deg] = order, values
        return rankings, scores, methods, degs

    def results_complete(self, requested: dict[str, Any], fingerprints: dict[str, str]) -> bool:
        """Whether this folder holds every result file of an attribution of these weights (``fingerprints``) with
        these settings (``requested``: ``AttributionSettings.to_dict()``)."""
        try:
            summary = json.loads(self.results_summary.read_text())
            stored = summary["settings"]
            same = summary["fingerprints"] == fingerprints and stored["requested"] == requested
        except (OSError, ValueError, KeyError, TypeError):
            return False
        files = [f(m, d) for m in stored["methods"] for d in stored["degradations"]
                 for f in (self.index_file, self.scores_file)]
        if requested["proportions"]:
            files.append(self.masking)
        return same and all(f.is_file() for f in files)

    def read_table(self, name: str) -> tuple[list[str], list[dict[str, str]]]:
        """The columns and rows of the CSV table ``name`` (``MASKING_FILE`` or one of ``ANALYSIS_TABLES``), every
        value the exact string of the file; ``OSError`` when it cannot be read."""
        if name not in (MASKING_FILE, *ANALYSIS_TABLES):
            raise ValueError(f"{name!r} is not a table of a run folder; use {(MASKING_FILE, *ANALYSIS_TABLES)}")
        with open(self.path / name, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            return list(reader.fieldnames or []), rows

    def read_masking_rows(self) -> tuple[list[str], list[dict[str, str]]]:
        """The masking table's columns and rows, every value the exact string of the file."""
        return self.read_table(MASKING_FILE)

    # --- writers -----------------------------------------------------------------------------------------------

    def clear_results(self) -> None:
        """Remove the attribution results, the results summary first: the folder then never mixes two runs' files,
        and a missing summary always means "incomplete"."""
        self.results_summary.unlink(missing_ok=True)
        for path in self.result_files():
            path.unlink(missing_ok=True)
        shutil.rmtree(self.rankings_dir, ignore_errors=True)

    def write_ranking(self, method: str, degradation: str, order: np.ndarray, scores: np.ndarray) -> None:
        """Write one ranking atomically: its index file (one index per line) and its scores as float32."""
        atomic_write_text(self.index_file(method, degradation), "\n".join(map(str, order.tolist())) + "\n")
        with atomic_path(self.scores_file(method, degradation)) as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.asarray(scores, dtype=np.float32))  # a file object: np.save would append ".npy" to a name

    def write_status(self, record: dict[str, Any]) -> Path:
        """Write the job's status record atomically."""
        return atomic_write_text(self.status, json.dumps(record, indent=2) + "\n")

    def add_wandb_run(self, job_type: str, run: dict[str, Any], group: str, project: str, entity: str | None) -> Path:
        """Record the W&B run ``run`` (``id``, ``name``, ``path``, ``dir``, ``mode``, ``group``, ``tags``) of the job
        type ``job_type``; the folder's first recorded run names its ``group``, ``project`` and ``entity``."""
        record = self.read_wandb_record() or {"runs": {}}
        for key, value in (("group", group), ("project", project), ("entity", entity)):
            record.setdefault(key, value)
        record["runs"][job_type] = run
        return atomic_write_text(self.wandb_runs, json.dumps(record, indent=2) + "\n")

    def write_results_summary(self, payload: dict[str, Any]) -> Path:
        """Write the results summary atomically (last: it marks the results complete); numpy scalars as numbers."""
        text = json.dumps(payload, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o))
        return atomic_write_text(self.results_summary, text + "\n")
