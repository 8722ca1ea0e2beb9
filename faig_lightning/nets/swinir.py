"""SwinIR (residual Swin Transformer blocks for image restoration) with the official implementation's parameter
and buffer names, so its released super-resolution checkpoints (key ``params``) load with ``strict=True``.

Layout: ``conv_first`` (3x3 conv to ``embed_dim``), ``patch_embed.norm`` (LayerNorm on the pixel tokens),
``layers.{r}`` residual Swin Transformer blocks (RSTB: ``residual_group.blocks.{b}`` Swin blocks, then ``conv``, a
3x3 conv on the re-assembled feature map, plus the RSTB's input), ``norm``, ``conv_after_body`` and the
reconstruction: ``upsample.0`` + PixelShuffle (``pixelshuffledirect``, lightweight SR) or ``conv_before_upsample.0``,
``upsample.{0,2,..}`` and ``conv_last`` (``pixelshuffle``, classical SR). A Swin block is ``norm1``, window
self-attention ``attn`` (``qkv`` and ``proj`` Linear layers, ``relative_position_bias_table``), ``norm2`` and the MLP
``mlp.fc1``/``mlp.fc2``; every second block shifts its windows by half a window.

Left out, with no effect on the released SR checkpoints or their outputs: dropout and stochastic depth (no
parameters; off at inference) and the absolute position embedding (unused by those nets). Added: inputs whose
sides are not multiples of the window are reflect-padded inside ``forward`` and the output cropped back (the
official class needs multiples; its test script pads outside the net).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

RGB_MEAN = (0.4488, 0.4371, 0.4040)
"""Mean colour subtracted from 3-channel inputs (DIV2K's, as in the released checkpoints)."""


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * H/window * W/window, window * window, C)``, windows in row-major order."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c).transpose(2, 3)
    return x.reshape(-1, window * window, c)


def window_merge(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, window * window, C)`` -> ``(B, H, W, C)``."""
    c = windows.shape[-1]
    x = windows.reshape(-1, h // window, w // window, window, window, c).transpose(2, 3)
    return x.reshape(-1, h, w, c)


def relative_position_index(window: int) -> torch.Tensor:
    """``(window², window²)`` index into the ``(2·window − 1)²`` relative-offset table for every token pair."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.reshape(-1), xs.reshape(-1)])  # 2, N
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # 2, N, N with offsets in [0, 2·window − 2]
    return rel[0] * (2 * window - 1) + rel[1]


def shifted_window_mask(h: int, w: int, window: int, shift: int) -> torch.Tensor:
    """``(nW, window², window²)`` additive mask (0 or −100) that keeps a shifted window's attention inside the
    image regions it was rolled from."""
    region = torch.zeros(1, h, w, 1)
    bands = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for rows in bands:
        for cols in bands:
            region[:, rows, cols, :] = label
            label += 1
    labels = window_partition(region, window).squeeze(-1)  # nW, N
    different = labels[:, None, :] != labels[:, :, None]
    return torch.zeros(different.shape).masked_fill(different, -100.0)


class Mlp(nn.Module):
    """``fc1`` - GELU - ``fc2``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, with a learned bias per head and relative offset.

    Written with plain matmuls and softmax (no fused kernel), so ``torch.func.vmap`` can batch per-sample
    gradients through it."""

    def __init__(self, dim: int, window: int, num_heads: int, qkv_bias: bool = True,
                 qk_scale: float | None = None) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SwinIR: embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.window = window
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x``: ``(B·nW, N, C)`` window tokens; ``mask``: ``(nW, N, N)`` additive, or None."""
        bw, n, c = x.shape
        q, k, v = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)  # B·nW, heads, N, N
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        attn = attn + bias.reshape(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.reshape(bw // nw, nw, self.num_heads, n, n) + mask[None, :, None]).reshape(bw, -1, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class SwinTransformerBlock(nn.Module):
    """LayerNorm - (shifted) window attention - residual, LayerNorm - MLP - residual, on ``(B, H·W, C)`` tokens.

    Like the official code, a block whose training resolution ``input_resolution`` is not larger than the window
    uses one window of that size and no shift, and a shifted block keeps the mask of that resolution as the buffer
    ``attn_mask`` (other sizes get theirs computed once and cached)."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], num_heads: int, window: int, shift: int,
                 mlp_ratio: float, qkv_bias: bool = True, qk_scale: float | None = None) -> None:
        super().__init__()
        if min(input_resolution) <= window:
            window, shift = min(input_resolution), 0
        self.input_resolution = tuple(input_resolution)
        self.window = window
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads, qkv_bias, qk_scale)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = shifted_window_mask(*self.input_resolution, window, shift) if shift else None
        self.register_buffer("attn_mask", mask)
        self._masks: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def _mask(self, size: tuple[int, int], device: torch.device) -> torch.Tensor | None:
        if not self.shift:
            return None
        if size == self.input_resolution:
            return self.attn_mask
        key = (*size, device)
        if key not in self._masks:
            self._masks[key] = shifted_window_mask(*size, self.window, self.shift).to(device)
        return self._masks[key]

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        h, w = size
        b, _, c = x.shape
        y = self.norm1(x).reshape(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), self._mask(size, x.device))
        y = window_merge(y, self.window, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class BasicLayer(nn.Module):
    """``depth`` Swin blocks, windows shifted in every second one."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], depth: int, num_heads: int, window: int,
                 mlp_ratio: float, qkv_bias: bool = True, qk_scale: float | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinTransformerBlock(dim, input_resolution, num_heads, window, 0 if j % 2 == 0 else window // 2,
                                 mlp_ratio, qkv_bias, qk_scale)
            for j in range(depth))

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, size)
        return x


def _residual_conv(dim: int, resi_connection: str) -> nn.Module:
    """The conv closing an RSTB and the body: one 3x3 conv (``1conv``) or 3x3 - 1x1 - 3x3 at ``dim/4`` (``3conv``)."""
    if resi_connection == "1conv":
        return nn.Conv2d(dim, dim, 3, 1, 1)
    if resi_connection == "3conv":
        return nn.Sequential(nn.Conv2d(dim, dim // 4, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True),
                             nn.Conv2d(dim // 4, dim // 4, 1, 1, 0), nn.LeakyReLU(0.2, inplace=True),
                             nn.Conv2d(dim // 4, dim, 3, 1, 1))
    raise ValueError(f"SwinIR: resi_connection must be '1conv' or '3conv', got {resi_connection!r}")


class RSTB(nn.Module):
    """Residual Swin Transformer block: Swin blocks, back to a feature map, a conv, plus the input."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], depth: int, num_heads: int, window: int,
                 mlp_ratio: float, qkv_bias: bool, qk_scale: float | None, resi_connection: str) -> None:
        super().__init__()
        self.residual_group = BasicLayer(dim, input_resolution, depth, num_heads, window, mlp_ratio, qkv_bias,
                                         qk_scale)
        self.conv = _residual_conv(dim, resi_connection)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        y = self.residual_group(x, size)
        b, _, c = y.shape
        y = self.conv(y.transpose(1, 2).reshape(b, c, *size))
        return y.flatten(2).transpose(1, 2) + x


