"""UNet++ (Zhou et al., DLMIA 2018, arXiv:1807.10165).

A U-Net whose encoder and decoder are joined by nested, dense skip pathways: node ``X[i][j]``
(level ``i``, column ``j``) convolves the concatenation of every earlier node of its level
``X[i][0..j-1]`` with the up-sampled ``X[i+1][j-1]``. Each node is two 3×3 convolutions; the
backbone has 32, 64, 128, 256, 512 channels. With deep supervision, the four top nodes
``X[0][1..4]`` each predict the classes; their predictions are averaged, and pruning to fewer
columns (``prune_depth``) trades accuracy for speed at inference.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from monai.networks.layers.factories import Conv, Pool

from segarch.blocks import DoubleConv, UpSample
from segarch.layers.checks import check_features, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["UNetPlusPlus"]


@register(
    name="unet_plus_plus",
    full_name="UNet++",
    paper="UNet++: A Nested U-Net Architecture for Medical Image Segmentation",
    reference="arXiv:1807.10165",
    year=2018,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=16,
    paper_config={"spatial_dims": 2, "in_channels": 1, "out_channels": 1, "features": (32, 64, 128, 256, 512),
                  "deep_supervision": True},
    paper_params=9.04,
    paper_params_source="Zhou et al. 2018, Table 1: UNet++ w/ DS 9.04M parameters (U-Net 7.76M, wide U-Net 9.13M).",
    test_config={"features": (4, 8, 16, 32, 64)},
    notes="Deep-supervision outputs are averaged into one prediction; up-sampling is a 2×2 transposed convolution as "
          "in the authors' code.",
)
class UNetPlusPlus(SegmentationNet):
    """UNet++ for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        features: channels of the backbone levels; the paper uses ``(32, 64, 128, 256, 512)``.
        deep_supervision: predict from every top node ``X[0][1..]`` and average (the paper's
            "UNet++ w/ DS"); otherwise predict from the last top node only.
        prune_depth: with deep supervision, how many top nodes to use at inference
            (``None``: all; 1 gives the paper's UNet++ L¹, the shallowest).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of
    ``2 ** (len(features) - 1)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        deep_supervision: bool = True,
        prune_depth: int | None = None,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "UNet++")
        f = check_features(features, None, "UNet++")
        depth = len(f) - 1
        if not isinstance(deep_supervision, bool):
            raise ValueError(f"`deep_supervision` must be True or False for UNet++, got {deep_supervision!r}.")
        if prune_depth is not None and (not isinstance(prune_depth, int) or not 1 <= prune_depth <= depth):
            raise ValueError(f"`prune_depth` must be None or an integer in [1, {depth}] for UNet++, got "
                             f"{prune_depth!r}.")
        self.spatial_dims = spatial_dims
        self.size_divisor = 2 ** depth
        self.depth = depth
        self.deep_supervision = deep_supervision
        self.prune_depth = prune_depth

        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2)
        # nodes[i][j] is X[i][j]; ups[i][j] up-samples X[i+1][j] to level i.
        self.nodes = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i in range(depth + 1):
            level = nn.ModuleList()
            level.append(DoubleConv(spatial_dims, in_channels if i == 0 else f[i - 1], f[i]))
            for j in range(1, depth + 1 - i):
                level.append(DoubleConv(spatial_dims, (j + 1) * f[i], f[i]))
            self.nodes.append(level)
            if i < depth:
                self.ups.append(nn.ModuleList(UpSample(spatial_dims, f[i + 1], f[i]) for _ in range(depth - i)))
        conv = Conv[Conv.CONV, spatial_dims]
        heads = depth if deep_supervision else 1
        self.heads = nn.ModuleList(conv(f[0], out_channels, kernel_size=1) for _ in range(heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        columns = self.depth
        if self.deep_supervision and self.prune_depth is not None and not self.training:
            columns = self.prune_depth  # pruned inference: the sub-network up to X[0][prune_depth]
        grid: list[list[torch.Tensor]] = [[] for _ in range(self.depth + 1)]
        for i in range(columns + 1):  # the backbone column X[i][0], only as deep as needed
            grid[i].append(self.nodes[i][0](x if i == 0 else self.pool(grid[i - 1][0])))
        for j in range(1, columns + 1):
            for i in range(columns + 1 - j):
                up = self.ups[i][j - 1](grid[i + 1][j - 1])
                grid[i].append(self.nodes[i][j](torch.cat([*grid[i], up], dim=1)))
        if not self.deep_supervision:
            return self.heads[0](grid[0][columns])
        outputs = [self.heads[j - 1](grid[0][j]) for j in range(1, columns + 1)]
        return torch.stack(outputs).mean(0)
