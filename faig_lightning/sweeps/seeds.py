"""Across seeds: mean ± sd of the targeted and other PSNR drops, the ratio to random, and the 1 % criterion per run.

Runs that differ only in ``seed`` are replicates of one setting; each setting's drops (``RunRecord.drops``) are
averaged over its complete replicates. The criterion says whether one run shows the FAIG finding: for every
masked degradation, masking the method's top ``proportion`` % filters drops the targeted PSNR by at least
``min_drop`` dB and ``factor`` times what the same share of random filters drops, while the other inputs lose
less than half of that.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from faig_lightning.sweeps.records import RunRecord

SEED_KEY = "seed"
SEEDS_COLUMNS = ["method", "proportion", "masked_degradation", "runs", "targeted_mean", "targeted_sd", "other_mean",
                 "other_sd", "random_targeted_mean", "ratio_to_random", "min_ratio_to_random"]
CRITERION_COLUMNS = ["run", "masked_degradation", "targeted", "other", "random_targeted", "ratio_to_random", "passed",
                     "reason"]


@dataclass(frozen=True)
class Criterion:
    """The finding one run must show (defaults: FAIG vs random at 1 %, >= 1 dB, >= 5x random, other < half)."""

    method: str = "faig"
    reference: str = "random"
    proportion: float = 1.0
    factor: float = 5.0
    min_drop: float = 1.0

    def describe(self) -> str:
        """One line for reports."""
        return (f"{self.method} top {self.proportion:g} %: targeted drop >= {self.min_drop:g} dB and >= "
                f"{self.factor:g}x {self.reference}'s, other drop < half the targeted")

    def check(self, run: RunRecord) -> list[dict[str, object]]:
        """One row per masked degradation: the drops, the ratio to the reference, and whether (and why not) it holds."""
        drops = run.drops()
        rows = []
        for masked in dict.fromkeys(m for method, p, m in drops if method == self.method and p == self.proportion):
            targeted, other = drops[self.method, self.proportion, masked]
            reference = drops.get((self.reference, self.proportion, masked), (None, None))[0]
            reasons = []
            if targeted is None or other is None or reference is None:
                reasons.append(f"missing {self.method} or {self.reference} drops")
            else:
                if targeted < self.min_drop:
                    reasons.append(f"targeted {targeted:.2f} < {self.min_drop:g} dB")
                if targeted < self.factor * max(reference, 0.0):
                    reasons.append(f"targeted {targeted:.2f} < {self.factor:g}x {self.reference} {reference:.2f}")
                if other >= targeted / 2:
                    reasons.append(f"other {other:.2f} >= half the targeted")
            ratio = targeted / reference if targeted is not None and reference and reference > 0 else None
            rows.append({"run": run.name, "masked_degradation": masked, "targeted": targeted, "other": other,
                         "random_targeted": reference, "ratio_to_random": ratio, "passed": not reasons,
                         "reason": "; ".join(reasons)})
        return rows

    def passed(self, run: RunRecord) -> bool:
        """Whether ``run`` shows the finding for every masked degradation (False when it has no such results)."""
        rows = self.check(run)
        return bool(rows) and all(r["passed"] for r in rows)


def _mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def replicate_groups(runs: Sequence[RunRecord], keys: Sequence[str]) -> dict[tuple[str, ...], list[RunRecord]]:
    """Complete runs grouped by their swept values other than ``seed`` (one group when only the seed varies)."""
    setting = [k for k in keys if k != SEED_KEY]
    groups: dict[tuple[str, ...], list[RunRecord]] = {}
    for run in runs:
        if run.complete:
            groups.setdefault(tuple(run.overrides.get(k, "") for k in setting), []).append(run)
    return groups


def seeds_table(runs: Sequence[RunRecord], keys: Sequence[str], reference: str = "random"
                ) -> tuple[list[str], list[list[object]]]:
    """``seeds.csv``: per setting, method, proportion and masked degradation, mean ± sd (sample, n - 1) of the
    targeted and other drops over the replicates, the reference's mean targeted drop, the ratio of the means and
    the smallest per-run ratio."""
    setting = [k for k in keys if k != SEED_KEY]
    rows: list[list[object]] = []
    for values, group in replicate_groups(runs, keys).items():
        per_run = [r.drops() for r in group]
        for method, prop, masked in dict.fromkeys(k for d in per_run for k in d):
            having = [d for d in per_run if (method, prop, masked) in d]
            pairs = [d[method, prop, masked] for d in having]
            targeted = [t for t, _ in pairs if t is not None]
            other = [o for _, o in pairs if o is not None]
            refs = [d.get((reference, prop, masked), (None, None))[0] for d in having]
            if not targeted or not other:
                continue
            t_mean, t_sd = _mean_sd(targeted)
            o_mean, o_sd = _mean_sd(other)
            known = [r for r in refs if r is not None]
            r_mean = _mean_sd(known)[0] if known else None
            ratios = [t / r for (t, _), r in zip(pairs, refs, strict=True) if t is not None and r and r > 0]
            compared = method != reference and r_mean is not None and r_mean > 0
            rows.append([*values, method, f"{prop:g}", masked, len(targeted), t_mean, t_sd, o_mean, o_sd, r_mean,
                         t_mean / r_mean if compared else None,
                         min(ratios) if compared and len(ratios) == len(pairs) else None])
    return [*setting, *SEEDS_COLUMNS], rows


def criterion_checks(runs: Sequence[RunRecord], criterion: Criterion) -> list[dict[str, object]]:
    """The criterion's check of every complete run, one row per masked degradation."""
    return [row for r in runs if r.complete for row in criterion.check(r)]


