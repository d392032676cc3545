"""The feature fusion unit of ContextNet and Fast-SCNN (Poudel et al. 2018, arXiv:1805.04554; 2019, arXiv:1902.04502).

A low-resolution, deep branch is up-sampled to the high-resolution branch, filtered by a 3×3
depthwise convolution dilated by the up-sampling factor and a 1×1 convolution; the high-resolution
branch passes through a 1×1 convolution; the two are added and rectified.
"""

from __future__ import annotations

import torch
from torch import nn

from segarch.blocks.conv import ConvNormAct
from segarch.blocks.resize import resize_to
from segarch.blocks.separable import DepthwiseConv

__all__ = ["TwoBranchFusion"]


class TwoBranchFusion(nn.Module):
    """Add a 1×1-projected high-resolution branch and an up-sampled, dilated-depthwise-filtered low one.

    Args:
        spatial_dims: 2 or 3.
        high_channels: channels of the high-resolution branch.
        low_channels: channels of the low-resolution branch.
        out_channels: output channels.
        scale: resolution ratio between the branches (4 in both papers); also the depthwise dilation.
    """

    def __init__(self, spatial_dims: int, high_channels: int, low_channels: int, out_channels: int,
                 scale: int = 4) -> None:
        super().__init__()
        self.high = ConvNormAct(spatial_dims, high_channels, out_channels, 1, act=None)
        self.low = nn.Sequential(
            DepthwiseConv(spatial_dims, low_channels, 3, dilation=scale, act="relu"),
            ConvNormAct(spatial_dims, low_channels, out_channels, 1, act=None),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        return self.act(self.high(high) + self.low(resize_to(low, high.shape[2:])))
