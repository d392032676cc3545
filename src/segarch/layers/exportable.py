"""Adaptive average pooling and max-unpooling that also export to ONNX.

PyTorch's own ops compute them in eager mode (bit for bit as before); only while ``torch.onnx.export`` traces
the network do they switch to an equivalent the exporter accepts: the TorchScript exporter refuses adaptive
pooling whose bins do not divide the input (PSPNet's 3- and 6-bin levels on most tiles) and fails tracing
max-unpooling's shape checks (SegNet, ENet). Shapes are fixed when tracing, so the equivalents are built from
constants: an averaging matrix per axis, and a scatter of the pooled values to their recorded positions.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["adaptive_avg_pool", "max_unpool", "AdaptiveAvgPool", "MaxUnpool"]


def _bins_matrix(length: int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """``(bins, length)`` rows averaging PyTorch's adaptive bins: ``[floor(i·L/n), ceil((i+1)·L/n))``."""
    matrix = torch.zeros(bins, length, dtype=like.dtype, device=like.device)
    for i in range(bins):
        start, end = (i * length) // bins, -(-(i + 1) * length // bins)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool(x: torch.Tensor, output_size: int | Sequence[int]) -> torch.Tensor:
    """Adaptive average pooling of ``x`` ``(B, C, *spatial)`` to ``output_size`` bins per axis (2D or 3D)."""
    dims = x.ndim - 2
    sizes = (output_size,) * dims if isinstance(output_size, int) else tuple(output_size)
    if not torch.onnx.is_in_onnx_export():
        return (F.adaptive_avg_pool2d if dims == 2 else F.adaptive_avg_pool3d)(x, sizes)
    # A box mean is the mean along each axis in turn: one constant matmul per axis, on that axis moved last
    # (an explicit permutation: the exporter writes movedim as a permutation ONNX Runtime rejects).
    for axis, bins in enumerate(sizes, start=2):
        matrix = _bins_matrix(int(x.shape[axis]), int(bins), x)
        order = [d for d in range(x.ndim) if d != axis] + [axis]
        back = sorted(range(x.ndim), key=order.__getitem__)
        x = torch.matmul(x.permute(order), matrix.t()).permute(back)
    return x


def max_unpool(x: torch.Tensor, indices: torch.Tensor, output_size: Sequence[int]) -> torch.Tensor:
    """Max-unpooling: the values of ``x`` put back at ``indices`` (flat per channel) of a zero ``output_size``."""
    size = tuple(int(s) for s in output_size)
    flat = x.new_zeros(x.shape[0], x.shape[1], int(torch.tensor(size).prod()))
    return flat.scatter(2, indices.flatten(2), x.flatten(2)).reshape(*x.shape[:2], *size)


class AdaptiveAvgPool(nn.Module):
    """:func:`adaptive_avg_pool` as a module (``nn.AdaptiveAvgPool2d/3d`` that exports at any bin count)."""

    def __init__(self, output_size: int | Sequence[int]) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return adaptive_avg_pool(x, self.output_size)


class MaxUnpool(nn.Module):
    """Max-unpooling by a window of ``kernel_size`` = stride (``nn.MaxUnpool2d/3d`` that exports)."""

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)

    def forward(self, x: torch.Tensor, indices: torch.Tensor, output_size: Sequence[int] | None = None) -> torch.Tensor:
        spatial = x.shape[2:]
        size = tuple(output_size)[-len(spatial):] if output_size is not None else tuple(
            int(s) * self.kernel_size for s in spatial)
        if not torch.onnx.is_in_onnx_export():
            unpool = F.max_unpool2d if len(spatial) == 2 else F.max_unpool3d
            return unpool(x, indices, self.kernel_size, output_size=size)
        return max_unpool(x, indices, size)
