"""DeepLab v2 (Chen et al., TPAMI 2017, arXiv:1606.00915) with a ResNet-101 trunk: "DeepLab-ASPP-L".

A ResNet dilated to output stride 8, and atrous spatial pyramid pooling as four parallel classifiers:
3×3 convolutions at rates 6, 12, 18 and 24 straight from the trunk's 2048 channels to the classes,
whose scores are summed and up-sampled bilinearly to the input (the paper's fully connected CRF is a
post-processing step, left out).
"""

from __future__ import annotations

from typing import Sequence

import torch

from segarch.blocks.aspp import ASPP
from segarch.nets._context import DilatedResNetNet
from segarch.zoo import register

__all__ = ["DeepLabV2"]


@register(
    name="deeplab_v2",
    full_name="DeepLab v2 (ResNet-101, ASPP-L)",
    paper="DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous Convolution, and Fully Connected "
          "CRFs",
    reference="arXiv:1606.00915",
    year=2017,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=8,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 21, "depth": 101, "output_stride": 8,
                  "rates": (6, 12, 18, 24)},
    paper_params=44.05,
    paper_params_source=(
        "The paper gives no count; pinned to ours: the ResNet-101 trunk without its classifier (42.50M: "
        "44.55M reported for the ImageNet model less its 2.05M fc layer) plus four 3x3 2048->21 classifiers "
        "(4 x 0.387M) for PASCAL VOC's 21 classes = 44.05M, the '~44M' usually quoted."
    ),
    test_config={"depth": 18, "base_width": 4, "rates": (1, 2, 3, 4)},
    notes=(
        "ASPP-L (rates 6/12/18/24) as in the paper's best VOC model; the multi-scale input fusion (MSC), "
        "COCO pre-training and the dense CRF are training/post-processing, left out. The trunk is the zoo's "
        "ResNet (stride on the 3x3 convolution, dilation 2/4 in the last two stages; the Caffe model strides "
        "the 1x1, same parameter count). Tests use rates 1-4 on their tiny maps."
    ),
)
class DeepLabV2(DilatedResNetNet):
    """DeepLab v2: dilated ResNet and ASPP as summed parallel classifiers.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        depth: ResNet depth (101 in the paper).
        output_stride: 8 (the paper) or 16.
        base_width: ResNet stem width (64 in the paper).
        rates: ASPP rates (the paper's ASPP-L: 6, 12, 18, 24).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of
    ``output_stride``.

    Examples::

        >>> net = DeepLabV2(3, 1, 2, depth=18, base_width=8)
        >>> net(torch.zeros(1, 1, 16, 32, 32)).shape
        torch.Size([1, 2, 16, 32, 32])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int = 101,
                 output_stride: int = 8, base_width: int = 64, rates: Sequence[int] = (6, 12, 18, 24)) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, depth, output_stride, base_width, False, "DeepLab v2")
        self.aspp = ASPP(spatial_dims, self.encoder.out_channels[-1], out_channels, rates=rates, fusion="sum")

    def head(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.aspp(features[-1])
