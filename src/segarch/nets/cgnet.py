"""CGNet (Wu et al. 2018, "CGNet: A Light-weight Context Guided Network for Semantic Segmentation", arXiv:1811.08201).

The context guided (CG) block learns a joint feature of a local feature ``f_loc`` (3×3 channel-wise
convolution) and its surrounding context ``f_sur`` (3×3 dilated channel-wise convolution), then
re-weights it by the global context ``f_glo`` (a squeeze-and-excitation gate), with a residual
connection. CGNet_M3N21: stage 1 has three 3×3 convolutions (1/2), stage 2 ``M = 3`` CG blocks
(1/4, dilation 2), stage 3 ``N = 21`` CG blocks (1/8, dilation 4); the down-sampled image is
injected at the start of stages 2 and 3, each stage's first and last outputs are concatenated,
and a 1×1 convolution gives the classes, up-sampled ×8. BatchNorm and PReLU throughout.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv, Dropout, Pool

from segarch.blocks.conv import ConvNormAct
from segarch.blocks.resize import resize_to
from segarch.blocks.squeeze_excitation import SqueezeExcitation
from segarch.layers.checks import check_features, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.nets.espnet import norm_prelu
from segarch.zoo import register

__all__ = ["CGNet", "ContextGuidedBlock"]


def _cbp(spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> ConvNormAct:
    return ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size, stride=stride,
                       act=("prelu", {"num_parameters": out_channels}))


class ContextGuidedBlock(nn.Module):
    """The CG block (Fig. 3): ``f_glo(BN-PReLU([f_loc(x'), f_sur(x')]))`` (+ ``x``).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        dilation: dilation of ``f_sur``.
        reduction: bottleneck ratio of ``f_glo``.
        downsample: the stage's first block: a 3×3 stride-2 convolution to ``out_channels``, both
            branches at that width, a 1×1 convolution reducing the joint feature back to
            ``out_channels``, and no residual. Otherwise a 1×1 convolution halves the channels
            first and the input is added at the end.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, dilation: int = 2,
                 reduction: int = 16, downsample: bool = False) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        n = out_channels if downsample else out_channels // 2
        self.reduce = _cbp(spatial_dims, in_channels, n, 3 if downsample else 1, stride=2 if downsample else 1)
        self.f_loc = conv(n, n, 3, padding=1, groups=n, bias=False)
        self.f_sur = conv(n, n, 3, padding=dilation, dilation=dilation, groups=n, bias=False)
        self.joint = norm_prelu(spatial_dims, 2 * n)
        self.project = conv(2 * n, out_channels, 1, bias=False) if downsample else nn.Identity()
        self.f_glo = SqueezeExcitation(out_channels, reduction)
        self.residual = not downsample and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.reduce(x)
        y = self.f_glo(self.project(self.joint(torch.cat([self.f_loc(r), self.f_sur(r)], dim=1))))
        return y + x if self.residual else y


@register(
    name="cgnet", full_name="CGNet (M3N21)",
    paper="CGNet: A Light-weight Context Guided Network for Semantic Segmentation",
    reference="arXiv:1811.08201", year=2018, task="semantic", spatial_dims=(2, 3), size_divisor=8,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "m": 3, "n": 21},
    paper_params=0.5,
    paper_params_source="Wu et al. 2018, Cityscapes comparison table: CGNet_M3N21 0.5M parameters (rounded to one "
                        "decimal; this implementation counts 0.496M).",
    test_config={"m": 2, "n": 2, "features": (8, 16, 32)},
    notes="M3N21 with input injection (average-pooled image) at stages 2 and 3 and the global context gate on every "
          "block (reduction 8 in stage 2, 16 in stage 3). Dropout before the classifier is an option (0 by default).",
)
class CGNet(SegmentationNet):
    """CGNet for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        m: CG blocks in stage 2 (3 in CGNet_M3N21).
        n: CG blocks in stage 3 (21).
        features: widths of stages 1, 2, 3 (``(32, 64, 128)``).
        dropout: dropout before the classifier.

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 8.

    Examples::

        >>> net = CGNet(2, 3, 19)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 19, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, m: int = 3, n: int = 21,
                 features=(32, 64, 128), dropout: float = 0.0) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "CGNet")
        f1, f2, f3 = check_features(features, 3, "CGNet")
        for name, value in (("m", m), ("n", n)):
            if not isinstance(value, int) or value < 2:
                raise ValueError(f"`{name}` must be an integer ≥ 2 for CGNet, got {value!r}.")
        d = spatial_dims
        self.spatial_dims, self.size_divisor = spatial_dims, 8
        self.stage1 = nn.Sequential(_cbp(d, in_channels, f1, 3, stride=2), _cbp(d, f1, f1, 3), _cbp(d, f1, f1, 3))
        self.pool = Pool[Pool.AVG, d](kernel_size=3, stride=2, padding=1)
        self.br1 = norm_prelu(d, f1 + in_channels)
        self.down2 = ContextGuidedBlock(d, f1 + in_channels, f2, dilation=2, reduction=8, downsample=True)
        self.stage2 = nn.Sequential(*[ContextGuidedBlock(d, f2, f2, dilation=2, reduction=8) for _ in range(m - 1)])
        self.br2 = norm_prelu(d, 2 * f2 + in_channels)
        self.down3 = ContextGuidedBlock(d, 2 * f2 + in_channels, f3, dilation=4, reduction=16, downsample=True)
        self.stage3 = nn.Sequential(*[ContextGuidedBlock(d, f3, f3, dilation=4, reduction=16) for _ in range(n - 1)])
        self.br3 = norm_prelu(d, 2 * f3)
        self.classifier = nn.Sequential(Dropout[Dropout.DROPOUT, d](dropout),
                                        Conv[Conv.CONV, d](2 * f3, out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        half = self.pool(x)
        quarter = self.pool(half)
        out1 = self.br1(torch.cat([self.stage1(x), half], dim=1))
        first2 = self.down2(out1)
        out2 = self.br2(torch.cat([self.stage2(first2), first2, quarter], dim=1))
        first3 = self.down3(out2)
        out3 = self.br3(torch.cat([first3, self.stage3(first3)], dim=1))
        return resize_to(self.classifier(out3), x.shape[2:])
