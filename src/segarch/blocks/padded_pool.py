"""Average pooling that zero-pads explicitly, so 3D maps smaller than the kernel still pool.

PyTorch's 3D average pooling rejects inputs smaller than the kernel even when padding would
cover them (2D does not); padding first and pooling without padding gives the same result as
``padding=kernel_size // 2`` with ``count_include_pad=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PaddedAvgPool"]


class PaddedAvgPool(nn.Module):
    """``kernel_size`` average pooling with stride ``stride`` and ``kernel_size // 2`` zero padding, in 2D or 3D."""

    def __init__(self, spatial_dims: int, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.spatial_dims, self.kernel_size, self.stride = spatial_dims, kernel_size, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.kernel_size // 2
        x = F.pad(x, [pad] * (2 * self.spatial_dims))
        pool = F.avg_pool2d if self.spatial_dims == 2 else F.avg_pool3d
        return pool(x, self.kernel_size, self.stride)
