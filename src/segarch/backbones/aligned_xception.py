"""The modified ("aligned") Xception-65 and -71 of DeepLab v3+ (Chen et al., ECCV 2018, arXiv:1802.02611, Sec. 3.2 and
Fig. 4), as a 2D/3D encoder.

Xception (Chollet 2017, arXiv:1610.02357) as DeepLab v3+ modifies it: a deeper middle flow (16 units instead of
8), every max-pooling replaced by a strided depthwise-separable convolution, and batch norm (and, in the exit
flow's last unit, ReLU) after every 3×3 depthwise convolution. Layer sizes follow the authors' released model
(TensorFlow DeepLab, ``xception_65``):

- root: 3×3 convolutions to 32 (stride 2) and 64 channels, each with BN and ReLU;
- entry flow: three units of three separable 3×3 convolutions, 128, 256 and 728 channels, each unit striding on
  its last convolution and adding a 1×1 strided convolution (+ BN) shortcut (Xception-71, the paper's deeper
  Cityscapes trunk: five units, 128, 256, 256, 728, 728, striding every other one);
- middle flow: 16 units of three 728-channel separable convolutions with identity shortcuts;
- exit flow: a unit of (728, 1024, 1024) with a 1×1 shortcut, striding, then a unit of (1536, 1536, 2048)
  without shortcut.

In the units with a shortcut, each separable convolution is preceded by ReLU and has no activation of its own
(depthwise → BN → pointwise → BN); in the last unit each is depthwise → BN → ReLU → pointwise → BN → ReLU.
That is 2 + 3·3 + 16·3 + 2·3 = 65 layers of 3×3 filters (71 with five entry units). Past ``output_stride``
strides become dilation: the unit that would stride runs at rate 1 without stride and later units at twice the
rate, as the released code does.
"""

from __future__ import annotations

import torch
from torch import nn

from segarch.backbones.base import Encoder
from segarch.blocks.conv import ConvNormAct
from segarch.blocks.separable import SeparableConv
from segarch.layers.checks import check_choice, check_positive_int, check_spatial_dims

__all__ = ["AlignedXceptionEncoder", "AlignedXceptionUnit", "XCEPTION_ENTRY_FLOWS"]

# (unit widths, stride, shortcut) of the entry flow of each depth; the root, the middle flow ((728,) * 3 with
# identity shortcuts) and the exit flow are shared.
XCEPTION_ENTRY_FLOWS = {
    65: (((128,) * 3, 2, "conv"), ((256,) * 3, 2, "conv"), ((728,) * 3, 2, "conv")),
    71: (((128,) * 3, 2, "conv"), ((256,) * 3, 1, "conv"), ((256,) * 3, 2, "conv"), ((728,) * 3, 1, "conv"),
         ((728,) * 3, 2, "conv")),
}
_ROOT = (32, 64)
_MIDDLE = ((728,) * 3, 1, "sum")
_EXIT = (((728, 1024, 1024), 2, "conv"), ((1536, 1536, 2048), 1, "none"))


