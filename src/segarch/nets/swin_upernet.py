"""Swin Transformer (Liu et al., ICCV 2021, arXiv:2103.14030) with a UPerNet head (Xiao et al., ECCV 2018,
arXiv:1807.10221).

Swin: 4×4 patches embedded linearly (stride 4), then four stages of Swin blocks — window
self-attention with a relative position bias, every second block on windows shifted by half a
window (:mod:`segarch.blocks.window_attention`) — with patch merging (2×2 neighbours concatenated
and projected to twice the width) between stages: widths C, 2C, 4C, 8C at strides 4, 8, 16, 32,
each stage output layer-normalised. UPerNet: a pyramid pooling module (bins 1, 2, 3, 6) on the
coarsest map, an FPN (1×1 laterals, top-down addition, 3×3 convolutions) over all four, the four
levels up-sampled to stride 4, concatenated, fused by a 3×3 convolution and classified; logits
are up-sampled ×4.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.blocks.conv import ConvNormAct
from segarch.blocks.resize import resize_to
from segarch.blocks.pyramid_pooling import PyramidPooling
from segarch.blocks.window_attention import PatchMerging, SwinBlock
from segarch.layers.checks import check_features, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["SwinEncoder", "UPerHead", "SwinUPerNet"]


class SwinEncoder(nn.Module):
    """Swin Transformer features at strides 4, 8, 16, 32 (channel-first maps, finest first).

    Args:
        spatial_dims: 2 or 3 (3D: 4³ patches, cubic windows, 2×2×2 patch merging).
        in_channels: input channels.
        embed_dim: C (96 for Swin-T).
        depths: blocks per stage ((2, 2, 6, 2) for Swin-T).
        heads: attention heads per stage ((3, 6, 12, 24) for Swin-T).
        window: window edge (7).
    """

    def __init__(self, spatial_dims: int, in_channels: int, embed_dim: int = 96, depths: Sequence[int] = (2, 2, 6, 2),
                 heads: Sequence[int] = (3, 6, 12, 24), window: int = 7, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        depths = check_features(depths, 4, "Swin", "depths")
        heads = check_features(heads, 4, "Swin", "heads")
        self.patch_embed = Conv[Conv.CONV, spatial_dims](in_channels, embed_dim, 4, stride=4)
        self.embed_norm = nn.LayerNorm(embed_dim)
        self.stages, self.merges, self.norms = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        dim = embed_dim
        for i, (depth, h) in enumerate(zip(depths, heads)):
            self.stages.append(nn.Sequential(*[
                SwinBlock(spatial_dims, dim, h, window, shift=b % 2 == 1, mlp_ratio=mlp_ratio) for b in range(depth)]))
            self.norms.append(nn.LayerNorm(dim))
            if i < 3:
                self.merges.append(PatchMerging(spatial_dims, dim))
                dim *= 2
        self.out_channels = tuple(embed_dim * 2 ** i for i in range(4))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.embed_norm(self.patch_embed(x).movedim(1, -1))  # channel-last tokens
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            outs.append(self.norms[i](x).movedim(-1, 1))
            if i < 3:
                x = self.merges[i](x)
        return outs


class UPerHead(nn.Module):
    """UPerNet's head: PPM on the coarsest level, FPN over all, fusion of all levels at the finest.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the four encoder levels, finest first.
        out_channels: classes.
        channels: head width (512).
    """

    def __init__(self, spatial_dims: int, in_channels: Sequence[int], out_channels: int, channels: int = 512) -> None:
        super().__init__()
        d = spatial_dims
        self.ppm = PyramidPooling(d, in_channels[-1], bins=(1, 2, 3, 6), reduction_channels=channels)
        self.ppm_fuse = ConvNormAct(d, self.ppm.out_channels, channels, 3)
        self.lateral = nn.ModuleList(ConvNormAct(d, c, channels, 1) for c in in_channels[:-1])
        self.smooth = nn.ModuleList(ConvNormAct(d, channels, channels, 3) for _ in in_channels[:-1])
        self.fuse = ConvNormAct(d, len(in_channels) * channels, channels, 3)
        self.classifier = Conv[Conv.CONV, d](channels, out_channels, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        top = self.ppm_fuse(self.ppm(features[-1]))
        levels = [top]
        for lateral, smooth, feature in zip(reversed(self.lateral), reversed(self.smooth), reversed(features[:-1])):
            top = lateral(feature) + resize_to(top, feature.shape[2:])
            levels.append(smooth(top))
        size = features[0].shape[2:]
        fused = self.fuse(torch.cat([resize_to(level, size) for level in reversed(levels)], dim=1))
        return self.classifier(fused)


@register(
    name="swin_upernet",
    full_name="Swin-T + UPerNet",
    paper="Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
    reference="arXiv:2103.14030",
    year=2021,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 150},
    paper_params=60.0,
    paper_params_source=("Liu et al. 2021 (arXiv:2103.14030), ADE20K table: UPerNet with Swin-T, 60M (150 classes). "
                         "UPerNet: Xiao et al. 2018, 'Unified Perceptual Parsing for Scene Understanding', "
                         "arXiv:1807.10221."),
    test_config={"embed_dim": 8, "depths": (1, 1, 2, 1), "heads": (1, 1, 2, 2), "window": 4, "head_channels": 8},
    notes=("Built with SETR for the product list's 'SEIR' (read as SETR, a transformer segmenter; Swin + UPerNet is "
           "the Swin-based reading of it). "
           "The paper's 60M includes the auxiliary FCN head on stage 3 used only in training (~1M), not built here: "
           "59.02M (-1.6%). Feature maps are padded to window multiples inside each block; an axis shorter than the "
           "window gets one window and no shift (as in the official code). 3D (an extension, after Video Swin): 4³ "
           "patch embedding, cubic windows with a (2w−1)³ bias table, 2×2×2 patch merging to 2C."),
)
class SwinUPerNet(SegmentationNet):
    """Swin encoder + UPerNet head.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes.
        embed_dim, depths, heads, window: the Swin encoder (Swin-T: 96, (2, 2, 6, 2), (3, 6, 12, 24), 7).
        head_channels: UPerNet width (512).

    ``forward(x)``: sizes multiples of 32 → logits ``(B, out_channels, *spatial)``.
    """

    size_divisor = 32

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, embed_dim: int = 96,
                 depths: Sequence[int] = (2, 2, 6, 2), heads: Sequence[int] = (3, 6, 12, 24), window: int = 7,
                 head_channels: int = 512) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "Swin UPerNet")
        self.spatial_dims = spatial_dims
        self.encoder = SwinEncoder(spatial_dims, in_channels, embed_dim, depths, heads, window)
        self.head = UPerHead(spatial_dims, self.encoder.out_channels, out_channels, head_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        return resize_to(self.head(self.encoder(x)), x.shape[2:])
