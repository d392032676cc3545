"""DeepLab v3+ (Chen et al., ECCV 2018, arXiv:1802.02611) with a ResNet-101 trunk.

DeepLab v3's encoder (dilated ResNet at output stride 16 and ASPP with image pooling) and a simple
decoder: the ASPP features, up-sampled 4×, are concatenated with the trunk's stride-4 features reduced
to 48 channels by a 1×1 convolution, refined by two 3×3 convolutions (256) and classified; logits are
up-sampled 4× (bilinearly) to the input.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from segarch.blocks import ConvNormAct
from segarch.blocks.aspp import ASPP
from segarch.blocks.resize import resize_to
from segarch.layers.checks import check_positive_int
from segarch.nets._context import DilatedResNetNet
from segarch.zoo import register

__all__ = ["DeepLabV3Plus"]


@register(
    name="deeplab_v3_plus",
    full_name="DeepLab v3+ (ResNet-101)",
    paper="Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation",
    reference="arXiv:1802.02611",
    year=2018,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=16,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 21, "depth": 101, "output_stride": 16,
                  "aspp_channels": 256, "low_level_channels": 48},
    paper_params=59.34,
    paper_params_source=(
        "The paper gives no count; pinned to ours (21 VOC classes): DeepLab v3's 58.04M (ResNet-101 trunk "
        "42.50M + ASPP 15.54M) + decoder 1.30M (1x1 256->48, 3x3 304->256, 3x3 256->256) = 59.34M, the "
        "figure segmentation_models.pytorch-style ResNet-101 DeepLabV3+ implementations also reach."
    ),
    test_config={"depth": 18, "base_width": 4, "aspp_channels": 16, "low_level_channels": 8, "rates": (1, 2, 3)},
    notes=(
        "ResNet-101 trunk (the paper's Sec. 4.1 experiments; its best model uses an aligned Xception with "
        "depthwise-separable ASPP/decoder, not built here). Low-level features from the end of stage 1 "
        "(stride 4), reduced to 48 channels; decoder of two 3x3 convolutions with 256 channels (Table 2's best)."
    ),
)
class DeepLabV3Plus(DilatedResNetNet):
    """DeepLab v3+: DeepLab v3 encoder and a decoder with low-level features.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        depth: ResNet depth (101 in the paper's ResNet experiments).
        output_stride: 16 (the paper) or 8.
        base_width: ResNet stem width (64).
        aspp_channels: channels of ASPP and decoder convolutions (256).
        low_level_channels: channels the stride-4 features are reduced to (48, the paper's best, Table 1).
        rates: ASPP rates; ``None`` for (6, 12, 18) at stride 16, (12, 24, 36) at 8.

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; sizes must be multiples of 16.

    Examples::

        >>> net = DeepLabV3Plus(3, 1, 2, depth=18, base_width=8, aspp_channels=16, low_level_channels=8)
        >>> net(torch.zeros(1, 1, 32, 32, 32)).shape
        torch.Size([1, 2, 32, 32, 32])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int = 101,
                 output_stride: int = 16, base_width: int = 64, aspp_channels: int = 256,
                 low_level_channels: int = 48, rates: Sequence[int] | None = None) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, depth, output_stride, base_width, False,
                         "DeepLab v3+", size_divisor=16)
        check_positive_int(aspp_channels, "aspp_channels", "DeepLab v3+")
        check_positive_int(low_level_channels, "low_level_channels", "DeepLab v3+")
        if rates is None:
            rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        enc = self.encoder.out_channels
        self.aspp = ASPP(spatial_dims, enc[-1], aspp_channels, rates=rates, fusion="concat", image_pooling=True)
        self.reduce = ConvNormAct(spatial_dims, enc[1], low_level_channels, kernel_size=1)
        self.decoder = nn.Sequential(
            ConvNormAct(spatial_dims, aspp_channels + low_level_channels, aspp_channels, 3),
            ConvNormAct(spatial_dims, aspp_channels, aspp_channels, 3),
        )
        self.classifier = Conv[Conv.CONV, spatial_dims](aspp_channels, out_channels, 1)

    def head(self, features: list[torch.Tensor]) -> torch.Tensor:
        low = self.reduce(features[1])  # stage 1: stride 4 ("Conv2" of the paper's ResNet)
        high = resize_to(self.aspp(features[-1]), low.shape[2:])
        return self.classifier(self.decoder(torch.cat([high, low], dim=1)))