class _PatchNorm(nn.Module):
    """Holds the optional LayerNorm of the pixel tokens under the official name ``patch_embed.norm``."""

    def __init__(self, dim: int, enabled: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim) if enabled else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) if self.norm is not None else x


class SwinIR(nn.Module):
    """SwinIR for super-resolution by ``upscale`` (2, 3, 4 or 8; ``pixelshuffledirect`` any integer).

    The lightweight x2 net of the paper: ``embed_dim=60, depths=[6,6,6,6], num_heads=[6,6,6,6], window_size=8,
    mlp_ratio=2, img_size=64, upsampler='pixelshuffledirect'`` (910,152 parameters, 710,100 FAIG units).
    ``img_size`` is the training LR patch size; it sets the stored shifted-window masks (part of the state dict,
    as in the official checkpoints) and nothing else.
    """

    def __init__(
        self,
        upscale: int = 2,
        img_size: int = 64,
        in_chans: int = 3,
        embed_dim: int = 60,
        depths: Sequence[int] = (6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        patch_norm: bool = True,
        img_range: float = 1.0,
        upsampler: str = "pixelshuffledirect",
        resi_connection: str = "1conv",
        num_feat: int = 64,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"SwinIR: depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        if upsampler not in ("pixelshuffledirect", "pixelshuffle"):
            raise ValueError(f"SwinIR: upsampler must be 'pixelshuffledirect' or 'pixelshuffle', got {upsampler!r}")
        if upsampler == "pixelshuffle" and upscale not in (2, 3, 4, 8):
            raise ValueError(f"SwinIR: upsampler 'pixelshuffle' supports upscale 2, 3, 4 or 8, got {upscale}")
        self.upscale = upscale
        self.upsampler = upsampler
        self.window_size = window_size
        self.img_range = img_range
        mean = torch.tensor(RGB_MEAN) if in_chans == 3 else torch.zeros(in_chans)
        self.register_buffer("mean", mean.reshape(1, in_chans, 1, 1), persistent=False)
        resolution = (img_size, img_size)

        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = _PatchNorm(embed_dim, patch_norm)
        self.layers = nn.ModuleList(
            RSTB(embed_dim, resolution, depth, heads, window_size, mlp_ratio, qkv_bias, qk_scale, resi_connection)
            for depth, heads in zip(depths, num_heads, strict=True))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = _residual_conv(embed_dim, resi_connection)
        if upsampler == "pixelshuffledirect":
            self.upsample = nn.Sequential(nn.Conv2d(embed_dim, upscale ** 2 * in_chans, 3, 1, 1),
                                          nn.PixelShuffle(upscale))
        else:
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1),
                                                      nn.LeakyReLU(inplace=True))
            steps = [3] if upscale == 3 else [2] * int(math.log2(upscale))
            self.upsample = nn.Sequential(*[m for s in steps
                                            for m in (nn.Conv2d(num_feat, s * s * num_feat, 3, 1, 1),
                                                      nn.PixelShuffle(s))])
            self.conv_last = nn.Conv2d(num_feat, in_chans, 3, 1, 1)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Deep features of a ``(B, C, H, W)`` map (``H``, ``W`` multiples of the window)."""
        size = (x.shape[2], x.shape[3])
        tokens = self.patch_embed(x.flatten(2).transpose(1, 2))
        for layer in self.layers:
            tokens = layer(tokens, size)
        tokens = self.norm(tokens)
        return tokens.transpose(1, 2).reshape(x.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        pad_h, pad_w = -h % self.window_size, -w % self.window_size
        x = (x - self.mean) * self.img_range
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        x = self.conv_first(x)
        x = self.conv_after_body(self.forward_features(x)) + x
        if self.upsampler == "pixelshuffle":
            x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        else:
            x = self.upsample(x)
        x = x / self.img_range + self.mean
        return x[:, :, : h * self.upscale, : w * self.upscale]
