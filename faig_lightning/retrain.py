"""The ``retrain`` stage: fine-tune only a chosen filter set of the baseline, everything else frozen.

It tests whether the discovered filters *are* the restoration: starting from the baseline, only the top filters
of a ranking (FAIG's, or random ones for the control) are trained on the target's degradations, and the result is
compared with the baseline and the target on the eval set — the share of the target's PSNR gain each filter set
recovers. Every filter may be selected, first-layer filters included.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from faig_lightning.attribution.evalset import EvalItem
from faig_lightning.attribution.filters import FilterIndex
from faig_lightning.attribution.metrics import Evaluator, default_eval_batch
from faig_lightning.checkpoints import load_weights
from faig_lightning.errors import FaigError
from faig_lightning.run_folder import RunFolder, read_index_file
from faig_lightning.schemas import RetrainConfig


@dataclass(frozen=True)
class RetrainPlan:
    """Which filters the retrain stage trains (the top ``proportion`` % of each index file, united) and the
    checkpoints it starts from and is compared with."""

    index_files: tuple[str, ...]
    proportion: float
    baseline_ckpt: str
    target_ckpt: str | None
    source: str
    extra_units: tuple[str, ...] = ()
    """The rankings' whole-tensor units (``attribution.extra_units`` of the run that wrote them)."""

    def filters(self, index: FilterIndex) -> list[int]:
        """The sorted union of each index file's top ``proportion`` % (``index.top_k``) filters; ``index`` must
        number the net's units as the rankings do (``FilterIndex.from_model(net, self.extra_units)``)."""
        k = index.top_k(self.proportion)
        chosen: set[int] = set()
        for path in self.index_files:
            order = read_index_file(path, len(index))
            if len(order) < k:
                raise FaigError(f"{path} lists {len(order)} filters; retrain.proportion={self.proportion:g} needs the "
                                f"top {k}")
            chosen.update(order[:k].tolist())
        return sorted(chosen)

    def compare(self, retrained: nn.Module, eval_set: Sequence[EvalItem], scale: int) -> dict[str, Any]:
        """PSNR/SSIM of the baseline, the target (when known) and the retrained net per eval input, and the share
        of the target's PSNR gain over the baseline that the retrained net recovers (None where the target did not
        gain, e.g. on clean inputs)."""
        items = [eval_set[i] for i in range(len(eval_set))]
        device = next(retrained.parameters()).device
        inputs = list(items[0]["lq"])
        evaluator = Evaluator(items, scale=scale, degradations=inputs, device=device,
                              max_batch=default_eval_batch(device))
        nets = {"baseline": self.baseline_ckpt, "target": self.target_ckpt}
        metrics = {"retrained": evaluator.evaluate(retrained.eval())}
        for role, path in nets.items():
            if path:
                metrics[role] = evaluator.evaluate(load_weights(copy.deepcopy(retrained), path, key="ema").eval())
        out: dict[str, Any] = {"source": self.source, "index_files": list(self.index_files),
                               "proportion": self.proportion, "baseline_ckpt": self.baseline_ckpt,
                               "target_ckpt": self.target_ckpt, "inputs": {}}
        for inp in inputs:
            row = {f"{role}_{m}": metrics[role][inp][m] for role in metrics for m in ("psnr", "ssim")}
            if "target" in metrics:
                gain = metrics["target"][inp]["psnr"] - metrics["baseline"][inp]["psnr"]
                got = metrics["retrained"][inp]["psnr"] - metrics["baseline"][inp]["psnr"]
                row["target_gain_db"], row["retrained_gain_db"] = gain, got
                row["recovered"] = got / gain if gain > 0 else None  # a share of a gain; none where it lost
            out["inputs"][inp] = row
        return out


def resolve_retrain(scfg: RetrainConfig, baseline_ckpt: str | None) -> RetrainPlan:
    """The plan of the ``retrain`` config section, every file checked to exist; one line naming the fix if not.

    ``from_run`` (a finished run of ``faig-train`` or ``faig-attribute``) supplies the baseline to start from, the
    target to compare with and its ``attribution/<method>/<degradation>_index.txt`` rankings; ``index`` lists index
    files instead; ``baseline_ckpt`` / ``retrain.target_ckpt`` override the run's checkpoints.
    """
    from_run, index = scfg.from_run, scfg.index or []
    index = [index] if isinstance(index, str) else list(index)
    proportion = scfg.proportion
    if isinstance(proportion, bool) or not isinstance(proportion, int | float) or not 0 < proportion <= 100:
        raise FaigError(f"retrain.proportion must be a percentage in (0, 100], got {proportion!r}")
    target_ckpt = scfg.target_ckpt
    extra_units: Any = []
    if from_run:
        run = RunFolder(from_run)
        summary = run.read_results_summary(option="retrain.from_run")
        provenance = summary.get("provenance", {})
        baseline_ckpt = baseline_ckpt or provenance.get("baseline_ckpt")
        target_ckpt = target_ckpt or provenance.get("target_ckpt")
        extra_units = summary["settings"].get("extra_units") or []
        if not index:
            method = scfg.method
            ranked = summary["settings"].get("degradations", [])
            degs = scfg.degradations or ranked
            degs = [degs] if isinstance(degs, str) else list(degs)
            missing = [d for d in degs if d not in ranked]
            if missing or method not in summary["settings"].get("methods", []):
                raise FaigError(f"{from_run} ranked {ranked} with {summary['settings'].get('methods')}; "
                                f"retrain.method={method} retrain.degradations={degs} asks for more")
            index = [str(run.index_file(method, d)) for d in degs]
            source = f"{method} top {proportion:g} % of {'+'.join(degs)} from {from_run}"
        else:
            source = f"top {proportion:g} % of {', '.join(index)}"
    elif index:
        source = f"top {proportion:g} % of {', '.join(index)}"
    else:
        raise FaigError("stage=retrain needs retrain.from_run=RUN (a finished run with attribution results) or "
                        "retrain.index=[FILE,...] with baseline_ckpt=PATH")
    if not baseline_ckpt:
        raise FaigError("stage=retrain needs baseline_ckpt=PATH (the net to start from) when retrain.from_run does "
                        "not record one")
    for path in (*index, baseline_ckpt, *([target_ckpt] if target_ckpt else [])):
        if not Path(path).is_file():
            raise FaigError(f"retrain: {path} does not exist; check retrain.from_run / retrain.index / baseline_ckpt")
    return RetrainPlan(tuple(str(p) for p in index), float(proportion), str(baseline_ckpt),
                       str(target_ckpt) if target_ckpt else None, source,
                       tuple([extra_units] if isinstance(extra_units, str) else extra_units))


def retrain_markdown(comparison: Mapping[str, Any]) -> str:
    """The comparison of ``RetrainPlan.compare`` as a Markdown table, one row per eval input."""
    lines = ["| input | baseline | target | retrained | gain recovered |", "|---|---|---|---|---|"]
    for inp, row in comparison["inputs"].items():
        target = f"{row['target_psnr']:.2f}" if "target_psnr" in row else ""
        recovered = f"{100 * row['recovered']:.0f} %" if row.get("recovered") is not None else ""
        lines.append(f"| {inp} | {row['baseline_psnr']:.2f} | {target} | {row['retrained_psnr']:.2f} | {recovered} |")
    return "\n".join(lines)

