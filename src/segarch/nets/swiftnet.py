"""SwiftNet (Oršić et al., CVPR 2019, "In Defense of Pre-trained ImageNet Architectures for Real-time
Semantic Segmentation of Road-driving Images", arXiv:1903.08469).

Single-scale SwiftNetRN-18 (Fig. 3): a ResNet-18 encoder, spatial pyramid pooling on its 1/32
features, and a light ladder-style decoder: at 1/16, 1/8 and 1/4 the up-sampled features are
added to a 1×1 projection of the encoder's skip and blended by a 3×3 convolution (128 channels
throughout). Decoder units are BN → ReLU → convolution, as in the authors' model. The logits at
1/4 are up-sampled ×4.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv, Norm

from segarch.backbones.resnet import ResNetEncoder
from segarch.blocks.resize import resize_to
from segarch.layers.checks import check_spatial_dims
from segarch.layers.exportable import AdaptiveAvgPool
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["SwiftNet", "BNReLUConv", "SwiftSPP"]


class BNReLUConv(nn.Sequential):
    """Pre-activation unit: batch norm, ReLU, then a convolution (no bias unless asked)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                 bias: bool = False) -> None:
        super().__init__()
        self.add_module("norm", Norm[Norm.BATCH, spatial_dims](in_channels))
        self.add_module("act", nn.ReLU(inplace=False))
        self.add_module("conv", Conv[Conv.CONV, spatial_dims](in_channels, out_channels, kernel_size,
                                                                padding=kernel_size // 2, bias=bias))


class SwiftSPP(nn.Module):
    """Spatial pyramid pooling: a 1×1 bottleneck, average pooling to ``grids`` (8, 4, 2) with a 1×1 unit each,
    up-sampled, concatenated with the bottleneck and fused by a 1×1 unit."""

    def __init__(self, spatial_dims: int, in_channels: int, channels: int = 128, grids=(8, 4, 2)) -> None:
        super().__init__()
        level = channels // len(grids)
        self.bottleneck = BNReLUConv(spatial_dims, in_channels, channels, 1)
        self.levels = nn.ModuleList(nn.Sequential(AdaptiveAvgPool(g), BNReLUConv(spatial_dims, channels, level, 1))
                                    for g in grids)
        self.fuse = BNReLUConv(spatial_dims, channels + level * len(grids), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bottleneck(x)
        size = x.shape[2:]
        return self.fuse(torch.cat([x] + [resize_to(level(x), size) for level in self.levels], dim=1))


class _Upsample(nn.Module):
    def __init__(self, spatial_dims: int, skip_channels: int, channels: int) -> None:
        super().__init__()
        self.skip = BNReLUConv(spatial_dims, skip_channels, channels, 1)
        self.blend = BNReLUConv(spatial_dims, channels, channels, 3)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.blend(resize_to(x, skip.shape[2:]) + self.skip(skip))


@register(
    name="swiftnet", full_name="SwiftNetRN-18",
    paper="In Defense of Pre-trained ImageNet Architectures for Real-time Semantic Segmentation of Road-driving Images",
    reference="arXiv:1903.08469", year=2019, task="semantic", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19},
    paper_params=11.8,
    paper_params_source="Oršić et al. 2019, Cityscapes results table: single-scale SwiftNetRN-18, 11.8M parameters.",
    test_config={"channels": 8, "base_width": 8},
    notes="Single-scale model with SPP (grids 8, 4, 2 at 1/32, 128 // 3 = 42 channels each). The encoder's skips are "
          "the ResNet stages' outputs after their final ReLU (the authors tap them before it). Pooling grids are "
          "square here (the authors' keep the image's aspect ratio).",
)
class SwiftNet(SegmentationNet):
    """Single-scale SwiftNet (ResNet-18) for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        channels: the decoder's width (128).
        base_width: the ResNet-18 encoder's base width (64).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 32.

    Examples::

        >>> net = SwiftNet(2, 3, 19)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 19, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, channels: int = 128,
                 base_width: int = 64) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "SwiftNet")
        if not isinstance(channels, int) or channels < 3:
            raise ValueError(f"`channels` must be an integer ≥ 3 for SwiftNet, got {channels!r}.")
        d = spatial_dims
        self.spatial_dims, self.size_divisor = spatial_dims, 32
        self.encoder = ResNetEncoder(d, in_channels, depth=18, base_width=base_width)
        c4, c8, c16, c32 = self.encoder.out_channels[1:]
        self.spp = SwiftSPP(d, c32, channels)
        self.up = nn.ModuleList(_Upsample(d, c, channels) for c in (c16, c8, c4))
        self.logits = BNReLUConv(d, channels, out_channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        f4, f8, f16, f32 = self.encoder(x)[1:]
        y = self.spp(f32)
        for up, skip in zip(self.up, (f16, f8, f4)):
            y = up(y, skip)
        return resize_to(self.logits(y), x.shape[2:])
