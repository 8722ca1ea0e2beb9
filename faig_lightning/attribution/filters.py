"""Filter (unit) numbering: the weights joining input channel ``i`` to output channel ``o`` of every attributable
layer, in module order; for Conv2d-only nets this is the official code's global order."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
from torch import nn

from faig_lightning.attribution.proportions import top_k
from faig_lightning.errors import FaigError

KINDS = ("conv", "attention", "linear", "tensor")
"""Unit types: convolution kernels; scalars of attention projections (``nn.MultiheadAttention``'s, and
``nn.Linear`` layers of any module whose class name contains ``Attention``, e.g. SwinIR's ``qkv``/``proj``); scalars
of other ``nn.Linear`` layers (MLPs, embeddings); whole tensors added with ``extra_units`` (norms, tables, ...)."""


@dataclass(frozen=True)
class UnitGroup:
    """The units of one indexed parameter (a convolution's kernels, a Linear or attention matrix's scalars, or a
    whole tensor): its state-dict name, shape, first global filter index, whether it is stored ``(in, out, ...)``
    (transposed convolutions) rather than ``(out, in, ...)`` (convolutions, Linear, attention projections), and
    its unit type (``KINDS``). A filter (unit) is ``W[o, i]`` — a kernel for convolutions, a
    scalar for matrices; a ``tensor`` layer is one unit holding the whole parameter (its grid is ``1 x 1``)."""

    name: str
    shape: tuple[int, ...]
    offset: int
    transposed: bool = False
    kind: str = "conv"

    @property
    def out_channels(self) -> int:
        """Number of output channels (rows of the layer's filter grid; per group for transposed convs)."""
        if self.kind == "tensor":
            return 1
        return self.shape[1] if self.transposed else self.shape[0]

    @property
    def in_channels(self) -> int:
        """Number of input channels per group (columns of the layer's filter grid)."""
        if self.kind == "tensor":
            return 1
        return self.shape[0] if self.transposed else self.shape[1]

    @property
    def count(self) -> int:
        """Number of filters ``out_channels * in_channels`` in this layer."""
        return self.out_channels * self.in_channels

    def grid(self, tensor: torch.Tensor) -> torch.Tensor:
        """A view of a tensor shaped like this weight with filter ``[o, i]`` at ``[o, i]`` (writes go through)."""
        if self.kind == "tensor":
            return tensor.view(1, 1, -1)
        return tensor.transpose(0, 1) if self.transposed else tensor

    def weight_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """A bool ``(out, in)`` filter mask as a mask broadcastable to this weight."""
        if self.kind == "tensor":
            return mask.reshape((1,) * len(self.shape))
        mask = mask.t() if self.transposed else mask
        return mask.reshape(*mask.shape, *([1] * (len(self.shape) - 2)))


def attributable(model: nn.Module) -> list[tuple[str, torch.Tensor, bool, str]]:
    """``(state-dict name, weight, transposed, kind)`` of every weight FAIG attributes, in module order: the
    weights of convolutions (1-, 2-, 3-D, grouped, depthwise, transposed) and ``nn.Linear``, and the input
    projections of ``nn.MultiheadAttention`` (its output projection is an ``nn.Linear``). Biases, norms and other
    tensors are not attributed unless added with ``FilterIndex.from_model(model, extra_units)``."""
    modules = dict(model.named_modules())
    out = []
    for module_name, module in modules.items():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, nn.modules.conv._ConvNd):
            out.append((f"{prefix}weight", module.weight, bool(module.transposed), "conv"))
        elif isinstance(module, nn.Linear):
            parent = modules[module_name.rpartition(".")[0]] if module_name else module
            kind = "attention" if "Attention" in type(parent).__name__ else "linear"
            out.append((f"{prefix}weight", module.weight, False, kind))
        elif isinstance(module, nn.MultiheadAttention):
            for attr in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
                weight = getattr(module, attr, None)
                if weight is not None:
                    out.append((f"{prefix}{attr}", weight, False, "attention"))
    return out


class FilterIndex:
    """Global filter numbering of a network: ``layer.offset + o * in_channels + i``.

    Layers are the attributable weights (:func:`attributable`) in ``named_modules`` order (equal to state-dict
    order for the paper's nets), biases excluded. For nets made of ``nn.Conv2d`` only this reproduces the official
    index files exactly.

    Grouped convolutions: the weight has shape ``(O, I / groups, k...)`` and ``i`` is the input channel *within
    the group*, so a layer contributes ``O * I / groups`` filters (one per channel for a depthwise conv).
    Transposed convolutions store ``(I, O / groups, k...)``; their filter ``[o, i]`` is ``W[i, o]``.
    """

    def __init__(self, layers: list[UnitGroup], excluded: Sequence[str] = ()) -> None:
        if not layers:
            raise FaigError("the network has no weight FAIG can attribute (convolutions, nn.Linear, "
                            "nn.MultiheadAttention projections); pass a network built from them")
        self.layers: tuple[UnitGroup, ...] = tuple(layers)
        self.excluded: tuple[str, ...] = tuple(excluded)
        """Parameters of the net that are not indexed (biases, norms, position-bias tables, ...)."""
        self._by_name = {layer.name: pos for pos, layer in enumerate(self.layers)}
        self._offsets = torch.tensor([layer.offset for layer in self.layers], dtype=torch.long)
        self._total = self.layers[-1].offset + self.layers[-1].count

    @classmethod
    def from_model(cls, model: nn.Module, extra_units: Sequence[str] = ()) -> FilterIndex:
        """Index every attributable weight of ``model`` in module order, then each other parameter whose name
        matches one of the shell-style patterns ``extra_units`` (e.g. ``*relative_position_bias_table``,
        ``*norm*``, ``*`` for all) as one unit of its own, in ``named_parameters`` order, so the weights keep
        their numbers."""
        layers: list[UnitGroup] = []
        offset = 0
        for name, weight, transposed, kind in attributable(model):
            layer = UnitGroup(name=name, shape=tuple(weight.shape), offset=offset, transposed=transposed, kind=kind)
            layers.append(layer)
            offset += layer.count
        indexed = {layer.name for layer in layers}
        others = [(name, p) for name, p in model.named_parameters() if name not in indexed]
        for pattern in extra_units:
            if not any(fnmatchcase(name, pattern) for name, _ in others):
                shown = ", ".join(name for name, _ in others[:6]) + (", ..." if len(others) > 6 else "")
                raise FaigError(f"attribution.extra_units pattern {pattern!r} matches no parameter outside the "
                                f"weights; those are: {shown or 'none'} (patterns are shell-style, e.g. '*norm*')")
        excluded = []
        for name, p in others:
            if any(fnmatchcase(name, pattern) for pattern in extra_units):
                layers.append(UnitGroup(name=name, shape=tuple(p.shape), offset=offset, kind="tensor"))
                offset += 1
            else:
                excluded.append(name)
        return cls(layers, excluded)

    def describe(self) -> dict[str, object]:
        """JSON-ready: per indexed layer its weight, shape, layout, unit type and filter count; the parameters
        left out."""
        return {"layers": [{"name": layer.name, "shape": list(layer.shape), "transposed": layer.transposed,
                            "kind": layer.kind, "filters": layer.count} for layer in self.layers],
                "excluded": list(self.excluded)}

    def __len__(self) -> int:
        return self._total

    def __repr__(self) -> str:
        return f"FilterIndex({len(self.layers)} layers, {self._total} filters)"

    @property
    def weight_names(self) -> list[str]:
        """State-dict names of the indexed weights, in index order."""
        return [layer.name for layer in self.layers]

    def layer(self, layer: str | int) -> UnitGroup:
        """The layer given by weight name (``'features.2.weight'``), module name (``'features.2'``) or position."""
        if isinstance(layer, int):
            if not -len(self.layers) <= layer < len(self.layers):
                raise FaigError(f"layer position {layer} out of range: the net has {len(self.layers)} indexed layers")
            return self.layers[layer]
        pos = self._by_name.get(layer, self._by_name.get(f"{layer}.weight"))
        if pos is None:
            raise FaigError(f"unknown layer {layer!r}; known layers: {', '.join(self.weight_names)}")
        return self.layers[pos]

    def flat(self, layer: str | int, o: int, i: int) -> int:
        """Global index of filter ``W[o, i]`` of ``layer``."""
        group = self.layer(layer)
        if not (0 <= o < group.out_channels and 0 <= i < group.in_channels):
            raise FaigError(f"filter [{o}, {i}] out of range for {group.name} with weight shape {group.shape}")
        return group.offset + o * group.in_channels + i

    def locate(self, flat: int) -> tuple[str, int, int]:
        """Inverse of :meth:`flat`: ``(weight_name, o, i)`` of a global index."""
        if not 0 <= flat < self._total:
            raise FaigError(f"filter index {flat} out of range [0, {self._total})")
        pos = int(torch.searchsorted(self._offsets, torch.tensor(flat), right=True)) - 1
        group = self.layers[pos]
        o, i = divmod(flat - group.offset, group.in_channels)
        return group.name, o, i

    def layer_ids(self, flat: torch.Tensor) -> torch.Tensor:
        """Layer position of each global index in ``flat`` (any integer tensor)."""
        return torch.searchsorted(self._offsets, flat.to(torch.long).cpu(), right=True) - 1

    def masks(self, filters: torch.Tensor | Sequence[int]) -> dict[str, torch.Tensor]:
        """Per weight holding any of the global indices ``filters``: a bool ``(out, in)`` filter mask of them
        (:meth:`UnitGroup.weight_mask` turns it into a mask of the weight)."""
        flat = torch.as_tensor(filters, dtype=torch.long).reshape(-1)
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self._total):
            raise FaigError(f"filter indices must lie in [0, {self._total}); got {int(flat.min())}..{int(flat.max())}")
        ids = self.layer_ids(flat)
        out = {}
        for pos in torch.unique(ids).tolist():
            group = self.layers[pos]
            mask = torch.zeros(group.out_channels * group.in_channels, dtype=torch.bool)
            mask[flat[ids == pos] - group.offset] = True
            out[group.name] = mask.view(group.out_channels, group.in_channels)
        return out

    def per_filter(self, tensors: Mapping[str, torch.Tensor], per_weight: bool = False) -> torch.Tensor:
        """Reduce per-weight tensors shaped like the weights to ``(N,)``: sum of ``|.|`` over each filter, or with
        ``per_weight`` its mean (a 3x3 kernel, a Linear scalar and a whole tensor then compare weight for weight)."""
        parts = []
        for group in self.layers:
            if group.name not in tensors:
                raise FaigError(f"per_filter needs a tensor for every indexed weight; {group.name!r} is missing")
            tensor = tensors[group.name]
            if tuple(tensor.shape) != group.shape:
                raise FaigError(f"{group.name}: expected shape {group.shape}, got {tuple(tensor.shape)}")
            units = group.grid(tensor.abs())
            size = units[0, 0].numel()
            if units.dim() > 2:
                units = units.sum(dim=tuple(range(2, units.dim())))
            parts.append(units.reshape(-1) / size if per_weight else units.reshape(-1))
        return torch.cat(parts)

    def top_k(self, proportion_percent: float) -> int:
        """Number of filters in the top ``proportion_percent`` % of this net (:func:`~.proportions.top_k`)."""
        return top_k(self._total, proportion_percent)

    def top(self, scores: torch.Tensor, proportion_percent: float) -> torch.Tensor:
        """Global indices of the ``top_k(p)`` highest ``scores`` (ties: lower index first)."""
        scores = torch.as_tensor(scores)
        if scores.shape != (self._total,):
            raise FaigError(f"scores must have shape ({self._total},), got {tuple(scores.shape)}")
        return ranking(scores)[: self.top_k(proportion_percent)]


def ranking(scores: torch.Tensor) -> torch.Tensor:
    """All indices sorted by descending score; a stable sort, so ties keep ascending index order."""
    return torch.sort(torch.as_tensor(scores), descending=True, stable=True).indices
