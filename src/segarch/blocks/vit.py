"""A plain Vision Transformer encoder (Dosovitskiy et al., ICLR 2021, arXiv:2010.11929) for 2D and 3D.

Non-overlapping patches are embedded linearly (a convolution with kernel = stride = patch size),
a learned position embedding is added, and pre-norm transformer layers (multi-head
self-attention, then a GELU MLP, each residual) run on the token sequence. The position
embedding is learned on a reference grid and interpolated (bi/trilinearly) to the grid of each
input, so any size that is a multiple of the patch size works.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.blocks.resize import resize_to
from segarch.layers.checks import check_positive_int

__all__ = ["MultiHeadSelfAttention", "Mlp", "TransformerLayer", "ViTEncoder", "interpolate_grid"]


class MultiHeadSelfAttention(nn.Module):
    """Multi-head self-attention over ``(B, N, C)`` tokens, with an optional additive bias ``(heads, N, N)``."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"`heads` must divide the embedding width {dim}, got {heads!r}.")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        mask = None if bias is None else bias.to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Sequential):
    """Linear → GELU → linear, ``mlp_ratio`` times wider inside."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0) -> None:
        hidden = int(dim * mlp_ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer: ``x + MHSA(LN(x))``, then ``x + MLP(LN(x))``.

    ``attn`` replaces the global multi-head self-attention over the tokens (Swin's window attention).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, attn: nn.Module | None = None) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, heads) if attn is None else attn
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def interpolate_grid(embedding: torch.Tensor, grid: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    """Resample a ``(1, prod(grid), C)`` token embedding laid out on ``grid`` to a ``size`` grid."""
    if tuple(grid) == tuple(size):
        return embedding
    c = embedding.shape[-1]
    image = embedding.transpose(1, 2).reshape(1, c, *grid)
    image = resize_to(image, size)
    return image.flatten(2).transpose(1, 2)


class ViTEncoder(nn.Module):
    """Patch embedding, interpolated position embedding and ``depth`` transformer layers.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        embed_dim: token width (1024 for ViT-L).
        depth: transformer layers (24 for ViT-L).
        heads: attention heads (16 for ViT-L).
        patch_size: patch edge (16); inputs must be multiples of it.
        img_size: edge of the reference input on which the position embedding is learned.
        mlp_ratio: MLP widening.
        out_indices: 0-based layers whose outputs ``forward`` returns (default: the last).

    ``forward(x)`` returns the selected layers' tokens as maps ``(B, embed_dim, *x.shape[2:] / patch)``;
    the last layer's output goes through the final LayerNorm.
    """

    def __init__(self, spatial_dims: int, in_channels: int, embed_dim: int = 1024, depth: int = 24, heads: int = 16,
                 patch_size: int = 16, img_size: int = 768, mlp_ratio: float = 4.0,
                 out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        for name, value in (("embed_dim", embed_dim), ("depth", depth), ("heads", heads), ("patch_size", patch_size),
                            ("img_size", img_size)):
            check_positive_int(value, name, "the ViT encoder")
        if img_size % patch_size:
            raise ValueError(f"`img_size` must be a multiple of `patch_size` ({patch_size}), got {img_size!r}.")
        self.patch_size = patch_size
        self.patch_embed = Conv[Conv.CONV, spatial_dims](in_channels, embed_dim, patch_size, stride=patch_size)
        self.grid = (img_size // patch_size,) * spatial_dims
        n = 1
        for g in self.grid:
            n *= g
        self.pos_embed = nn.Parameter(torch.zeros(1, n, embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.layers = nn.ModuleList(TransformerLayer(embed_dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        self.out_indices = tuple(out_indices) if out_indices is not None else (depth - 1,)
        if any(not 0 <= i < depth for i in self.out_indices):
            raise ValueError(f"`out_indices` must be layers in [0, {depth}), got {self.out_indices!r}.")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        size = x.shape[2:]
        x = x.flatten(2).transpose(1, 2)
        x = x + interpolate_grid(self.pos_embed, self.grid, size)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.out_indices:
                y = self.norm(x) if i == len(self.layers) - 1 else x
                outs.append(y.transpose(1, 2).reshape(x.shape[0], -1, *size))
        return outs
