"""OSNet (Zhou et al., ICCV 2019, "Omni-Scale Feature Learning for Person Re-Identification", arXiv:1905.00953)
as a 2D/3D encoder.

The omni-scale residual bottleneck (Fig. 4) has ``T = 4`` streams of 1, 2, 3 and 4 "lite" 3×3
convolutions (a linear 1×1 followed by a depthwise 3×3, BN and ReLU), so each stream sees a
different receptive field; a unified aggregation gate (one squeeze-and-excitation gate shared by
all streams) weights and sums them. OSNet x1.0 (Table 1): a 7×7 stride-2 convolution and max-pooling
(1/4), three stages of two bottlenecks (256, 384, 512 channels) separated by 1×1 convolution +
2×2 average pooling transitions, a 1×1 convolution, global pooling and a 512-d fully connected layer.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Pool

from segarch.backbones.base import Encoder
from segarch.blocks.conv import ConvNormAct
from segarch.blocks.squeeze_excitation import SqueezeExcitation
from segarch.layers.batch_statistics import POOLED, ExplainsBatchStatistics
from segarch.layers.checks import check_spatial_dims
from segarch.zoo import register

__all__ = ["LiteConv", "OSBlock", "OSNetEncoder"]


class LiteConv(nn.Sequential):
    """Lite 3×3: a linear 1×1 convolution, a depthwise 3×3 convolution, BN and ReLU."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.add_module("pointwise", ConvNormAct(spatial_dims, in_channels, out_channels, 1, norm=None, act=None,
                                                 bias=False))
        self.add_module("depthwise", ConvNormAct(spatial_dims, out_channels, out_channels, 3, groups=out_channels))


class OSBlock(nn.Module):
    """The omni-scale bottleneck: 1×1 reduction to ``out/4``, ``streams`` lite-conv streams, shared gate, 1×1,
    + shortcut."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, streams: int = 4,
                 reduction: int = 4) -> None:
        super().__init__()
        d, mid = spatial_dims, out_channels // reduction
        self.reduce = ConvNormAct(d, in_channels, mid, 1)
        self.streams = nn.ModuleList(nn.Sequential(*[LiteConv(d, mid, mid) for _ in range(t + 1)])
                                     for t in range(streams))
        self.gate = SqueezeExcitation(mid, reduction=16)  # one gate shared by every stream
        self.expand = ConvNormAct(d, mid, out_channels, 1, act=None)
        self.shortcut = (ConvNormAct(d, in_channels, out_channels, 1, act=None) if in_channels != out_channels
                         else nn.Identity())
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.reduce(x)
        y = sum(self.gate(stream(r)) for stream in self.streams)
        return self.act(self.expand(y) + self.shortcut(x))


class OSNetEncoder(Encoder):
    """OSNet features at strides 4 (conv2), 8 (conv3), 16 (conv4 + conv5).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        width: the width multiplier (1.0 for OSNet x1.0; 0.75, 0.5, 0.25 are the paper's smaller models).
    """

    def __init__(self, spatial_dims: int, in_channels: int, width: float = 1.0) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "OSNet")
        if not isinstance(width, (int, float)) or width <= 0:
            raise ValueError(f"`width` must be a positive number for OSNet, got {width!r}.")
        d = spatial_dims
        c0, c1, c2, c3 = (max(16, int(c * width)) for c in (64, 256, 384, 512))
        self.spatial_dims = spatial_dims
        self.stem = nn.Sequential(ConvNormAct(d, in_channels, c0, 7, stride=2),
                                  Pool[Pool.MAX, d](kernel_size=3, stride=2, padding=1))
        avg = Pool[Pool.AVG, d]
        self.conv2 = nn.Sequential(OSBlock(d, c0, c1), OSBlock(d, c1, c1))
        self.transition2 = nn.Sequential(ConvNormAct(d, c1, c1, 1), avg(kernel_size=2, stride=2))
        self.conv3 = nn.Sequential(OSBlock(d, c1, c2), OSBlock(d, c2, c2))
        self.transition3 = nn.Sequential(ConvNormAct(d, c2, c2, 1), avg(kernel_size=2, stride=2))
        self.conv4 = nn.Sequential(OSBlock(d, c2, c3), OSBlock(d, c3, c3))
        self.conv5 = ConvNormAct(d, c3, c3, 1)
        self.out_channels = (c1, c2, c3)
        self.reductions = (4, 8, 16)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f4 = self.conv2(self.stem(x))
        f8 = self.conv3(self.transition2(f4))
        f16 = self.conv5(self.conv4(self.transition3(f8)))
        return [f4, f8, f16]


class _OSNetClassifier(ExplainsBatchStatistics):
    net_name = "OSNet"
    norm_stride = POOLED  # FC-BN-ReLU on the pooled features: training needs a batch of 2 or more

    def __init__(self, spatial_dims: int, in_channels: int, classes: int, width: float, feature_dim: int) -> None:
        super().__init__()
        self.encoder = OSNetEncoder(spatial_dims, in_channels, width)
        self.spatial_dims, self.size_divisor = spatial_dims, 16
        self.fc = nn.Sequential(nn.Linear(self.encoder.out_channels[-1], feature_dim), nn.BatchNorm1d(feature_dim),
                                nn.ReLU(inplace=True))
        self.classifier = nn.Linear(feature_dim, classes)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.fc(self.encoder(x)[-1].flatten(2).mean(-1)))


@register(
    name="osnet", full_name="OSNet x1.0", paper="Omni-Scale Feature Learning for Person Re-Identification",
    reference="arXiv:1905.00953", year=2019, task="backbone", spatial_dims=(2, 3), size_divisor=16,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 1000, "width": 1.0},
    paper_params=2.7,
    paper_params_source="Zhou et al. 2019: OSNet x1.0 has 2.2M parameters without its identity classifier (Table 1 "
                        "architecture; Sec. 3/4 comparisons) and 2.7M as the ImageNet classifier (its ImageNet table: "
                        "2.2M + a 512×1000 linear layer); built by name it is the ImageNet classifier.",
    test_config={"width": 0.125, "feature_dim": 16},
    notes="Built by name: the classifier (global pooling, FC-BN-ReLU 512, linear). The gate is one SE block (reduction "
          "16) shared by the four streams, as the paper's 'unified aggregation gate'. Features stop at 1/16 as in the "
          "paper's re-ID network (no stride after conv4).",
)
def osnet(spatial_dims: int, in_channels: int, out_channels: int, width: float = 1.0, feature_dim: int = 512):
    return _OSNetClassifier(spatial_dims, in_channels, out_channels, width, feature_dim)