def criterion_table(checks: Sequence[dict[str, object]]) -> tuple[list[str], list[list[object]]]:
    """``criterion.csv`` from ``criterion_checks``."""
    return CRITERION_COLUMNS, [[row[c] for c in CRITERION_COLUMNS] for row in checks]


def seeds_markdown(runs: Sequence[RunRecord], keys: Sequence[str], criterion: Criterion,
                   checks: Sequence[dict[str, object]]) -> str:
    """The ``sweep.md`` sections: mean ± sd over seeds per method and proportion, and the criterion per run."""

    def num(v: object, digits: int = 2) -> str:
        return "" if v is None else f"{v:.{digits}f}"

    columns, rows = seeds_table(runs, keys, criterion.reference)
    setting = columns[: len(columns) - len(SEEDS_COLUMNS)]
    lines = ["## Across seeds: PSNR drop (dB), mean ± sd", "",
             "| " + " | ".join([*setting, "method", "masked %", "masked", "runs", "targeted", "other",
                                f"x {criterion.reference} (of means)", "smallest x per run"]) + " |",
             "|" + "---|" * (len(setting) + 8)]
    for row in rows:
        cells = dict(zip(columns, row, strict=True))
        sd = {k: "" if cells[f"{k}_sd"] is None else f" ± {cells[f'{k}_sd']:.2f}" for k in ("targeted", "other")}
        lines.append("| " + " | ".join([*(str(cells[k]) for k in setting), str(cells["method"]),
                                        str(cells["proportion"]), str(cells["masked_degradation"]),
                                        str(cells["runs"]), num(cells["targeted_mean"]) + sd["targeted"],
                                        num(cells["other_mean"]) + sd["other"], num(cells["ratio_to_random"], 1),
                                        num(cells["min_ratio_to_random"], 1)]) + " |")
    lines += ["", f"## Criterion per run: {criterion.describe()}", "",
              "| run | masked | targeted | other | " + criterion.reference + " | ratio | holds |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {c['run']} | {c['masked_degradation']} | {num(c['targeted'])} | {num(c['other'])} | "
              f"{num(c['random_targeted'])} | {num(c['ratio_to_random'], 1)} | "
              f"{'yes' if c['passed'] else 'no: ' + str(c['reason'])} |" for c in checks]
    return "\n".join(lines) + "\n"
