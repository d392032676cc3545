"""Self-attention blocks of the context networks, in plain PyTorch for 2D and 3D feature maps.

- :class:`PositionAttention` and :class:`ChannelAttention`: DANet's position and channel attention
  modules (Fu et al., CVPR 2019, "Dual Attention Network for Scene Segmentation", arXiv:1809.02983, Fig. 3).
- :class:`CrissCrossAttention` and :class:`RecurrentCrissCrossAttention`: CCNet's criss-cross attention
  (Huang et al., ICCV 2019, "CCNet: Criss-Cross Attention for Semantic Segmentation", arXiv:1811.11721,
  Fig. 3), written with ``einsum`` instead of CUDA kernels; in 3D each voxel attends to the three axis
  lines through it.
- :class:`StripAttention`: AttaNet's strip attention module (Song et al., AAAI 2021, "AttaNet:
  Attention-Augmented Network for Fast and Accurate Scene Parsing", arXiv:2103.05930, Sec. 3.2):
  keys and values averaged along the vertical axis into strips, so each position attends to ``W``
  column descriptors instead of all ``H·W`` positions.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.blocks.conv import ConvNormAct

__all__ = ["PositionAttention", "ChannelAttention", "CrissCrossAttention", "RecurrentCrissCrossAttention",
           "StripAttention"]

_AXES = "dhw"


class PositionAttention(nn.Module):
    """DANet's position attention: every position aggregates all positions' values by feature similarity.

    ``S = softmax(Bᵀ C)`` over the ``N = prod(spatial)`` positions, with queries ``B`` and keys ``C``
    from 1×1 convolutions to ``in_channels // reduction`` channels and values ``D`` from a 1×1
    convolution keeping the channels; output ``alpha · D Sᵀ + x`` with a learned scale ``alpha``
    starting at 0 (so the block starts as the identity).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input (and output) channels.
        reduction: channel reduction of queries and keys (8 in the paper).
    """

    def __init__(self, spatial_dims: int, in_channels: int, reduction: int = 8) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        inner = max(in_channels // reduction, 1)
        self.query = conv(in_channels, inner, 1)
        self.key = conv(in_channels, inner, 1)
        self.value = conv(in_channels, in_channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        self.attention: torch.Tensor | None = None  # the last (B, N, N) affinity, detached, for inspection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        q = self.query(x).flatten(2)  # (B, C', N)
        k = self.key(x).flatten(2)
        v = self.value(x).flatten(2)  # (B, C, N)
        attention = torch.softmax(torch.einsum("bci,bcj->bij", q, k), dim=-1)  # (B, N, N): row i sums to 1
        self.attention = attention.detach()
        out = torch.einsum("bcj,bij->bci", v, attention).reshape(x.shape)
        return self.gamma * out + x


class ChannelAttention(nn.Module):
    """DANet's channel attention: every channel map aggregates all channel maps by their similarity.

    The affinity is ``C × C``: ``X Xᵀ`` over positions. As in the authors' code, the softmax takes
    ``max(X Xᵀ) - X Xᵀ`` per row (channels that differ most get more weight and the exponent stays
    bounded). Output ``beta · A X + x`` with ``beta`` starting at 0. No convolutions: only ``beta`` is
    learned.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))
        self.attention: torch.Tensor | None = None  # the last (B, C, C) affinity, detached

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)  # (B, C, N)
        energy = torch.einsum("bin,bjn->bij", flat, flat)
        energy = energy.amax(dim=-1, keepdim=True) - energy
        attention = torch.softmax(energy, dim=-1)
        self.attention = attention.detach()
        out = torch.einsum("bij,bjn->bin", attention, flat).reshape(x.shape)
        return self.gamma * out + x


