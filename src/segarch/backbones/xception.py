"""Xception39, the light backbone of BiSeNet (Yu et al. 2018, arXiv:1808.00897), as a 2D/3D encoder.

BiSeNet names it after Xception (Chollet 2017, arXiv:1610.02357) without printing its layers.
Following the authors' released model: a 3×3 stride-2 stem of 8 channels and 3×3 max-pooling
(1/4), then three stages of 4, 8 and 4 residual blocks (1/8, 1/16, 1/32) whose residual branch is
three depthwise-separable 3×3 convolutions (BN after each pointwise convolution) to widths
16, 32, 64 expanded ×4 on the last one (outputs 64, 128, 256); a stage's first block strides and
projects its shortcut with a separable convolution.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Pool

from segarch.backbones.base import BackboneClassifier, ClassifierHead, Encoder
from segarch.blocks.conv import ConvNormAct
from segarch.blocks.separable import SeparableConv
from segarch.layers.checks import check_features, check_spatial_dims
from segarch.zoo import register

__all__ = ["Xception39Encoder", "XceptionBlock"]


def _sep(spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1,
         act: str | None = "relu") -> SeparableConv:
    return SeparableConv(spatial_dims, in_channels, out_channels, 3, stride=stride, act=act,
                         depthwise_norm=None, depthwise_act=None)


class XceptionBlock(nn.Module):
    """Three separable 3×3 convolutions (``mid``, ``mid``, ``4·mid`` channels) plus a shortcut, then ReLU."""

    expansion = 4

    def __init__(self, spatial_dims: int, in_channels: int, mid_channels: int, stride: int = 1) -> None:
        super().__init__()
        out = mid_channels * self.expansion
        self.branch = nn.Sequential(
            _sep(spatial_dims, in_channels, mid_channels, stride),
            _sep(spatial_dims, mid_channels, mid_channels),
            _sep(spatial_dims, mid_channels, out, act=None),
        )
        project = stride != 1 or in_channels != out
        self.shortcut = _sep(spatial_dims, in_channels, out, stride, act=None) if project else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.branch(x) + self.shortcut(x))


class Xception39Encoder(Encoder):
    """Xception39 features at strides 4, 8, 16, 32.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        stem: stem width (8).
        widths: the stages' inner widths (``(16, 32, 64)``; outputs are 4× these).
        blocks: blocks per stage (``(4, 8, 4)``).

    ``forward(x)`` returns ``[stem (1/4), stage1 (1/8), stage2 (1/16), stage3 (1/32)]``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, stem: int = 8, widths=(16, 32, 64),
                 blocks=(4, 8, 4)) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "Xception39")
        widths = check_features(widths, 3, "Xception39", "widths")
        blocks = check_features(blocks, 3, "Xception39", "blocks")
        self.spatial_dims = spatial_dims
        self.stem = nn.Sequential(ConvNormAct(spatial_dims, in_channels, stem, 3, stride=2),
                                  Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=2, padding=1))
        channels, stages = stem, []
        for width, n in zip(widths, blocks):
            layers = []
            for i in range(n):
                layers.append(XceptionBlock(spatial_dims, channels, width, 2 if i == 0 else 1))
                channels = width * XceptionBlock.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.out_channels = (stem,) + tuple(w * XceptionBlock.expansion for w in widths)
        self.reductions = (4, 8, 16, 32)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = [x]
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


@register(
    name="xception39", full_name="Xception39",
    paper="BiSeNet: Bilateral Segmentation Network for Real-time Semantic Segmentation",
    reference="arXiv:1808.00897", year=2018, task="backbone", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 1000},
    paper_params=0.56,
    paper_params_source="No figure in the paper (BiSeNet gives no layers or count for Xception39): pinned to this "
                        "implementation's count with a 1000-class linear classifier, 0.56M.",
    test_config={"stem": 4, "widths": (4, 8, 8), "blocks": (1, 1, 1)},
    notes="Built by name: an ImageNet classifier (pooling + linear) over the encoder, so it can be trained and "
          "counted. Layers follow the authors' released Xception39 (stem 8, widths 16/32/64 ×4, blocks 4/8/4); BiSeNet "
          "uses Xception39Encoder.",
)
def xception39(spatial_dims: int, in_channels: int, out_channels: int, stem: int = 8, widths=(16, 32, 64),
               blocks=(4, 8, 4)) -> BackboneClassifier:
    encoder = Xception39Encoder(spatial_dims, in_channels, stem, widths, blocks)
    return BackboneClassifier(encoder, ClassifierHead(encoder.out_channels[-1], out_channels))
