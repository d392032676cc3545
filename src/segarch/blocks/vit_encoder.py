"""The Vision Transformer encoder (Dosovitskiy et al. 2021, arXiv:2010.11929, Eq. 2-4), for 2D or 3D token grids.

Pre-norm layers: ``z' = z + MSA(LN(z))``, ``z = z' + MLP(LN(z'))`` with a GELU MLP, and a final layer
norm. :class:`GridPositionEmbedding` holds learned position embeddings on a token grid and resamples
them (bi/trilinear) when the input's grid differs, as ViT does for a new resolution — so a 3D volume
of any patch grid gets embeddings too.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["TransformerLayer", "ViTEncoder", "GridPositionEmbedding"]


class TransformerLayer(nn.Module):
    """One pre-norm transformer layer: multi-head self-attention, then an MLP, each with a residual.

    Args:
        hidden_size: token width ``D``.
        num_heads: attention heads (must divide ``hidden_size``).
        mlp_dim: hidden width of the MLP.
        dropout: dropout after the attention and in the MLP.
        attention_dropout: dropout on the attention weights.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_dim: int, dropout: float = 0.0,
                 attention_dropout: float = 0.0) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"`num_heads` must divide `hidden_size`, got {num_heads!r} and {hidden_size!r}.")
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.attention = nn.MultiheadAttention(hidden_size, num_heads, dropout=attention_dropout, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(hidden_size, mlp_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(mlp_dim, hidden_size), nn.Dropout(dropout))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.norm1(z)
        z = z + self.drop(self.attention(h, h, h, need_weights=False)[0])
        return z + self.mlp(self.norm2(z))


class ViTEncoder(nn.Module):
    """``num_layers`` transformer layers and a final layer norm on tokens ``(B, N, D)``."""

    def __init__(self, hidden_size: int = 768, num_layers: int = 12, num_heads: int = 12, mlp_dim: int = 3072,
                 dropout: float = 0.1, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(hidden_size, num_heads, mlp_dim, dropout, attention_dropout) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(hidden_size, eps=1e-6)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            z = layer(z)
        return self.norm(z)


class GridPositionEmbedding(nn.Module):
    """Learned position embeddings on a ``grid`` of tokens, resampled to the grid of each input.

    Args:
        hidden_size: token width.
        grid: the token grid the embeddings are stored on, e.g. ``(14, 14)`` for 224² images in 16² patches.

    ``forward(tokens, grid)`` adds the embeddings for ``grid`` to ``tokens`` ``(B, prod(grid), D)``.
    """

    def __init__(self, hidden_size: int, grid: Sequence[int]) -> None:
        super().__init__()
        self.grid = tuple(int(g) for g in grid)
        self.embedding = nn.Parameter(torch.zeros(1, hidden_size, *self.grid))
        nn.init.trunc_normal_(self.embedding, std=0.02)

    def forward(self, tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        grid = tuple(int(g) for g in grid)
        pos = self.embedding
        if grid != self.grid:
            mode = "bilinear" if len(grid) == 2 else "trilinear"
            pos = F.interpolate(pos, size=grid, mode=mode, align_corners=False)
        return tokens + pos.flatten(2).transpose(1, 2)
