"""Masking and modulation: write chosen filters of one working copy of the target, then restore them."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from faig_lightning.attribution.filters import FilterIndex
from faig_lightning.attribution.validation import check_pair
from faig_lightning.errors import FaigError


def filter_set_key(filters: torch.Tensor | np.ndarray | list[int]) -> bytes:
    """A hashable key of a set of global filter indices (order and dtype do not matter)."""
    return np.sort(np.asarray(filters, dtype=np.int64).reshape(-1)).tobytes()


class FilterMasker:
    """One working copy of the target whose chosen filters ``W[o, i]`` can be substituted temporarily.

    ``with masker.masked(filters, lam) as net:`` sets each chosen filter to
    ``lam * W_target + (1 - lam) * W_baseline``: ``lam=0`` is masking (the baseline's kernel, as in the paper),
    ``lam=1`` the target, ``lam>1`` extrapolation. Biases and every other tensor keep the target's values.
    On exit the chosen filters get the target's values back. The copy is made once, in eval mode on ``device``.
    The pair is checked (``check_pair``) and indexed with ``extra_units``, unless the caller passes the ``index`` of
    a pair it checked already (the engine, once per run).
    """

    def __init__(self, baseline: nn.Module, target: nn.Module, device: str | torch.device | None = None,
                 extra_units: Sequence[str] = (), *, index: FilterIndex | None = None) -> None:
        if index is None:
            check_pair(baseline, target)
            index = FilterIndex.from_model(target, extra_units)
        self.index = index
        self.net = copy.deepcopy(target)
        if device is not None:
            self.net.to(device)
        self.net.eval()
        b_state = baseline.state_dict()
        weights = dict(self.net.named_parameters())
        # filter grids: views with filter [o, i] at [o, i] whatever the weight's layout (writes go through)
        self._weights = [group.grid(weights[group.name]) for group in self.index.layers]
        self._target = [w.detach().clone() for w in self._weights]
        self._baseline = [
            group.grid(b_state[group.name].detach().to(w.device, w.dtype))
            for group, w in zip(self.index.layers, self._weights, strict=True)
        ]

    def _split(self, filters: torch.Tensor | np.ndarray | list[int]) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
        """Per layer: (layer position, o, i) of the chosen global indices."""
        flat = torch.as_tensor(np.asarray(filters, dtype=np.int64)).reshape(-1)
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= len(self.index)):
            raise FaigError(
                f"filter indices must lie in [0, {len(self.index)}); got {int(flat.min())}..{int(flat.max())}"
            )
        layer_ids = self.index.layer_ids(flat)
        out = []
        for pos in torch.unique(layer_ids).tolist():
            group = self.index.layers[pos]
            local = flat[layer_ids == pos] - group.offset
            device = self._weights[pos].device
            out.append((pos, (local // group.in_channels).to(device), (local % group.in_channels).to(device)))
        return out

    @contextmanager
    def masked(self, filters: torch.Tensor | np.ndarray | list[int], lam: float = 0.0) -> Iterator[nn.Module]:
        """Yield the working net with ``filters`` set to ``lam * target + (1 - lam) * baseline``; restore after."""
        parts = self._split(filters)
        with torch.no_grad():
            for pos, o, i in parts:
                t, b = self._target[pos][o, i], self._baseline[pos][o, i]
                self._weights[pos][o, i] = b if lam == 0 else lam * t + (1 - lam) * b
        try:
            yield self.net
        finally:
            with torch.no_grad():
                for pos, o, i in parts:
                    self._weights[pos][o, i] = self._target[pos][o, i]
