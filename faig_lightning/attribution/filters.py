"""Filter numbering: every ``W[o, i]`` kernel slice of every Conv2d, in the official code's global order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from faig_lightning.errors import FaigError


@dataclass(frozen=True)
class ConvLayer:
    """One Conv2d layer of the index: its weight's state-dict name, shape and first global filter index."""

    name: str
    shape: tuple[int, int, int, int]
    offset: int

    @property
    def out_channels(self) -> int:
        """Number of output channels (rows of the layer's filter grid)."""
        return self.shape[0]

    @property
    def in_channels(self) -> int:
        """Number of input channels per group (columns of the layer's filter grid)."""
        return self.shape[1]

    @property
    def count(self) -> int:
        """Number of filters ``out_channels * in_channels`` in this layer."""
        return self.shape[0] * self.shape[1]


class FilterIndex:
    """Global filter numbering of a network: ``layer.offset + o * in_channels + i``.

    Layers are the ``nn.Conv2d`` modules in ``named_modules`` order (equal to state-dict order for the
    paper's nets), biases excluded. This reproduces the official index files exactly.

    Grouped convolutions are handled: their weight has shape ``(O, I / groups, kh, kw)`` and ``i`` is the
    input channel *within the group*, so a layer contributes ``O * I / groups`` filters.
    """

    def __init__(self, layers: list[ConvLayer]) -> None:
        if not layers:
            raise FaigError("the network has no nn.Conv2d layer: FAIG attributes Conv2d filters; pass a conv net")
        self.layers: tuple[ConvLayer, ...] = tuple(layers)
        self._by_name = {layer.name: pos for pos, layer in enumerate(self.layers)}
        self._offsets = torch.tensor([layer.offset for layer in self.layers], dtype=torch.long)
        self._total = self.layers[-1].offset + self.layers[-1].count

    @classmethod
    def from_model(cls, model: nn.Module) -> FilterIndex:
        """Index every Conv2d of ``model`` in module order."""
        layers: list[ConvLayer] = []
        offset = 0
        for module_name, module in model.named_modules():
            if isinstance(module, nn.Conv2d):
                name = f"{module_name}.weight" if module_name else "weight"
                shape = tuple(module.weight.shape)
                layers.append(ConvLayer(name=name, shape=shape, offset=offset))  # type: ignore[arg-type]
                offset += shape[0] * shape[1]
        return cls(layers)

    def __len__(self) -> int:
        return self._total

    def __repr__(self) -> str:
        return f"FilterIndex({len(self.layers)} conv layers, {self._total} filters)"

    @property
    def weight_names(self) -> list[str]:
        """State-dict names of the indexed conv weights, in index order."""
        return [layer.name for layer in self.layers]

    def layer(self, layer: str | int) -> ConvLayer:
        """The layer given by weight name (``'features.2.weight'``), module name (``'features.2'``) or position."""
        if isinstance(layer, int):
            if not -len(self.layers) <= layer < len(self.layers):
                raise FaigError(f"layer position {layer} out of range: the net has {len(self.layers)} conv layers")
            return self.layers[layer]
        pos = self._by_name.get(layer, self._by_name.get(f"{layer}.weight"))
        if pos is None:
            raise FaigError(f"unknown conv layer {layer!r}; known layers: {', '.join(self.weight_names)}")
        return self.layers[pos]

    def flat(self, layer: str | int, o: int, i: int) -> int:
        """Global index of filter ``W[o, i]`` of ``layer``."""
        conv = self.layer(layer)
        if not (0 <= o < conv.out_channels and 0 <= i < conv.in_channels):
            raise FaigError(f"filter [{o}, {i}] out of range for {conv.name} with weight shape {conv.shape}")
        return conv.offset + o * conv.in_channels + i

    def locate(self, flat: int) -> tuple[str, int, int]:
        """Inverse of :meth:`flat`: ``(weight_name, o, i)`` of a global index."""
        if not 0 <= flat < self._total:
            raise FaigError(f"filter index {flat} out of range [0, {self._total})")
        pos = int(torch.searchsorted(self._offsets, torch.tensor(flat), right=True)) - 1
        conv = self.layers[pos]
        o, i = divmod(flat - conv.offset, conv.in_channels)
        return conv.name, o, i

    def layer_ids(self, flat: torch.Tensor) -> torch.Tensor:
        """Layer position of each global index in ``flat`` (any integer tensor)."""
        return torch.searchsorted(self._offsets, flat.to(torch.long).cpu(), right=True) - 1

    def masks(self, filters: torch.Tensor | Sequence[int]) -> dict[str, torch.Tensor]:
        """Per conv weight holding any of the global indices ``filters``: a bool ``(O, I)`` mask of them."""
        flat = torch.as_tensor(filters, dtype=torch.long).reshape(-1)
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self._total):
            raise FaigError(f"filter indices must lie in [0, {self._total}); got {int(flat.min())}..{int(flat.max())}")
        ids = self.layer_ids(flat)
        out = {}
        for pos in torch.unique(ids).tolist():
            conv = self.layers[pos]
            mask = torch.zeros(conv.out_channels * conv.in_channels, dtype=torch.bool)
            mask[flat[ids == pos] - conv.offset] = True
            out[conv.name] = mask.view(conv.out_channels, conv.in_channels)
        return out

    def per_filter(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Reduce per-weight tensors ``{weight_name: (O, I, kh, kw)}`` to ``(N,)``: sum of ``|.|`` over each kernel."""
        parts = []
        for conv in self.layers:
            if conv.name not in tensors:
                raise FaigError(f"per_filter needs a tensor for every conv weight; {conv.name!r} is missing")
            tensor = tensors[conv.name]
            if tuple(tensor.shape) != conv.shape:
                raise FaigError(f"{conv.name}: expected shape {conv.shape}, got {tuple(tensor.shape)}")
            parts.append(tensor.abs().sum(dim=(2, 3)).reshape(-1))
        return torch.cat(parts)

    def top_k(self, proportion_percent: float) -> int:
        """Number of filters in the top ``proportion_percent`` %: ``int(N * p / 100)`` as in the official code."""
        if not 0 < proportion_percent <= 100:
            raise FaigError(f"proportion {proportion_percent} must be a percentage in (0, 100], e.g. 1, 3, 5 or 10")
        return int(self._total * proportion_percent / 100)

    def top(self, scores: torch.Tensor, proportion_percent: float) -> torch.Tensor:
        """Global indices of the ``top_k(p)`` highest ``scores`` (ties: lower index first)."""
        scores = torch.as_tensor(scores)
        if scores.shape != (self._total,):
            raise FaigError(f"scores must have shape ({self._total},), got {tuple(scores.shape)}")
        return ranking(scores)[: self.top_k(proportion_percent)]


def ranking(scores: torch.Tensor) -> torch.Tensor:
    """All indices sorted by descending score; a stable sort, so ties keep ascending index order."""
    return torch.sort(torch.as_tensor(scores), descending=True, stable=True).indices