class AlignedXceptionUnit(nn.Module):
    """Three depthwise-separable 3×3 convolutions and a shortcut.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        widths: the three convolutions' output channels.
        stride: stride of the last convolution (and of a ``"conv"`` shortcut).
        dilation: dilation of the three depthwise convolutions.
        shortcut: ``"conv"`` (1×1 convolution + BN), ``"sum"`` (identity) or ``"none"``.
        inner_act: ReLU after the depthwise and the pointwise convolutions (the exit flow's last unit) instead of
            a ReLU before each separable convolution.

    ``forward(x)`` returns the unit's output; ``forward_with_inner(x)`` also returns the second convolution's
    output (DeepLab v3+ reads its decoder's low-level features there).
    """

    def __init__(self, spatial_dims: int, in_channels: int, widths: tuple[int, int, int], stride: int = 1,
                 dilation: int = 1, shortcut: str = "conv", inner_act: bool = False) -> None:
        super().__init__()
        check_choice(shortcut, ("conv", "sum", "none"), "shortcut", "Xception-65")
        act = "relu" if inner_act else None
        self.pre_act = not inner_act
        convs, channels = [], in_channels
        for i, width in enumerate(widths):
            convs.append(SeparableConv(spatial_dims, channels, width, 3, stride=stride if i == 2 else 1,
                                       dilation=dilation, act=act, depthwise_act=act))
            channels = width
        self.convs = nn.ModuleList(convs)
        self.shortcut_kind = shortcut
        self.shortcut = (ConvNormAct(spatial_dims, in_channels, widths[-1], 1, stride=stride, act=None)
                         if shortcut == "conv" else None)

    def forward_with_inner(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, inner = x, x
        for i, conv in enumerate(self.convs):
            y = conv(torch.relu(y) if self.pre_act else y)
            if i == 1:
                inner = y
        if self.shortcut_kind == "conv":
            y = y + self.shortcut(x)
        elif self.shortcut_kind == "sum":
            y = y + x
        return y, inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_inner(x)[0]


class AlignedXceptionEncoder(Encoder):
    """DeepLab v3+'s modified (aligned) Xception-65 or -71.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        depth: 65 (the paper's PASCAL VOC trunk) or 71 (its deeper Cityscapes trunk).
        output_stride: 16 (DeepLab v3+'s training and headline setting) or 8; or 32 (no dilation).
        width: multiplies every width (1.0 is the paper's; smaller for tests and demos).
        middle_units: units of the middle flow (16).

    ``forward(x)`` returns ``[first entry unit (1/4), the second convolution of the entry unit that strides to
    1/8 (1/4: DeepLab v3+'s low-level features), that unit (1/8), entry flow (1/16), exit flow
    (1/output_stride)]``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, depth: int = 65, output_stride: int = 16,
                 width: float = 1.0, middle_units: int = 16) -> None:
        super().__init__()
        net = f"Xception-{depth}" if depth in XCEPTION_ENTRY_FLOWS else "aligned Xception"
        check_spatial_dims(spatial_dims, (2, 3), net)
        check_choice(depth, tuple(XCEPTION_ENTRY_FLOWS), "depth", net)
        check_choice(output_stride, (8, 16, 32), "output_stride", net)
        if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
            raise ValueError(f"`width` must be a positive number for {net}, got {width!r}.")
        check_positive_int(middle_units, "middle_units", net)
        d = spatial_dims
        self.spatial_dims, self.depth = spatial_dims, depth

        def w(c: int) -> int:
            return max(4, round(c * width))

        r0, r1 = (w(c) for c in _ROOT)
        self.root = nn.Sequential(ConvNormAct(d, in_channels, r0, 3, stride=2), ConvNormAct(d, r0, r1, 3))
        stride, rate, channels = 2, 1, r1
        entry = XCEPTION_ENTRY_FLOWS[depth]
        plan = list(entry) + [_MIDDLE] * middle_units + list(_EXIT)
        units, self._low_unit = [], None
        for i, (widths, unit_stride, shortcut) in enumerate(plan):
            if self._low_unit is None and stride == 4 and unit_stride == 2:
                self._low_unit = i  # strides from 1/4 to 1/8: its second convolution is still at 1/4
            if stride == output_stride and unit_stride > 1:  # past the output stride: dilate instead
                unit = AlignedXceptionUnit(d, channels, tuple(w(c) for c in widths), 1, rate, shortcut,
                                           inner_act=i == len(plan) - 1)
                rate *= unit_stride
            else:
                unit = AlignedXceptionUnit(d, channels, tuple(w(c) for c in widths), unit_stride, rate, shortcut,
                                           inner_act=i == len(plan) - 1)
                stride *= unit_stride
            units.append(unit)
            channels = w(widths[-1])
        self.units = nn.ModuleList(units)
        self._entry_units, self.output_stride = len(entry), output_stride
        self.out_channels = (w(128), w(256), w(256), w(728), channels)
        self.reductions = (4, 4, 8, min(16, output_stride), output_stride)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.root(x)
        features = []
        for i, unit in enumerate(self.units):
            if i == self._low_unit:
                x, low = unit.forward_with_inner(x)
                features.append(low)
            else:
                x = unit(x)
            if i in (0, self._low_unit, self._entry_units - 1):
                features.append(x)
        features.append(x)
        return features
