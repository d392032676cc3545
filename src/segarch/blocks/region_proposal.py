"""The region-proposal head of Faster / Mask R-CNN (Ren et al. 2015, arXiv:1506.01497; on FPN: Lin et al. 2017),
shared by the zoo's detectors (Mask R-CNN and its family, EfficientPS)."""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from segarch.blocks.conv import ConvNormAct

__all__ = ["RegionProposalHead"]


class RegionProposalHead(nn.Module):
    """Mask R-CNN's region-proposal head shared over the pyramid: a 3×3 convolution with ReLU, then per anchor one
    objectness logit and ``2·spatial_dims`` box deltas.

    ``forward(level)`` → ``(objectness (B, A, *S), deltas (B, A·2d, *S))``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, channels: int, anchors: int) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.conv = ConvNormAct(spatial_dims, in_channels, channels, 3, norm=None, act="relu")
        self.objectness = conv(channels, anchors, 1)
        self.boxes = conv(channels, anchors * 2 * spatial_dims, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        return self.objectness(y), self.boxes(y)
