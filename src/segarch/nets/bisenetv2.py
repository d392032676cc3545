"""BiSeNet V2 (Yu et al., IJCV 2021, "BiSeNet V2: Bilateral Network with Guided Aggregation for Real-time
Semantic Segmentation", arXiv:2004.02147).

Fig. 3 / Table 1: a detail branch of VGG-like 3×3 convolutions (64, 64, 128 channels at 1/2, 1/4,
1/8) and a semantic branch with a stem block (1/4, 16 channels), gather-and-expansion (GE) layers
(1/8: 32, 1/16: 64, 1/32: 128 channels, expansion 6) and a context embedding block (global
pooling added back). The bilateral guided aggregation (BGA) layer lets each branch gate the other
at both resolutions; a segmentation head (3×3 conv-BN-ReLU, 1×1 classifier) is up-sampled ×8.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv, Dropout, Pool

from segarch.blocks.bisenet_fusion import global_pool
from segarch.blocks.conv import ConvNormAct
from segarch.blocks.padded_pool import PaddedAvgPool
from segarch.blocks.pooled_conv import PooledBatchNorm, PooledConvNormAct
from segarch.blocks.resize import resize_to
from segarch.blocks.separable import DepthwiseConv, SeparableConv
from segarch.layers.checks import check_features, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["BiSeNetV2", "StemBlock", "GatherExpansion", "ContextEmbedding", "BilateralGuidedAggregation"]


class StemBlock(nn.Module):
    """3×3 stride-2 conv, then a strided (1×1, 3×3 s2) branch and a max-pool branch, concatenated, 3×3 conv (1/4)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        d, c = spatial_dims, out_channels
        self.conv = ConvNormAct(d, in_channels, c, 3, stride=2)
        self.left = nn.Sequential(ConvNormAct(d, c, max(1, c // 2), 1), ConvNormAct(d, max(1, c // 2), c, 3, stride=2))
        self.right = Pool[Pool.MAX, d](kernel_size=3, stride=2, padding=1)
        self.fuse = ConvNormAct(d, 2 * c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))


class GatherExpansion(nn.Module):
    """The GE layer (Fig. 5b/c): 3×3 conv, depthwise expansion ×``expansion``, linear 1×1 projection, + shortcut.

    With stride 2 a second depthwise convolution follows the strided one, and the shortcut is a
    strided depthwise-separable convolution.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1,
                 expansion: int = 6) -> None:
        super().__init__()
        d, mid = spatial_dims, in_channels * expansion
        self.conv = ConvNormAct(d, in_channels, in_channels, 3)
        layers = [ConvNormAct(d, in_channels, mid, 3, stride=stride, groups=in_channels, act=None)]
        if stride == 2:
            layers.append(DepthwiseConv(d, mid, 3, act=None))
        layers.append(ConvNormAct(d, mid, out_channels, 1, act=None))
        self.expand = nn.Sequential(*layers)
        if stride == 1 and in_channels == out_channels:
            self.shortcut = nn.Identity()
        else:
            self.shortcut = SeparableConv(d, in_channels, out_channels, 3, stride=stride, act=None, depthwise_act=None)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.expand(self.conv(x)) + self.shortcut(x))


class ContextEmbedding(nn.Module):
    """Global average pooling, BN, 1×1 conv-BN-ReLU, broadcast-added to the input, then a 3×3 conv-BN-ReLU."""

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        self.norm = PooledBatchNorm(channels)  # batch norm of one value per channel: trains at batch size 1
        self.embed = PooledConvNormAct(spatial_dims, channels, channels)
        self.out = ConvNormAct(spatial_dims, channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(x + self.embed(self.norm(global_pool(x))))


class BilateralGuidedAggregation(nn.Module):
    """BGA (Fig. 6): detail and semantic features gate each other at 1/8 and at 1/32, then are summed."""

    def __init__(self, spatial_dims: int, channels: int) -> None:
        super().__init__()
        d, c = spatial_dims, channels
        self.detail_keep = SeparableConv(d, c, c, norm=None, act=None, depthwise_act=None)
        self.detail_down = nn.Sequential(ConvNormAct(d, c, c, 3, stride=2, act=None),
                                         PaddedAvgPool(d, 3, 2))
        self.semantic_up = ConvNormAct(d, c, c, 3, act=None)
        self.semantic_keep = SeparableConv(d, c, c, norm=None, act=None, depthwise_act=None)
        self.out = ConvNormAct(d, c, c, 3)

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        high = self.detail_keep(detail) * torch.sigmoid(resize_to(self.semantic_up(semantic), detail.shape[2:]))
        low = self.detail_down(detail) * torch.sigmoid(self.semantic_keep(semantic))
        return self.out(high + resize_to(low, detail.shape[2:]))


@register(
    name="bisenetv2", full_name="BiSeNet V2",
    paper="BiSeNet V2: Bilateral Network with Guided Aggregation for Real-time Semantic Segmentation",
    reference="arXiv:2004.02147", year=2021, task="semantic", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19},
    paper_params=3.36,
    paper_params_source="No figure in the paper (it reports GFLOPs and speed only): pinned to this implementation's "
                        "count at Cityscapes' 19 classes, 3.36M.",
    test_config={"detail": (8, 8, 16), "semantic": (4, 8, 8, 16), "head_channels": 16, "dropout": 0.0},
    test_lr=2e-2,
    notes="Table 1 widths. The paper leaves the head's hidden width open: 1024 here (as common reimplementations), "
          "which holds 1.2M of the 3.36M. The four booster (auxiliary) heads used only for training are not built.",
)
class BiSeNetV2(SegmentationNet):
    """BiSeNet V2 for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        detail: widths of the detail branch's three stages (``(64, 64, 128)``).
        semantic: widths of the stem and the three GE stages (``(16, 32, 64, 128)``); the last must
            equal ``detail[-1]`` (the BGA layer adds them).
        head_channels: the segmentation head's hidden width.
        dropout: dropout before the head's classifier.

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 32.

    Examples::

        >>> net = BiSeNetV2(2, 3, 19)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 19, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, detail=(64, 64, 128),
                 semantic=(16, 32, 64, 128), head_channels: int = 1024, dropout: float = 0.1) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "BiSeNet V2")
        d1, d2, d3 = check_features(detail, 3, "BiSeNet V2", "detail")
        s0, s1, s2, s3 = check_features(semantic, 4, "BiSeNet V2", "semantic")
        if s3 != d3:
            raise ValueError(f"`semantic[-1]` must equal `detail[-1]` for BiSeNet V2, got {s3} and {d3}.")
        d = spatial_dims
        self.spatial_dims, self.size_divisor = spatial_dims, 32
        self.detail = nn.Sequential(
            ConvNormAct(d, in_channels, d1, 3, stride=2), ConvNormAct(d, d1, d1, 3),
            ConvNormAct(d, d1, d2, 3, stride=2), ConvNormAct(d, d2, d2, 3), ConvNormAct(d, d2, d2, 3),
            ConvNormAct(d, d2, d3, 3, stride=2), ConvNormAct(d, d3, d3, 3), ConvNormAct(d, d3, d3, 3),
        )
        self.semantic = nn.Sequential(
            StemBlock(d, in_channels, s0),
            GatherExpansion(d, s0, s1, stride=2), GatherExpansion(d, s1, s1),
            GatherExpansion(d, s1, s2, stride=2), GatherExpansion(d, s2, s2),
            GatherExpansion(d, s2, s3, stride=2), GatherExpansion(d, s3, s3), GatherExpansion(d, s3, s3),
            GatherExpansion(d, s3, s3),
            ContextEmbedding(d, s3),
        )
        self.aggregation = BilateralGuidedAggregation(d, d3)
        self.head = nn.Sequential(ConvNormAct(d, d3, head_channels, 3), Dropout[Dropout.DROPOUT, d](dropout),
                                  Conv[Conv.CONV, d](head_channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        fused = self.aggregation(self.detail(x), self.semantic(x))
        return resize_to(self.head(fused), x.shape[2:])
