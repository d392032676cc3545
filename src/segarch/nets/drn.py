"""Dilated Residual Networks as segmentation nets (Yu, Koltun and Funkhouser, CVPR 2017, arXiv:1705.09914).

DRN keeps a residual network at output stride 8: the last two groups are dilated (2 and 4) instead of
strided, and two further levels of dilation 2 and 1 (the "degridding" of Sec. 4) remove the gridding
artefacts dilation leaves. DRN-C replaces the stem's max pooling by residual blocks at 16 and 32
channels and ends with two non-residual blocks; DRN-D uses plain convolutions for those stem levels
and the last two levels. The segmentation net (the authors' ``DRNSeg``) classifies the stride-8
features with a 1×1 convolution and up-samples bilinearly to the input (their fixed bilinear
transposed convolution, as an interpolation).

Variants: DRN-C-26 and DRN-D-22 (basic blocks, 1-1-2-2-2-2-1-1) and DRN-D-105 (bottlenecks, 1-1-3-4-23-3-1-1).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.backbones.resnet import BasicBlock, Bottleneck
from segarch.blocks import ConvNormAct
from segarch.blocks.resize import resize_to
from segarch.layers.checks import check_choice, check_features, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["DRN", "DRN_CONFIGS"]

DRN_CONFIGS = {
    "C-26": ("C", "basic", (1, 1, 2, 2, 2, 2, 1, 1)),
    "D-22": ("D", "basic", (1, 1, 2, 2, 2, 2, 1, 1)),
    "D-105": ("D", "bottleneck", (1, 1, 3, 4, 23, 3, 1, 1)),
}
_DEFAULT_CHANNELS = (16, 32, 64, 128, 256, 512, 512, 512)


class DRN(SegmentationNet):
    """A dilated residual network (C or D) with the paper's segmentation head.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        variant: ``"C-26"``, ``"D-22"`` or ``"D-105"``.
        channels: widths of the eight levels (16, 32, 64, 128, 256, 512, 512, 512); bottleneck levels
            3–6 output four times their width.

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; sizes must be multiples of 8.

    Examples::

        >>> net = DRN(3, 1, 2, "D-22", channels=(4, 4, 8, 8, 16, 16, 16, 16))
        >>> net(torch.zeros(1, 1, 16, 24, 32)).shape
        torch.Size([1, 2, 16, 24, 32])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, variant: str = "C-26",
                 channels: Sequence[int] = _DEFAULT_CHANNELS) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "DRN")
        check_choice(variant, tuple(DRN_CONFIGS), "variant", "DRN")
        c = check_features(channels, 8, "DRN", "channels")
        arch, kind, layers = DRN_CONFIGS[variant]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.spatial_dims, self.size_divisor, self.variant = spatial_dims, 8, variant
        levels: list[nn.Module] = [ConvNormAct(spatial_dims, in_channels, c[0], 7)]
        width = c[0]

        def convs(out: int, n: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
            nonlocal width
            mods = []
            for i in range(n):
                mods.append(ConvNormAct(spatial_dims, width, out, 3, stride=stride if i == 0 else 1, dilation=dilation))
                width = out
            return nn.Sequential(*mods)

        def blocks(b, planes: int, n: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
            nonlocal width
            mods = []
            for i in range(n):
                mods.append(b(spatial_dims, width, planes, stride if i == 0 else 1, dilation))
                width = planes * b.expansion
            return nn.Sequential(*mods)

        def plain_blocks(out: int, n: int, dilation: int) -> nn.Sequential:
            # DRN-C's last levels: basic blocks without the residual connection (degridding).
            nonlocal width
            mods = []
            for _ in range(n):
                mods += [ConvNormAct(spatial_dims, width, out, 3, dilation=dilation),
                         ConvNormAct(spatial_dims, out, out, 3, dilation=dilation)]
                width = out
            return nn.Sequential(*mods)

        if arch == "C":
            levels += [blocks(BasicBlock, c[0], layers[0]), blocks(BasicBlock, c[1], layers[1], stride=2)]
        else:
            levels += [convs(c[0], layers[0]), convs(c[1], layers[1], stride=2)]
        levels += [
            blocks(block, c[2], layers[2], stride=2),
            blocks(block, c[3], layers[3], stride=2),
            blocks(block, c[4], layers[4], dilation=2),
            blocks(block, c[5], layers[5], dilation=4),
        ]
        if arch == "C":
            levels += [plain_blocks(c[6], layers[6], 2), plain_blocks(c[7], layers[7], 1)]
        else:
            levels += [convs(c[6], layers[6], dilation=2), convs(c[7], layers[7], dilation=1)]
        self.levels = nn.Sequential(*levels)
        self.classifier = Conv[Conv.CONV, spatial_dims](width, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        return resize_to(self.classifier(self.levels(x)), x.shape[2:])


_PAPER = "Dilated Residual Networks"
_NOTES = (
    "Trunk levels built from the zoo's residual blocks (stride on the 3x3 convolution, both 3x3 convolutions of a "
    "block at the level's dilation). The authors' fixed bilinear 16x16 transposed convolution (stride 8) is a "
    "bilinear interpolation here (no parameters: theirs are frozen). Tests use 1/4-1/32 of the widths."
)


def _register(variant: str, params: float) -> None:
    name = "drn_" + variant.lower().replace("-", "_")

    @register(
        name=name, full_name=f"DRN-{variant} (segmentation)", paper=_PAPER, reference="arXiv:1705.09914", year=2017,
        task="semantic", spatial_dims=(2, 3), size_divisor=8,
        paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19},
        paper_params=params,
        paper_params_source=(
            f"The paper gives no count; pinned to ours ({params}M for Cityscapes' 19 classes: the trunk and the 1x1 "
            "classifier, as the authors' DRNSeg builds it). With a 1000-class ImageNet classifier instead, the trunks "
            "come to 21.1M / 16.4M / 54.8M (DRN-C-26 / D-22 / D-105)."
        ),
        test_config={"channels": (4, 4, 8, 8, 8, 16, 16, 16)},
        notes=_NOTES,
    )
    def build(spatial_dims: int, in_channels: int, out_channels: int, channels=_DEFAULT_CHANNELS) -> DRN:
        return DRN(spatial_dims, in_channels, out_channels, variant=variant, channels=channels)


for _variant, _params in (("C-26", 20.62), ("D-22", 15.89), ("D-105", 54.30)):
    _register(_variant, _params)
