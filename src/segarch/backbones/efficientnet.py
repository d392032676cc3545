"""EfficientNet (Tan & Le, ICML 2019, arXiv:1905.11946) as a 2D/3D encoder.

The B0 body (Table 1): a 3×3 stride-2 stem of 32 channels, seven stages of mobile inverted bottlenecks
(MBConv: a 1×1 expansion by ``t``, a ``k×k`` depthwise convolution, squeeze-and-excitation sized from the block's
input (ratio 0.25), a linear 1×1 projection, an identity when the block keeps stride and width), and a 1×1
convolution to 1280 channels; batch norm and Swish throughout. B1–B7 scale widths and repeats by the compound
coefficients (B5: width 1.6, depth 2.2), widths rounded to multiples of 8 and repeats rounded up.

EfficientPS (arXiv:2004.02307) uses B5 without the squeeze-and-excitation connections and with leaky ReLU
(``squeeze_excitation=False, act=("leakyrelu", {"negative_slope": 0.01})``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from segarch.backbones.base import BackboneClassifier, ClassifierHead, Encoder
from segarch.backbones.mobilenet import InvertedResidual, make_divisible
from segarch.blocks.conv import ConvNormAct
from segarch.layers.checks import check_choice, check_spatial_dims
from segarch.zoo import register

__all__ = ["MBConv", "EfficientNetEncoder", "EFFICIENTNET_B0", "EFFICIENTNET_SCALING"]

# (expansion t, kernel k, first stride s, output channels c, repeats n): Table 1 of the paper (B0).
EFFICIENTNET_B0 = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
                   (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
#: (width, depth) coefficients of each variant, as in the authors' released models.
EFFICIENTNET_SCALING = {"b0": (1.0, 1.0), "b1": (1.0, 1.1), "b2": (1.1, 1.2), "b3": (1.2, 1.4), "b4": (1.4, 1.8),
                        "b5": (1.6, 2.2), "b6": (1.8, 2.6), "b7": (2.0, 3.1)}


class MBConv(InvertedResidual):
    """EfficientNet's mobile inverted bottleneck (with optional squeeze-and-excitation).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel of the depthwise convolution (3 or 5).
        stride: stride of the depthwise convolution.
        expansion: the expansion factor ``t`` (no expansion convolution when 1).
        squeeze_excitation: gate the expanded channels by a bottleneck of ``in_channels / 4``.
        act: the activation (MONAI name or ``(name, kwargs)``).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 expansion: int, squeeze_excitation: bool = True, act="swish") -> None:
        # MobileNetV2's bottleneck with EfficientNet's kernel and gate (sized from the block's input)
        super().__init__(spatial_dims, in_channels, out_channels, stride, expansion, act=act, kernel_size=kernel_size,
                         squeeze_excitation=max(1, in_channels // 4) if squeeze_excitation else None)


class EfficientNetEncoder(Encoder):
    """EfficientNet's body as features at strides 4, 8, 16 and 32, the last after the 1×1 head convolution.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        variant: ``"b0"`` … ``"b7"``.
        squeeze_excitation: keep the squeeze-and-excitation gates (the paper: yes; EfficientPS: no).
        act: activation (``"swish"``; EfficientPS: leaky ReLU).
        width: an extra width multiplier (1.0; smaller for tests and demos).

    ``forward(x)`` returns the outputs of stage 2 (1/4), stage 3 (1/8), stage 5 (1/16) and the head convolution
    (1/32): for B5 40, 64, 176 and 2048 channels, the features EfficientPS's 2-way FPN reads.
    """

    def __init__(self, spatial_dims: int, in_channels: int, variant: str = "b0", squeeze_excitation: bool = True,
                 act="swish", width: float = 1.0) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "EfficientNet")
        check_choice(variant, tuple(EFFICIENTNET_SCALING), "variant", "EfficientNet")
        if isinstance(width, bool) or not isinstance(width, (int, float)) or width <= 0:
            raise ValueError(f"`width` must be a positive number for EfficientNet, got {width!r}.")
        w_mult, d_mult = EFFICIENTNET_SCALING[variant]

        def w(c: int) -> int:
            return make_divisible(c * w_mult * width)

        self.spatial_dims = spatial_dims
        channels = w(32)
        self.stem = ConvNormAct(spatial_dims, in_channels, channels, 3, stride=2, act=act)
        stages = []
        for t, k, s, c, n in EFFICIENTNET_B0:
            blocks = []
            for i in range(int(math.ceil(n * d_mult))):
                blocks.append(MBConv(spatial_dims, channels, w(c), k, s if i == 0 else 1, t, squeeze_excitation, act))
                channels = w(c)
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.head = ConvNormAct(spatial_dims, channels, w(1280), 1, act=act)
        self._taps = (1, 2, 4)  # stages ending at 1/4, 1/8 and 1/16
        self.out_channels = (*(w(EFFICIENTNET_B0[i][3]) for i in self._taps), w(1280))
        self.reductions = (4, 8, 16, 32)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self._taps:
                features.append(x)
        features.append(self.head(x))
        return features


class _EfficientNetClassifier(BackboneClassifier):
    def __init__(self, spatial_dims: int, in_channels: int, classes: int, variant: str, width: float,
                 dropout: float) -> None:
        encoder = EfficientNetEncoder(spatial_dims, in_channels, variant, width=width)
        super().__init__(encoder, ClassifierHead(encoder.out_channels[-1], classes, dropout))


@register(
    name="efficientnet_b5", full_name="EfficientNet-B5",
    paper="EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks", reference="arXiv:1905.11946",
    year=2019, task="backbone", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 1000},
    paper_params=30.0,
    paper_params_source="Tan & Le 2019, Table 2: EfficientNet-B5, 30M parameters (ImageNet classifier).",
    test_config={"width": 0.25, "dropout": 0.0},
    notes="Built by name: the ImageNet classifier (B5: width 1.6, depth 2.2; head convolution to 2048, pooling, "
          "dropout 0.4, linear). Squeeze-and-excitation with Swish, sized from each block's input (ratio 0.25). "
          "EfficientPS uses EfficientNetEncoder(variant='b5') without squeeze-and-excitation, with leaky ReLU.",
)
def efficientnet_b5(spatial_dims: int, in_channels: int, out_channels: int, width: float = 1.0,
                    dropout: float = 0.4) -> BackboneClassifier:
    return _EfficientNetClassifier(spatial_dims, in_channels, out_channels, "b5", width, dropout)
