"""Local-window self-attention with a relative position bias, in 2D and 3D (Liu et al. 2021, arXiv:2103.14030).

Tokens attend only to tokens of the same non-overlapping window (``window`` per axis). A learned
table holds one bias per head for every relative offset inside a window ((2w−1) per axis); the
bias is added to the attention logits. Feature maps are padded on the far side up to multiples
of the window; with ``shift``, the map is rolled by half a window first (Swin's shifted windows)
and a mask keeps tokens from attending across the seams the roll creates. In 3D the windows are
cubes (as in Video Swin, Liu et al. 2022, with equal sides). Used by Swin and HRFormer.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segarch.blocks.vit import MultiHeadSelfAttention, TransformerLayer

__all__ = ["WindowAttention", "SwinBlock", "PatchMerging", "window_partition", "window_reverse",
           "relative_position_index"]


def window_partition(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """``(B, *S, C)`` with ``S`` multiples of ``window`` → ``(B * n_windows, prod(window), C)``."""
    b, *size, c = x.shape
    d = len(size)
    shape = [b]
    for s, w in zip(size, window):
        shape += [s // w, w]
    x = x.reshape(*shape, c)
    order = [0] + [1 + 2 * i for i in range(d)] + [2 + 2 * i for i in range(d)] + [2 * d + 1]
    n = 1
    for w in window:
        n *= w
    return x.permute(*order).reshape(-1, n, c)


def window_reverse(windows: torch.Tensor, window: Sequence[int], size: Sequence[int], batch: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * n_windows, prod(window), C)`` → ``(B, *size, C)``."""
    d, c = len(size), windows.shape[-1]
    counts = [s // w for s, w in zip(size, window)]
    x = windows.reshape(batch, *counts, *window, c)
    order = [0]
    for i in range(d):
        order += [1 + i, 1 + d + i]
    return x.permute(*order, 2 * d + 1).reshape(batch, *size, c)


def relative_position_index(window: Sequence[int], table_window: Sequence[int]) -> torch.Tensor:
    """Index into a bias table laid out for ``table_window`` of every (query, key) pair of a ``window``."""
    coords = torch.stack(torch.meshgrid(*[torch.arange(w) for w in window], indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]
    index = torch.zeros(rel.shape[1:], dtype=torch.long)
    for axis, tw in enumerate(table_window):
        index = index * (2 * tw - 1) + rel[axis] + tw - 1
    return index


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative position bias.

    Args:
        spatial_dims: 2 or 3.
        dim: token width.
        heads: attention heads.
        window: window edge (7 in Swin and HRFormer).
        shift: roll the map by half a window first (Swin's odd blocks).

    ``forward(x)``: ``x`` channel-last ``(B, *S, C)`` of any size → same shape. An axis not longer
    than the window gets one window of its size and no shift.
    """

    def __init__(self, spatial_dims: int, dim: int, heads: int, window: int = 7, shift: bool = False) -> None:
        super().__init__()
        if not isinstance(window, int) or isinstance(window, bool) or window < 1:
            raise ValueError(f"`window` must be a positive integer, got {window!r}.")
        self.spatial_dims = spatial_dims
        self.window = (window,) * spatial_dims
        self.shift = shift
        self.attn = MultiHeadSelfAttention(dim, heads)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** spatial_dims, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)

    def windows_for(self, size: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The window and shift used for a map of spatial ``size``."""
        window = tuple(min(w, s) for w, s in zip(self.window, size))
        shift = tuple(w // 2 if self.shift and s > w else 0 for w, s in zip(self.window, size))
        return window, shift

    def _mask(self, padded: Sequence[int], window, shift, device) -> torch.Tensor | None:
        if not any(shift):
            return None
        label = torch.zeros((1, *padded, 1), device=device)
        ranges = [((0, p - w), (p - w, p - s), (p - s, p)) if s else ((0, p),)
                  for p, w, s in zip(padded, window, shift)]
        for n, region in enumerate(itertools.product(*ranges)):
            label[(slice(None), *[slice(a, b) for a, b in region], slice(None))] = n
        groups = window_partition(label, window).squeeze(-1)  # (n_windows, N)
        different = groups[:, :, None] != groups[:, None, :]
        return torch.zeros(different.shape, device=device).masked_fill(different, -100.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, *size, c = x.shape
        window, shift = self.windows_for(size)
        pads = [(-s) % w for s, w in zip(size, window)]
        if any(pads):
            flat = []
            for p in reversed(pads):
                flat += [0, p]
            x = F.pad(x, [0, 0] + flat)
        padded = x.shape[1:-1]
        axes = tuple(range(1, 1 + len(size)))
        if any(shift):
            x = torch.roll(x, shifts=[-s for s in shift], dims=axes)
        windows = window_partition(x, window)
        index = relative_position_index(window, self.window).to(x.device)
        n = windows.shape[1]
        bias = self.bias_table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)  # (heads, N, N)
        mask = self._mask(padded, window, shift, x.device)
        if mask is not None:
            bias = (bias[None] + mask[:, None]).repeat(b, 1, 1, 1)  # (B * n_windows, heads, N, N)
        out = window_reverse(self.attn(windows, bias), window, padded, b)
        if any(shift):
            out = torch.roll(out, shifts=list(shift), dims=axes)
        if any(pads):
            out = out[(slice(None), *[slice(0, s) for s in size])]
        return out


class SwinBlock(TransformerLayer):
    """Swin transformer block on channel-last maps: ``x + WMSA(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, spatial_dims: int, dim: int, heads: int, window: int = 7, shift: bool = False,
                 mlp_ratio: float = 4.0) -> None:
        super().__init__(dim, heads, mlp_ratio, attn=WindowAttention(spatial_dims, dim, heads, window, shift))


class PatchMerging(nn.Module):
    """Concatenate each 2×2 (×2) neighbourhood, LayerNorm, and project linearly to ``2 * dim`` (halves the size)."""

    def __init__(self, spatial_dims: int, dim: int) -> None:
        super().__init__()
        self.spatial_dims = spatial_dims
        self.norm = nn.LayerNorm(2 ** spatial_dims * dim)
        self.reduction = nn.Linear(2 ** spatial_dims * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[1:-1]
        if any(s % 2 for s in size):
            flat = []
            for s in reversed(size):
                flat += [0, s % 2]
            x = F.pad(x, [0, 0] + flat)
        parts = []
        for offsets in itertools.product((0, 1), repeat=self.spatial_dims):
            parts.append(x[(slice(None), *[slice(o, None, 2) for o in offsets])])
        return self.reduction(self.norm(torch.cat(parts, dim=-1)))
