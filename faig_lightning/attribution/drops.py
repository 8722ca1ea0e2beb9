"""Targeted and other PSNR drops of a masking table: the one place that decides which inputs are "other".

Plain python (no torch, Lightning or Hydra), so that a run's report and the sweep summary share it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

CLEAN = "clean"
"""The eval-set input without degradation."""

DropRow = tuple[str, float | None, str, str, float | None]
"""``(method, proportion, masked degradation, input degradation, psnr_drop)`` of one masking row; ``None`` where a
stored value is missing or not a number."""
DropKey = tuple[str, float, str]
"""``(method, proportion, masked degradation)``."""
Others = Literal["ranked", "ranked_else_all"]


def targeted_other_drops(rows: Iterable[DropRow], *, others: Others) -> dict[DropKey, tuple[float | None,
                                                                                               float | None]]:
    """``(method, proportion, masked) -> (targeted drop, other drop)`` (dB) of a masking table, keys in row order.

    The targeted drop is the PSNR drop on the masked degradation's own input. The other drop is the mean drop on
    the inputs of the other ranked degradations (the degradations some row masks); ``others`` says what else
    counts and in which order the drops are summed:

    - ``"ranked"``: the other ranked degradations but ``clean`` (the paper's "other degradations"), in input order;
      ``None`` when no other degradation was ranked (the sweep summary);
    - ``"ranked_else_all"``: the other ranked degradations, ``clean`` too when it was ranked, in ranking order;
      with a single ranked degradation, every other input (``clean`` included) in input order instead (a run's
      headline numbers).

    Rows whose proportion or drop is ``None`` give no drop, but their masked degradation still counts as ranked.
    """
    drop: dict[tuple[str, float, str, str], float] = {}
    ranked: dict[str, None] = {}
    inputs: dict[str, None] = {}
    for method, proportion, masked, inp, value in rows:
        ranked[masked] = None
        inputs[inp] = None
        if proportion is not None and value is not None:
            drop[method, proportion, masked, inp] = value
    result = {}
    for method, proportion, masked in dict.fromkeys(key[:3] for key in drop):
        if others == "ranked":
            pool = [d for d in inputs if d in ranked and d != masked and d != CLEAN]
        else:
            pool = [d for d in ranked if d != masked] or [d for d in inputs if d != masked]
        values = [drop[method, proportion, masked, d] for d in pool if (method, proportion, masked, d) in drop]
        result[method, proportion, masked] = (drop.get((method, proportion, masked, masked)),
                                              sum(values) / len(values) if values else None)
    return result
