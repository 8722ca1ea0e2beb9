"""Seeds of a run: every random stream that shapes results is a pure function of the run's seed and a counter.

A stage's stream seed is a hash of ``seed`` and the stage name (so the target's stream does not depend on how the
baseline ran or whether it was resumed); the crops of epoch ``e``, the order of an epoch and the degradation
draws of training step ``s`` are hashes of that stage seed and ``e`` / ``s``. A checkpoint's stage seed
(a hyper-parameter), epoch and step are therefore its whole random state: a resumed run draws exactly what the
uninterrupted run drew, and nothing outside these streams (logger, progress bar, loader workers) can shift them.
"""

from __future__ import annotations

import zlib

import numpy as np

from faig_lightning.errors import FaigError

MAX_SEED = 2**32 - 1


def check_seed(seed: object) -> int:
    """The run's seed as an int in [0, 2**32 - 1], or one line naming the fix."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise FaigError(f"seed must be an integer in [0, {MAX_SEED}], got {seed!r}; e.g. seed=0")
    return seed


def derive_seed(seed: int, *keys: str | int) -> int:
    """A 32-bit seed for the stream named by ``keys`` (strings and non-negative ints), independent of other streams.

    numpy's ``SeedSequence`` hashes ``seed`` with the keys, so nearby seeds or keys give unrelated streams.
    """
    spawn = tuple(zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys)
    return int(np.random.SeedSequence(seed, spawn_key=spawn).generate_state(1, np.uint32)[0])
