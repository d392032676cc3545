"""RefineNet's building blocks (Lin et al. 2017, arXiv:1611.06612, Sec. 3.2, Fig. 3).

Residual conv unit (RCU): ReLU → 3×3 conv → ReLU → 3×3 conv, plus the input (a ResNet block without
batch norm). Multi-resolution fusion: a 3×3 convolution per path to a common width, up-sampling to
the finest path and a sum. Chained residual pooling (CRP): a chain of (5×5 max-pooling, stride 1 →
3×3 conv) stages, each stage's output added to the running sum, to gather context from growing
regions. A RefineNet block strings them together: per path a 3×3 reduction and adaptive RCUs,
fusion, CRP and output RCUs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from monai.networks.layers.factories import Conv, Pool

from segarch.blocks.resize import resize_to

__all__ = ["ResidualConvUnit", "ChainedResidualPooling", "RefineNetBlock"]


def _conv3(spatial_dims: int, in_channels: int, out_channels: int, bias: bool = False) -> nn.Module:
    return Conv[Conv.CONV, spatial_dims](in_channels, out_channels, 3, padding=1, bias=bias)


class ResidualConvUnit(nn.Module):
    """``x + conv(relu(conv(relu(x))))`` with 3×3 convolutions and no normalisation."""

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        self.conv1 = _conv3(spatial_dims, channels, channels, bias=True)
        self.conv2 = _conv3(spatial_dims, channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class ChainedResidualPooling(nn.Module):
    """``x + Σ_i s_i`` with ``s_i = conv_i(maxpool5(s_{i-1}))`` and ``s_0 = x``.

    Args:
        spatial_dims: 2 or 3.
        channels: input and output channels.
        stages: pooling-convolution stages in the chain (4 in the authors' released models).
    """

    def __init__(self, spatial_dims: int, channels: int, stages: int = 4) -> None:
        super().__init__()
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=5, stride=1, padding=2)
        self.convs = nn.ModuleList(_conv3(spatial_dims, channels, channels) for _ in range(stages))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = top = x
        for conv in self.convs:
            top = conv(self.pool(top))
            out = out + top
        return out


class RefineNetBlock(nn.Module):
    """One RefineNet block: an encoder feature map, optionally fused with the coarser block's output.

    Args:
        spatial_dims: 2 or 3.
        feature_channels: channels of the encoder features on this block's own path.
        channels: the block's width.
        coarser_channels: channels of the coarser RefineNet block's output (``None`` for RefineNet-4,
            which has a single path).
        adapt_units: RCUs on the own path before fusion (2 in the paper).
        crp_stages: stages of chained residual pooling.
        out_units: RCUs after chained residual pooling.

    ``forward(features, coarser=None)`` returns the refined map at ``features``' resolution.
    """

    def __init__(self, spatial_dims: int, feature_channels: int, channels: int, coarser_channels: int | None = None,
                 adapt_units: int = 2, crp_stages: int = 4, out_units: int = 3) -> None:
        super().__init__()
        self.reduce = _conv3(spatial_dims, feature_channels, channels)
        self.adapt = nn.Sequential(*(ResidualConvUnit(spatial_dims, channels) for _ in range(adapt_units)))
        self.fuse_own = self.fuse_coarser = None
        if coarser_channels is not None:
            self.fuse_own = _conv3(spatial_dims, channels, channels)
            self.fuse_coarser = _conv3(spatial_dims, coarser_channels, channels)
        self.crp = ChainedResidualPooling(spatial_dims, channels, crp_stages)
        self.out = nn.Sequential(*(ResidualConvUnit(spatial_dims, channels) for _ in range(out_units)))

    def forward(self, features: torch.Tensor, coarser: torch.Tensor | None = None) -> torch.Tensor:
        x = self.adapt(self.reduce(features))
        if self.fuse_own is not None:
            if coarser is None:
                raise ValueError("this RefineNet block fuses two paths: pass the coarser block's output.")
            up = resize_to(self.fuse_coarser(coarser), x.shape[2:])
            x = F.relu(self.fuse_own(x) + up)
        return self.out(self.crp(x))
