"""The tables of an attribution result: CSV text of its rows (masking, analyses, degradation prediction) and the
Markdown tables printed in the log."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any

from faig_lightning.attribution.engine import MaskingRow
from faig_lightning.attribution.prediction import PredictionResult

MASKING_COLUMNS = [f.name for f in fields(MaskingRow)]


def row_columns(rows: Sequence[Any]) -> list[str]:
    """Column names of dataclass rows: their field names, ``lam`` written ``lambda``."""
    return ["lambda" if f.name == "lam" else f.name for f in fields(rows[0])]


def rows_csv(rows: Sequence[Any]) -> str:
    """Dataclass rows as CSV text with a header of ``row_columns``."""
    buffer = io.StringIO()
    names = [f.name for f in fields(rows[0])]
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(row_columns(rows))
    for row in rows:
        writer.writerow([getattr(row, n) for n in names])
    return buffer.getvalue()


def masking_csv(rows: list[MaskingRow]) -> str:
    """The masking table as CSV text with a header of ``MASKING_COLUMNS``."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MASKING_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row))
    return buffer.getvalue()


def prediction_csv(prediction: PredictionResult) -> str:
    """One row per test condition: its levels and class, whether the target saw it, patches, correct, accuracy and
    how many patches went to each class (``predicted_<class>``)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    level_keys = [f"{d}_sigma" for d in prediction.degradations]
    writer.writerow(["method", "proportion", "condition", "class", *level_keys, "seen", "patches", "correct",
                     "accuracy", *(f"predicted_{c}" for c in prediction.classes)])
    for row in prediction.conditions:
        writer.writerow([prediction.method, prediction.proportion, row["condition"], row["class"],
                         *(row[k] for k in level_keys), row["seen"], row["patches"], row["correct"], row["accuracy"],
                         *(row["predicted"][c] for c in prediction.classes)])
    return buffer.getvalue()


def masking_markdown(rows: list[MaskingRow]) -> str:
    """The masking table as a Markdown table (for consoles and notebooks); metrics to 4 significant digits."""
    lines = ["| " + " | ".join(MASKING_COLUMNS) + " |", "|" + "---|" * len(MASKING_COLUMNS)]
    for row in rows:
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in asdict(row).values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def drop_markdown(rows: list[MaskingRow]) -> str:
    """PSNR drop (dB) per method and proportion: for each masked degradation, on its own input (targeted) and on
    the other ranked inputs. Large targeted and small other drops mean the filters carry that one function."""
    masked = list(dict.fromkeys(r.masked_degradation for r in rows))
    drop = {(r.method, r.proportion, r.masked_degradation, r.input_degradation): r.psnr_drop for r in rows}
    cols = [(m, i) for m in masked for i in [m, *(d for d in masked if d != m)]]
    head = ["method", "masked %"] + [f"mask {m}: {i} input" for m, i in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, prop in dict.fromkeys((r.method, r.proportion) for r in rows):
        cells = [f"{drop[(method, prop, m, i)]:.2f}" if (method, prop, m, i) in drop else "" for m, i in cols]
        lines.append(f"| {method} | {prop:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
