"""Progress of a running attribution: a tqdm bar per stage on the console, each stage's time in the log."""

from __future__ import annotations

import logging
import time

from tqdm.auto import tqdm

log = logging.getLogger(__name__)


class ProgressBars:
    """A ``progress`` callback for ``run_attribution``: one tqdm bar (with ETA) per stage, on the console when it is
    a terminal; each finished stage leaves one line with its time in the log."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None
        self._stage: tuple[str, int] | None = None
        self._last = 0
        self._start = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self._bar is None or self._stage != (stage, total) or done < self._last:
            self.close()
            self._bar = tqdm(total=total, desc=stage, unit="step", dynamic_ncols=True, disable=None, leave=False)
            self._stage, self._last, self._start = (stage, total), 0, time.perf_counter()
        self._bar.update(done - self._last)
        self._last = done
        if done >= total:
            self.close()

    def close(self) -> None:
        """End the current bar and log its stage's time."""
        if self._bar is not None:
            self._bar.close()
            elapsed = time.perf_counter() - self._start
            log.info("  %s: %d/%d in %.1f s", self._stage[0], self._last, self._stage[1], elapsed)
            self._bar = None
