"""PSPNet (Zhao et al., CVPR 2017, "Pyramid Scene Parsing Network", arXiv:1612.01105).

A ResNet with a deep stem (three 3×3 convolutions), dilated to output stride 8, the pyramid pooling
module (bins 1, 2, 3, 6; each level reduced to 1/4 of the trunk's channels), a 3×3 convolution (512,
batch norm), dropout and a 1×1 classifier; logits are up-sampled bilinearly to the input. An optional
auxiliary FCN head on stage 3 gives the paper's deeply supervised loss (weight 0.4) during training.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.layers.factories import Conv

from segarch.blocks import ConvNormAct
from segarch.blocks.pyramid_pooling import PyramidPooling
from segarch.layers.checks import check_bool, check_positive_int, check_rate
from segarch.nets._context import DilatedResNetNet, apply_deep_stem
from segarch.zoo import register

__all__ = ["PSPNet"]


@register(
    name="pspnet",
    full_name="PSPNet (ResNet-101)",
    paper="Pyramid Scene Parsing Network",
    reference="arXiv:1612.01105",
    year=2017,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=8,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "depth": 101, "output_stride": 8,
                  "bins": (1, 2, 3, 6), "head_channels": 512, "deep_stem": True},
    paper_params=65.6,
    paper_params_source=(
        "The paper gives no count. Yuan et al. 2020 (OCRNet, arXiv:1909.11065, Table 3) report 23.1M for the "
        "pyramid pooling head on a dilated ResNet-101, whose trunk has 42.5M (44.55M ImageNet model less its "
        "fc): 65.6M for Cityscapes' 19 classes, the '~66M' usually quoted. Ours: 65.71M with the paper's deep "
        "stem (+0.12M over the 7x7 stem: 65.58M); the auxiliary head adds 2.37M at training only."
    ),
    test_config={"depth": 18, "base_width": 4, "head_channels": 16},
    notes=(
        "Trunk: the zoo's ResNet with the paper's deep stem (three 3x3 convolutions, 64-64-128, set on the shared "
        "encoder; deep_stem=False for the 7x7 stem). Levels reduced to 1/N of the "
        "trunk's channels (512 each for 2048) with BN-ReLU, a 3x3 512 convolution, dropout 0.1. The auxiliary "
        "head (aux_head=True; 3x3 256 on stage 3) is off by default: it is a training device."
    ),
)
class PSPNet(DilatedResNetNet):
    """PSPNet: dilated ResNet and pyramid pooling.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        depth: ResNet depth (101 for the paper's Cityscapes/VOC models, 50/269 elsewhere).
        output_stride: 8 (the paper) or 16.
        base_width: ResNet stem width (64).
        bins: pyramid bins per axis (1, 2, 3, 6).
        head_channels: channels of the 3×3 convolution after pooling (512).
        dropout: dropout before the classifier (0.1).
        aux_head: add the stage-3 auxiliary head; its training-mode logits are kept in ``aux_logits``.
        deep_stem: the paper's ResNet stem of three 3×3 convolutions (64, 64, 128) instead of one 7×7.

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; sizes must be multiples of ``output_stride``.

    Examples::

        >>> net = PSPNet(3, 1, 2, depth=18, base_width=8, head_channels=16)
        >>> net(torch.zeros(1, 1, 16, 32, 32)).shape
        torch.Size([1, 2, 16, 32, 32])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int = 101,
                 output_stride: int = 8, base_width: int = 64, bins: Sequence[int] = (1, 2, 3, 6),
                 head_channels: int = 512, dropout: float = 0.1, aux_head: bool = False,
                 deep_stem: bool = True) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, depth, output_stride, base_width, aux_head, "PSPNet")
        if check_bool(deep_stem, "deep_stem", "PSPNet"):
            apply_deep_stem(self.encoder, in_channels)
        check_positive_int(head_channels, "head_channels", "PSPNet")
        self.ppm = PyramidPooling(spatial_dims, self.encoder.out_channels[-1], bins=bins)
        self.bottleneck = ConvNormAct(spatial_dims, self.ppm.out_channels, head_channels, 3,
                                      dropout=check_rate(dropout, "dropout", "PSPNet"))
        self.classifier = Conv[Conv.CONV, spatial_dims](head_channels, out_channels, 1)

    def head(self, features: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.bottleneck(self.ppm(features[-1])))
