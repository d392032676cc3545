"""The pyramid pooling module of PSPNet (Zhao et al., CVPR 2017, arXiv:1612.01105, Fig. 3).

The features are average-pooled into ``b×b`` (×b) bins for each pyramid level ``b`` (1, 2, 3, 6 in the
paper), each level reduced by a 1×1 conv-norm-act to ``in_channels / len(bins)`` channels, up-sampled
back (bilinearly) and concatenated with the features themselves.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from segarch.blocks.resize import resize_to
from segarch.blocks.pooled_conv import PooledConvNormAct
from segarch.layers.checks import check_positive_ints
from segarch.layers.exportable import AdaptiveAvgPool

__all__ = ["PyramidPooling"]


class PyramidPooling(nn.Module):
    """Pool at several bin counts, reduce, up-sample and concatenate with the input.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        bins: bins per axis of each pyramid level.
        reduction_channels: channels of each level after its 1×1 convolution; default
            ``in_channels // len(bins)`` (the paper's 1/N).

    The output has ``in_channels + len(bins) * reduction_channels`` channels (``out_channels``). The
    levels' batch norm (:class:`~segarch.blocks.pooled_conv.PooledBatchNorm`) also trains at batch size 1,
    where the 1-bin level holds a single value per channel.
    """

    def __init__(self, spatial_dims: int, in_channels: int, bins: Sequence[int] = (1, 2, 3, 6),
                 reduction_channels: int | None = None) -> None:
        super().__init__()
        self.bins = check_positive_ints(bins, "bins")
        reduction = reduction_channels or max(in_channels // len(self.bins), 1)
        self.levels = nn.ModuleList(nn.Sequential(AdaptiveAvgPool(b), PooledConvNormAct(spatial_dims, in_channels,
                                                                                           reduction))
                                    for b in self.bins)
        self.out_channels = in_channels + len(self.bins) * reduction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[2:]
        return torch.cat([x] + [resize_to(level(x), size) for level in self.levels], dim=1)
