"""BiSeNet's attention refinement and feature fusion modules (Yu et al. 2018, arXiv:1808.00897, Fig. 2).

Shared by BiSeNet and STDC-Seg (Fan et al. 2021, arXiv:2104.13188), whose context path reuses them.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.blocks.conv import ConvNormAct
from segarch.blocks.pooled_conv import PooledConvNormAct

__all__ = ["AttentionRefinement", "FeatureFusion", "global_pool"]


def global_pool(x: torch.Tensor) -> torch.Tensor:
    """Global average pooling that keeps singleton spatial axes: ``(B, C, 1, ...)``."""
    return x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)



class AttentionRefinement(nn.Module):
    """ARM: a 3×3 convolution, then channels rescaled by ``sigmoid(BN(1×1 conv(global pool)))``.

    The 3×3 convolution brings the backbone stage to the context path's width (as the authors'
    code does); the attention vector needs no extra parameters beyond the 1×1 convolution and BN
    (a :class:`~segarch.blocks.pooled_conv.PooledBatchNorm`, so training works at batch size 1).

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the backbone stage.
        out_channels: channels of the refined features.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = ConvNormAct(spatial_dims, in_channels, out_channels, 3)
        self.attention = PooledConvNormAct(spatial_dims, out_channels, out_channels, act="sigmoid")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x * self.attention(global_pool(x))


class FeatureFusion(nn.Module):
    """FFM: concatenate the two paths, 1×1 conv-BN-ReLU, then add an SE-like re-weighting of the result.

    ``y = f + f * sigmoid(W2 relu(W1 pool(f)))`` with ``f`` the fused features.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the concatenated inputs.
        out_channels: output channels.
        reduction: bottleneck ratio of the re-weighting.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, reduction: int = 4) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        hidden = max(1, out_channels // reduction)
        self.fuse = ConvNormAct(spatial_dims, in_channels, out_channels, 1)
        self.attention = nn.Sequential(conv(out_channels, hidden, 1, bias=False), nn.ReLU(inplace=True),
                                       conv(hidden, out_channels, 1, bias=False), nn.Sigmoid())

    def forward(self, *paths: torch.Tensor) -> torch.Tensor:
        f = self.fuse(torch.cat(paths, dim=1))
        return f + f * self.attention(global_pool(f))
