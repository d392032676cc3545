"""CE-Net's context extractor (Gu et al. 2019, arXiv:1903.02740, Sec. II-B): DAC and RMP blocks.

Dense atrous convolution (DAC): four cascaded branches of atrous 3×3 convolutions with rates
(1), (3), (1, 3) and (1, 3, 5) — receptive fields 3, 7, 9 and 19 — each but the first closed by a
1×1 convolution and ReLU, summed with the input (Fig. 3). As in the authors' code the three atrous
convolutions and the 1×1 convolution are shared between the branches.
Residual multi-kernel pooling (RMP): max-pooling with kernels 2, 3, 5 and 6, a 1×1 convolution to one
map each, up-sampling back, concatenated with the input (Fig. 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from monai.networks.layers.factories import Conv, Pool

from segarch.blocks.resize import resize_to

__all__ = ["DenseAtrousConv", "ResidualMultiKernelPool"]


class DenseAtrousConv(nn.Module):
    """The DAC block: ``x + Σ_b relu(branch_b(x))`` over four cascaded atrous branches.

    Args:
        spatial_dims: 2 or 3.
        channels: input and output channels.
        rates: the three dilation rates (1, 3, 5 in the paper).
    """

    def __init__(self, spatial_dims: int, channels: int, rates: tuple[int, int, int] = (1, 3, 5)) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.atrous = nn.ModuleList(conv(channels, channels, 3, padding=r, dilation=r) for r in rates)
        self.project = conv(channels, channels, 1)
        for m in (*self.atrous, self.project):
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a1, a3, a5 = self.atrous
        d1 = a1(x)
        b1 = F.relu(d1)
        b2 = F.relu(self.project(a3(x)))
        d13 = a3(d1)
        b3 = F.relu(self.project(d13))
        b4 = F.relu(self.project(a5(d13)))
        return x + b1 + b2 + b3 + b4


class ResidualMultiKernelPool(nn.Module):
    """The RMP block: the input concatenated with one map per pooling kernel (``channels + len(kernels)`` out).

    Args:
        spatial_dims: 2 or 3.
        channels: input channels.
        kernels: max-pooling kernel sizes (stride = kernel); ``(2, 3, 5, 6)`` in the paper.

    Pooling uses ``ceil_mode`` so a map smaller than a kernel still yields one value (the paper's 448²
    inputs give 14² maps; tiles may give smaller ones).
    """

    def __init__(self, spatial_dims: int, channels: int, kernels: tuple[int, ...] = (2, 3, 5, 6)) -> None:
        super().__init__()
        pool = Pool[Pool.MAX, spatial_dims]
        self.pools = nn.ModuleList(pool(kernel_size=k, stride=k, ceil_mode=True) for k in kernels)
        self.project = Conv[Conv.CONV, spatial_dims](channels, 1, 1)  # shared by the levels, as in the authors' code
        self.out_channels = channels + len(kernels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        maps = [resize_to(self.project(p(x)), size) for p in self.pools]
        return torch.cat([*maps, x], dim=1)
