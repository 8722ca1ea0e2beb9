"""Functional views of a network for ``torch.func.functional_call``: the straight parameter path and eval mode."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


def resolve_device(device: str | torch.device | None, model: nn.Module) -> torch.device:
    """``device`` if given; for ``"auto"`` the model's device when it is a GPU, else CUDA when there is one; for
    None (and ``"auto"`` without a GPU) the device of ``model``'s first parameter (CPU for a parameter-less one)."""
    first = next(model.parameters(), None)
    own = first.device if first is not None else torch.device("cpu")
    if device == "auto":
        return own if own.type == "cuda" or not torch.cuda.is_available() else torch.device("cuda")
    return own if device is None else torch.device(device)


@contextmanager
def tf32_allowed(allowed: bool) -> Iterator[None]:
    """Allow or forbid TF32 in CUDA convolutions and matmuls for the block, then restore PyTorch's flags.

    TF32 rounds inputs to 10 mantissa bits (relative error ~1e-3): fine for training, too coarse for attribution
    scores that sum and difference many small terms.
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put ``modules`` in eval mode and restore every submodule's previous ``training`` flag afterwards."""
    saved = [(m, m.training) for module in modules for m in module.modules()]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for m, training in saved:
            m.training = training


class ParameterPath:
    """The straight path ``theta(alpha) = (1 - alpha) * theta_bar + alpha * theta`` of two same-shape nets.

    Every parameter is interpolated (biases too) and so is every floating buffer, as the official code
    interpolates every state-dict tensor; other buffers are taken from the target. alpha=0 is the baseline and
    alpha=1 the target, exactly. The two coefficients are formed in float64 and each term is rounded as the official
    code rounds it, so a float32 path point is bit-identical to the official loop's point of the same alpha.
    ``delta64`` is ``theta - theta_bar`` in float64, for products with integrated gradients.
    """

    def __init__(self, baseline: nn.Module, target: nn.Module, device: torch.device) -> None:
        base_params = dict(baseline.named_parameters())
        base_buffers = dict(baseline.named_buffers())
        self.base = {n: base_params[n].detach().to(device) for n, _ in target.named_parameters()}
        self.end = {n: p.detach().to(device) for n, p in target.named_parameters()}
        self.delta64 = {n: self.end[n].double() - self.base[n].double() for n in self.base}
        self.buffer_base: dict[str, torch.Tensor] = {}
        self.buffer_end: dict[str, torch.Tensor] = {}
        self.buffer_fixed: dict[str, torch.Tensor] = {}
        for n, b in target.named_buffers():
            if b.is_floating_point():
                self.buffer_base[n] = base_buffers[n].detach().to(device)
                self.buffer_end[n] = b.detach().to(device)
            else:
                self.buffer_fixed[n] = b.detach().to(device)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the parameters."""
        return next(iter(self.base.values())).dtype

    def params(self, alpha: float) -> dict[str, torch.Tensor]:
        """Parameters at ``alpha`` as fresh leaf tensors that require grad."""
        return {n: self._point(self.base[n], self.end[n], alpha).requires_grad_() for n in self.base}

    def stacked_params(self, alphas: Sequence[float]) -> dict[str, torch.Tensor]:
        """Parameters at each of ``alphas``, stacked on a leading dim, as leaf tensors that require grad."""
        return {n: self._stack(self.base[n], self.end[n], alphas).requires_grad_() for n in self.base}

    def buffers(self, alpha: float) -> dict[str, torch.Tensor]:
        """Buffers at ``alpha`` (interpolated floating buffers, fixed others)."""
        moved = {n: self._point(self.buffer_base[n], self.buffer_end[n], alpha) for n in self.buffer_base}
        return {**moved, **self.buffer_fixed}

    def stacked_buffers(self, alphas: Sequence[float]) -> dict[str, torch.Tensor]:
        """Buffers at each of ``alphas``, stacked on a leading dim (for ``vmap``)."""
        out = {n: self._stack(self.buffer_base[n], self.buffer_end[n], alphas) for n in self.buffer_base}
        for n, b in self.buffer_fixed.items():
            out[n] = b.expand(len(alphas), *b.shape)
        return out

    @staticmethod
    def _point(base: torch.Tensor, end: torch.Tensor, alpha: float) -> torch.Tensor:
        return (1.0 - float(alpha)) * base + float(alpha) * end

    @staticmethod
    def _stack(base: torch.Tensor, end: torch.Tensor, alphas: Sequence[float]) -> torch.Tensor:
        a = torch.tensor([float(v) for v in alphas], dtype=torch.float64, device=base.device)
        shape = (-1,) + (1,) * base.dim()
        weights = (1.0 - a).to(base.dtype).view(shape), a.to(base.dtype).view(shape)
        return weights[0] * base.unsqueeze(0) + weights[1] * end.unsqueeze(0)

    def endpoint(self, alpha: float) -> dict[str, torch.Tensor]:
        """Parameters and buffers at ``alpha`` without grad (for plain forward passes)."""
        return {**{n: self._point(self.base[n], self.end[n], alpha) for n in self.base}, **self.buffers(alpha)}
