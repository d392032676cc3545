"""DeepLab v3 (Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image Segmentation", arXiv:1706.05587).

A ResNet dilated to output stride 16 (or 8), then the improved ASPP: a 1×1 branch, three 3×3
atrous branches (rates 6, 12, 18 at output stride 16; doubled at 8) and image-level pooling, each with
256 channels and batch norm, concatenated and projected by a 1×1 convolution (256, batch norm), then a
1×1 classifier; logits are up-sampled bilinearly to the input.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.layers.factories import Conv

from segarch.blocks.aspp import ASPP
from segarch.layers.checks import check_positive_int
from segarch.nets._context import DilatedResNetNet, apply_multi_grid
from segarch.zoo import register

__all__ = ["DeepLabV3"]


@register(
    name="deeplab_v3",
    full_name="DeepLab v3 (ResNet-101)",
    paper="Rethinking Atrous Convolution for Semantic Image Segmentation",
    reference="arXiv:1706.05587",
    year=2017,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=16,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 21, "depth": 101, "output_stride": 16,
                  "aspp_channels": 256, "multi_grid": (1, 2, 4)},
    paper_params=58.04,
    paper_params_source=(
        "The paper gives no count; pinned to ours (21 VOC classes): ResNet-101 trunk 42.50M + ASPP head 15.54M. "
        "Cross-checks: Yuan et al. 2020 (OCRNet, arXiv:1909.11065, Table 3) report 15.5M for the ASPP head on "
        "ResNet-101; torchvision's deeplabv3_resnet101 has 61.0M because it adds a 3x3 256 convolution "
        "(0.59M) and an auxiliary FCN head (2.37M)."
    ),
    test_config={"depth": 18, "base_width": 4, "output_stride": 8, "aspp_channels": 16, "rates": (1, 2, 3)},
    notes=(
        "The ASPP of Sec. 3.3 (1x1 + three 3x3 atrous + image pooling, 256 channels, BN) and the multi-grid "
        "(1, 2, 4) unit rates of block4 (set on the shared ResNet trunk's last stage). size_divisor is 16 at either "
        "output stride. Tests run at output stride 8 with ASPP rates 1-3 on their tiny maps."
    ),
)
class DeepLabV3(DilatedResNetNet):
    """DeepLab v3: dilated ResNet and ASPP with image pooling.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        depth: ResNet depth (101 in the paper).
        output_stride: 16 (the paper's training) or 8.
        base_width: ResNet stem width (64 in the paper).
        aspp_channels: channels of every ASPP branch and the projection (256).
        rates: ASPP atrous rates; ``None`` for the paper's (6, 12, 18) at stride 16, (12, 24, 36) at 8.
        multi_grid: unit rates of the last stage's residual units, multiplying its dilation (the paper's
            best, (1, 2, 4), gives rates 2, 4, 8 at output stride 16); ``None`` for one rate.
        aux_head: an FCN head on stage 3 for an auxiliary loss (kept in ``aux_logits``; not in the paper).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; sizes must be multiples of 16.

    Examples::

        >>> net = DeepLabV3(2, 3, 21, depth=18, base_width=8, aspp_channels=16)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 21, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int = 101,
                 output_stride: int = 16, base_width: int = 64, aspp_channels: int = 256,
                 rates: Sequence[int] | None = None, multi_grid: Sequence[int] | None = (1, 2, 4),
                 aux_head: bool = False) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, depth, output_stride, base_width, aux_head,
                         "DeepLab v3", size_divisor=16)
        check_positive_int(aspp_channels, "aspp_channels", "DeepLab v3")
        if multi_grid is not None:
            apply_multi_grid(self.encoder.layers[-1], multi_grid, "DeepLab v3")
        if rates is None:
            rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        self.aspp = ASPP(spatial_dims, self.encoder.out_channels[-1], aspp_channels, rates=rates, fusion="concat",
                         image_pooling=True)
        self.classifier = Conv[Conv.CONV, spatial_dims](aspp_channels, out_channels, 1)

    def head(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.aspp(features[-1]))