class CrissCrossAttention(nn.Module):
    """Criss-cross attention: each position attends to the positions on its row and column (2D) or on
    the three axis lines through it (3D), with one softmax over all of them.

    Queries and keys come from 1×1 convolutions to ``in_channels // reduction`` channels, values from a
    1×1 convolution keeping the channels. The position itself lies on every line; it is counted once
    (on the last axis' line), as the authors' kernel does by masking it on the others. Output
    ``gamma · out + x`` with ``gamma`` starting at 0.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input (and output) channels.
        reduction: channel reduction of queries and keys (8 in the paper).
    """

    def __init__(self, spatial_dims: int, in_channels: int, reduction: int = 8) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"`spatial_dims` must be 2 or 3 for CrissCrossAttention, got {spatial_dims!r}.")
        conv = Conv[Conv.CONV, spatial_dims]
        inner = max(in_channels // reduction, 1)
        self.spatial_dims = spatial_dims
        self.query = conv(in_channels, inner, 1)
        self.key = conv(in_channels, inner, 1)
        self.value = conv(in_channels, in_channels, 1)
        self.gamma = nn.Parameter(torch.zeros(1))
        letters = _AXES[-spatial_dims:]
        # For each axis, the einsum subscripts of its line: the axis' letter replaced by 'g' (the line index).
        self._lines = [letters.replace(a, "g") for a in letters]
        self._letters = letters

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.query(x), self.key(x), self.value(x)
        pos = self._letters
        energies = []
        for axis, line in enumerate(self._lines):
            e = torch.einsum(f"bc{pos},bc{line}->b{pos}g", q, k)  # (B, *S, S[axis])
            if axis < self.spatial_dims - 1:
                n = x.shape[2 + axis]
                # -inf where the line index is the position's own index on this axis (counted on the last axis).
                # compared, not built as bool: ONNX Runtime has no boolean EyeLike
                eye = torch.eye(n, device=x.device) > 0
                shape = [1] * (self.spatial_dims + 2)
                shape[1 + axis], shape[-1] = n, n
                e = e.masked_fill(eye.reshape(shape), float("-inf"))
            energies.append(e)
        sizes = [e.shape[-1] for e in energies]
        attention = torch.softmax(torch.cat(energies, dim=-1), dim=-1).split(sizes, dim=-1)
        out = sum(torch.einsum(f"b{pos}g,bc{line}->bc{pos}", a, v) for a, line in zip(attention, self._lines))
        return self.gamma * out + x


class RecurrentCrissCrossAttention(nn.Module):
    """Criss-cross attention applied ``recurrence`` times with shared weights (CCNet's RCCA; R = 2 in
    the paper, after which every position has gathered context from every other one)."""

    def __init__(self, spatial_dims: int, in_channels: int, recurrence: int = 2, reduction: int = 8) -> None:
        super().__init__()
        if not isinstance(recurrence, int) or isinstance(recurrence, bool) or recurrence < 1:
            raise ValueError(f"`recurrence` must be a positive integer, got {recurrence!r}.")
        self.recurrence = recurrence
        self.attention = CrissCrossAttention(spatial_dims, in_channels, reduction)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for _ in range(self.recurrence):
            x = self.attention(x)
        return x


class StripAttention(nn.Module):
    """AttaNet's strip attention: each position attends to the column strips of the map.

    Queries (``key_channels``) at every position; keys (``key_channels``) and values (``out_channels``)
    from 1×1 conv-norm-acts, averaged along the vertical axis (``H``, the second-last spatial axis; in 3D
    each strip is a ``(d, w)`` column through all ``H``). The softmax runs over the strips, and the
    attended values are added to the input (``out_channels`` must equal ``in_channels``).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input (and output) channels.
        key_channels: query/key channels (64 in the paper's code).
    """

    def __init__(self, spatial_dims: int, in_channels: int, key_channels: int = 64) -> None:
        super().__init__()
        self.query = ConvNormAct(spatial_dims, in_channels, key_channels, 1)
        self.key = ConvNormAct(spatial_dims, in_channels, key_channels, 1)
        self.value = ConvNormAct(spatial_dims, in_channels, in_channels, 1)
        self.attention: torch.Tensor | None = None  # the last (B, N, strips) attention, detached

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axis = x.ndim - 2  # H: the vertical axis, averaged into strips
        q = self.query(x).flatten(2)  # (B, C', N)
        k = self.key(x).mean(axis).flatten(2)  # (B, C', S): one key per strip
        v = self.value(x).mean(axis).flatten(2)  # (B, C, S)
        attention = torch.softmax(torch.einsum("bcn,bcs->bns", q, k), dim=-1)
        self.attention = attention.detach()
        return x + torch.einsum("bns,bcs->bcn", attention, v).reshape(x.shape)
