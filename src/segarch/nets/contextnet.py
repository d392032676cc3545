"""ContextNet (Poudel et al., BMVC 2018, "ContextNet: Exploring Context and Detail for Semantic Segmentation
in Real-time", arXiv:1805.04554).

Two branches (Table 1, ContextNet-14): a deep branch of MobileNetV2 bottlenecks that sees the image
at a quarter of its resolution and reaches 1/32 of the full input, and a shallow branch of four
convolutions (a 3×3 convolution and three depthwise-separable ones) that keeps 1/8 of the full
resolution. The feature fusion unit adds the ×4 up-sampled deep features to the shallow ones; a
classifier of two depthwise-separable convolutions and a 1×1 convolution gives the classes, up-sampled ×8.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv, Dropout

from segarch.blocks.conv import ConvNormAct
from segarch.blocks.resize import interp_mode, resize_to
from segarch.blocks.separable import SeparableConv
from segarch.blocks.two_branch_fusion import TwoBranchFusion
from segarch.layers.checks import check_choice, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.nets.fast_scnn import bottleneck_sequence
from segarch.zoo import register

__all__ = ["ContextNet", "CONTEXTNET_DEEP"]

# The deep branch's bottlenecks (expansion t, channels c, repeats n, stride s), Table 1.
CONTEXTNET_DEEP = ((1, 32, 1, 1), (6, 32, 1, 1), (6, 48, 3, 2), (6, 64, 3, 2), (6, 96, 2, 1), (6, 128, 2, 1))


@register(
    name="contextnet", full_name="ContextNet-14",
    paper="ContextNet: Exploring Context and Detail for Semantic Segmentation in Real-time",
    reference="arXiv:1805.04554", year=2018, task="semantic", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "input_scale": 4},
    paper_params=0.85,
    paper_params_source="Poudel et al. 2018, Cityscapes comparison table: ContextNet-14 0.85M parameters.",
    test_config={"width": 0.125, "dropout": 0.0},
    test_lr=2e-2,
    notes="Table 1 (ContextNet-14: deep branch at 1/4 input resolution); the image is down-scaled bilinearly. The deep "
          "branch ends with its last bottleneck and the classifier is two depthwise-separable convolutions and a 1×1 "
          "convolution (as in Fast-SCNN, by the same authors); a further 3×3 convolution of 128 channels at the end of "
          "the deep branch would add 0.15M (0.99M in all), above the paper's 0.85M. The fusion unit's depthwise "
          "convolution is dilated by 4, as Fast-SCNN describes the same unit.",
)
class ContextNet(SegmentationNet):
    """ContextNet-14 (or -12) for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        input_scale: the deep branch's input resolution divisor (4 for ContextNet-14, 2 for -12).
        width: multiplies every channel count (1.0 in the paper; smaller for tests).
        dropout: dropout before the classifier.

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of
    ``8 · input_scale`` (the deep branch strides 8 times below its down-scaled input).

    Examples::

        >>> net = ContextNet(2, 3, 19)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 19, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, input_scale: int = 4,
                 width: float = 1.0, dropout: float = 0.1) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "ContextNet")
        check_choice(input_scale, (2, 4), "input_scale", "ContextNet")
        if not isinstance(width, (int, float)) or width <= 0:
            raise ValueError(f"`width` must be a positive number for ContextNet, got {width!r}.")
        d = spatial_dims

        def w(c: int) -> int:
            return max(4, int(round(c * width)))

        self.spatial_dims, self.size_divisor, self.input_scale = spatial_dims, 8 * input_scale, input_scale
        self.shallow = nn.Sequential(
            ConvNormAct(d, in_channels, w(32), 3, stride=2),
            SeparableConv(d, w(32), w(64), stride=2),
            SeparableConv(d, w(64), w(128), stride=2),
            SeparableConv(d, w(128), w(128)),
        )
        deep = [ConvNormAct(d, in_channels, w(32), 3, stride=2)]
        channels = w(32)
        for t, c, n, s in CONTEXTNET_DEEP:
            deep.append(bottleneck_sequence(d, channels, w(c), n, s, expansion=t))
            channels = w(c)
        self.deep = nn.Sequential(*deep)
        self.fusion = TwoBranchFusion(d, w(128), w(128), w(128), scale=4)
        self.classifier = nn.Sequential(SeparableConv(d, w(128), w(128)), SeparableConv(d, w(128), w(128)),
                                        Dropout[Dropout.DROPOUT, d](dropout),
                                        Conv[Conv.CONV, d](w(128), out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        small = nn.functional.interpolate(x, scale_factor=1 / self.input_scale, mode=interp_mode(self.spatial_dims),
                                          align_corners=False)
        fused = self.fusion(self.shallow(x), self.deep(small))
        return resize_to(self.classifier(fused), x.shape[2:])
