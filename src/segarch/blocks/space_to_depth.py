"""Space-to-depth and depth-to-space in 2D and 3D (``pixel_unshuffle``/``pixel_shuffle`` for any dimensionality).

Space-to-depth moves each ``r × r`` (× ``r``) block of positions into channels: ``(B, C, *S)`` becomes
``(B, C·r^d, *S/r)`` with nothing lost; depth-to-space is its exact inverse. DeeperLab (Yang et al. 2019,
arXiv:1902.05093) uses them to concatenate high-resolution features with coarse ones without up-sampling the
coarse ones, and to predict its outputs at a coarse grid and expand them; sub-pixel convolution (Shi et al. 2016,
arXiv:1609.05158) learns an up-sampling with depth-to-space. Channel order matches PyTorch's ``pixel_unshuffle`` /
``pixel_shuffle`` in 2D (channel ``c·r² + i·r + j`` holds offset ``(i, j)`` of channel ``c``).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["space_to_depth", "depth_to_space", "SpaceToDepth", "DepthToSpace"]


def _check(x: torch.Tensor, block: int, name: str) -> int:
    if not isinstance(block, int) or isinstance(block, bool) or block < 1:
        raise ValueError(f"`block` must be a positive integer for {name}, got {block!r}.")
    if x.ndim not in (4, 5):
        raise ValueError(f"{name} expects `x` of shape (B, C, Y, X) or (B, C, Z, Y, X), got {tuple(x.shape)}.")
    return x.ndim - 2


def space_to_depth(x: torch.Tensor, block: int) -> torch.Tensor:
    """``(B, C, *S)`` → ``(B, C·block^d, *S/block)``; every spatial size must be a multiple of ``block``."""
    d = _check(x, block, "space_to_depth")
    b, c, *spatial = x.shape
    if any(s % block for s in spatial):
        raise ValueError(f"space_to_depth needs spatial sizes that are multiples of `block`={block}, got "
                         f"{tuple(spatial)}.")
    coarse = [s // block for s in spatial]
    # (B, C, s0/r, r, s1/r, r, ...) → (B, C, r, r, ..., s0/r, s1/r, ...)
    x = x.reshape(b, c, *[v for s in coarse for v in (s, block)])
    order = [0, 1] + [3 + 2 * i for i in range(d)] + [2 + 2 * i for i in range(d)]
    return x.permute(order).reshape(b, c * block ** d, *coarse)


def depth_to_space(x: torch.Tensor, block: int) -> torch.Tensor:
    """``(B, C·block^d, *S)`` → ``(B, C, *S·block)``: the inverse of :func:`space_to_depth`."""
    d = _check(x, block, "depth_to_space")
    b, channels, *spatial = x.shape
    if channels % block ** d:
        raise ValueError(f"depth_to_space needs channels that are a multiple of `block`**{d}={block ** d}, got "
                         f"{channels}.")
    c = channels // block ** d
    x = x.reshape(b, c, *[block] * d, *spatial)
    order = [0, 1] + [v for i in range(d) for v in (2 + d + i, 2 + i)]
    return x.permute(order).reshape(b, c, *[s * block for s in spatial])


class SpaceToDepth(nn.Module):
    """:func:`space_to_depth` as a module."""

    def __init__(self, block: int) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return space_to_depth(x, self.block)


class DepthToSpace(nn.Module):
    """:func:`depth_to_space` as a module."""

    def __init__(self, block: int) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space(x, self.block)
