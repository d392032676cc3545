"""The feature pyramid network neck (Lin et al. 2017, "Feature Pyramid Networks for Object Detection",
arXiv:1612.03144, Sec. 3): lateral 1×1 convolutions bring every encoder stage to one width, a top-down
pathway adds each coarser map, up-sampled ×2 by nearest neighbour, to the next finer one, and a 3×3
convolution smooths each merged map.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from monai.networks.layers.factories import Conv

__all__ = ["FeaturePyramid"]


class FeaturePyramid(nn.Module):
    """Map encoder features ``[C_i, ..., C_n]`` (finest first) to ``[P_i, ..., P_n]`` with ``channels`` each.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of each input map, finest first.
        channels: width of every pyramid level (256 in FPN).
    """

    def __init__(self, spatial_dims: int, in_channels: Sequence[int], channels: int = 256) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.lateral = nn.ModuleList(conv(c, channels, 1) for c in in_channels)
        self.output = nn.ModuleList(conv(channels, channels, 3, padding=1) for _ in in_channels)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        top = self.lateral[-1](features[-1])
        merged = [top]
        for lateral, feature in zip(reversed(self.lateral[:-1]), reversed(features[:-1])):
            top = lateral(feature) + F.interpolate(top, size=feature.shape[2:], mode="nearest")
            merged.append(top)
        return [out(m) for out, m in zip(self.output, reversed(merged))]
