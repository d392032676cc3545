"""LiteSeg (Emara et al., DICTA 2019, "LiteSeg: A Novel Lightweight ConvNet for Semantic Segmentation",
arXiv:1912.06683), MobileNetV2 variant. Written from the paper (Fig. 1–2, Sec. III).

A MobileNetV2 encoder (its body and the 1×1 convolution to 1280 channels, output stride 32) feeds
a deeper atrous spatial pyramid pooling module (DASPP): a 1×1 branch, three 3×3 atrous branches
(rates 3, 6, 9) each followed by a further 3×3 convolution, and an image-pooling branch, all 96
channels and depthwise-separable. A long residual concatenates the encoder's output with the
branches before a 1×1 fusion to 96 channels. The decoder up-samples to 1/4, concatenates the
encoder's 1/4 features (short residual), and applies two 3×3 separable convolutions and a 1×1
classifier, up-sampled ×4.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.backbones.mobilenet import MobileNetV2Encoder, make_divisible
from segarch.blocks.bisenet_fusion import global_pool
from segarch.blocks.conv import ConvNormAct
from segarch.blocks.pooled_conv import PooledConvNormAct
from segarch.blocks.resize import resize_to
from segarch.blocks.separable import SeparableConv
from segarch.layers.checks import check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["LiteSeg", "DeeperASPP"]


def _sep(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1,
         act: str | None = "relu") -> SeparableConv:
    # Separable convolution with BN (and an optional ReLU) after the pointwise part only.
    return SeparableConv(spatial_dims, in_channels, out_channels, kernel_size, dilation=dilation, act=act,
                         depthwise_norm=None, depthwise_act=None)


class DeeperASPP(nn.Module):
    """LiteSeg's DASPP with its long residual: ``1×1 fuse([x, b1, b3, b6, b9, pool])``.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the encoder output ``x``.
        channels: width of each branch and of the output (96).
        rates: atrous rates of the 3×3 branches (3, 6, 9).
    """

    def __init__(self, spatial_dims: int, in_channels: int, channels: int = 96, rates=(3, 6, 9)) -> None:
        super().__init__()
        d = spatial_dims
        self.point = _sep(d, in_channels, channels, 1, act=None)
        self.atrous = nn.ModuleList(
            nn.Sequential(_sep(d, in_channels, channels, 3, dilation=r, act=None), _sep(d, channels, channels, 3))
            for r in rates
        )
        self.image_pool = PooledConvNormAct(d, in_channels, channels)
        self.fuse = _sep(d, in_channels + channels * (len(rates) + 2), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.image_pool(global_pool(x)).expand(-1, -1, *x.shape[2:])
        return self.fuse(torch.cat([x, self.point(x)] + [branch(x) for branch in self.atrous] + [pooled], dim=1))


@register(
    name="liteseg", full_name="LiteSeg (MobileNetV2)",
    paper="LiteSeg: A Novel Lightweight ConvNet for Semantic Segmentation",
    reference="arXiv:1912.06683", year=2019, task="semantic", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19},
    paper_params=3.10,
    paper_params_source="Emara et al. 2019, the backbones comparison table: LiteSeg-MobileNetV2 4.38M parameters. That "
                        "figure includes the MobileNetV2 ImageNet classifier (1280×1000 + 1000 = 1.28M), which the "
                        "segmentation network never uses (the authors' model keeps it in the module): 4.38 − 1.28 = "
                        "3.10M.",
    test_config={"width_mult": 0.25, "channels": 16, "last_channels": 64},
    notes="Written from the paper (the authors' code may not be reused). MobileNetV2 at output stride 32 with its 1×1 "
          "convolution to 1280; all DASPP and decoder convolutions are depthwise-separable with BN after the pointwise "
          "part; the 1×1 and first atrous convolutions of each branch have no activation before the next layer.",
)
class LiteSeg(SegmentationNet):
    """LiteSeg-MobileNetV2 for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        width_mult: MobileNetV2's width multiplier (1.0).
        channels: DASPP and decoder width (96).
        rates: DASPP atrous rates (3, 6, 9).
        last_channels: width of the encoder's final 1×1 convolution (1280, or more for ``width_mult > 1``
            as in MobileNetV2); smaller only for quick tests.

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 32.

    Examples::

        >>> net = LiteSeg(2, 3, 19)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 19, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, width_mult: float = 1.0,
                 channels: int = 96, rates=(3, 6, 9), last_channels: int | None = None) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "LiteSeg")
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"`channels` must be a positive integer for LiteSeg, got {channels!r}.")
        d = spatial_dims
        self.spatial_dims, self.size_divisor = spatial_dims, 32
        self.encoder = MobileNetV2Encoder(d, in_channels, width_mult)
        last = make_divisible(1280 * max(1.0, width_mult)) if last_channels is None else last_channels
        if not isinstance(last, int) or last < 1:
            raise ValueError(f"`last_channels` must be a positive integer or None for LiteSeg, got {last_channels!r}.")
        self.encoder_head = ConvNormAct(d, self.encoder.out_channels[-1], last, 1, act="relu6")
        self.daspp = DeeperASPP(d, last, channels, rates)
        low = self.encoder.out_channels[1]
        self.decoder = nn.Sequential(_sep(d, channels + low, channels), _sep(d, channels, channels),
                                     Conv[Conv.CONV, d](channels, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        features = self.encoder(x)
        low = features[1]
        y = self.daspp(self.encoder_head(features[-1]))
        y = self.decoder(torch.cat([resize_to(y, low.shape[2:]), low], dim=1))
        return resize_to(y, x.shape[2:])
