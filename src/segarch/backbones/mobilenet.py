"""MobileNetV2 (Sandler et al., CVPR 2018, arXiv:1801.04381) as a 2D/3D encoder.

Inverted residual blocks: a 1×1 expansion (factor ``t``), a 3×3 depthwise convolution and a linear
1×1 projection, with a residual connection when the block keeps stride and width; ReLU6
throughout. Table 2's body: a 3×3 stride-2 stem of 32 channels, then seven bottleneck sequences
``(t, c, n, s)``, then a 1×1 convolution to 1280 channels for the classifier.
"""

from __future__ import annotations

import torch
from torch import nn

from segarch.backbones.base import BackboneClassifier, ClassifierHead, Encoder
from segarch.blocks.conv import ConvNormAct
from segarch.blocks.squeeze_excitation import SqueezeExcitation
from segarch.layers.checks import check_choice, check_spatial_dims
from segarch.zoo import register

__all__ = ["InvertedResidual", "MobileNetV2Encoder", "MOBILENETV2_SETTINGS", "make_divisible"]

# (expansion t, output channels c, repeats n, first stride s): the paper's Table 2.
MOBILENETV2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                        (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a scaled width to a multiple of ``divisor`` without dropping more than 10% (the reference models' rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class InvertedResidual(nn.Module):
    """MobileNetV2's bottleneck: 1×1 expansion, 3×3 depthwise, linear 1×1 projection (+ identity).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the depthwise convolution.
        expansion: the expansion factor ``t`` (no expansion convolution when 1).
        dilation: dilation of the depthwise convolution.
        act: activation after the expansion and depthwise convolutions (``"relu6"`` in the paper).
        kernel_size: kernel of the depthwise convolution (3 in MobileNetV2; EfficientNet's MBConv: 3 or 5).
        squeeze_excitation: the bottleneck width of a squeeze-and-excitation gate (Swish inside) on the expanded
            channels, as EfficientNet's MBConv has; ``None``: no gate (MobileNetV2).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, stride: int = 1, expansion: int = 6,
                 dilation: int = 1, act="relu6", kernel_size: int = 3, squeeze_excitation: int | None = None) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(ConvNormAct(spatial_dims, in_channels, hidden, 1, act=act))
        layers.append(ConvNormAct(spatial_dims, hidden, hidden, kernel_size, stride=stride, dilation=dilation,
                                  groups=hidden, act=act))
        if squeeze_excitation is not None:
            layers.append(SqueezeExcitation(hidden, hidden=squeeze_excitation, act=nn.SiLU))
        layers.append(ConvNormAct(spatial_dims, hidden, out_channels, 1, act=None))  # linear bottleneck
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV2Encoder(Encoder):
    """MobileNetV2's body as features at strides 2, 4, 8, 16, 32 (or dilated to ``output_stride``).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        width_mult: the width multiplier (1.0 in the paper; channels rounded to multiples of 8).
        output_stride: 32, 16 or 8; the strides beyond it become dilations (as DeepLabv3+ does).

    ``forward(x)`` returns the outputs of the sequences ending at each stride: ``t=1, c=16`` (1/2),
    ``c=24`` (1/4), ``c=32`` (1/8), ``c=96`` (1/16) and ``c=320`` (1/32); the classifier's 1×1
    convolution to 1280 channels is not part of the encoder.
    """

    def __init__(self, spatial_dims: int, in_channels: int, width_mult: float = 1.0, output_stride: int = 32) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "MobileNetV2")
        check_choice(output_stride, (8, 16, 32), "output_stride", "MobileNetV2")
        if not isinstance(width_mult, (int, float)) or width_mult <= 0:
            raise ValueError(f"`width_mult` must be a positive number for MobileNetV2, got {width_mult!r}.")
        self.spatial_dims = spatial_dims
        stem = make_divisible(32 * width_mult)
        self.stem = ConvNormAct(spatial_dims, in_channels, stem, 3, stride=2, act="relu6")
        channels, reduction, dilation = stem, 2, 1
        stages: list[list[nn.Module]] = [[]]
        out_channels, reductions = [], []
        for t, c, n, s in MOBILENETV2_SETTINGS:
            width = make_divisible(c * width_mult)
            if s == 2 and stages[-1]:
                out_channels.append(channels)
                reductions.append(reduction)
                stages.append([])
            for i in range(n):
                stride = s if i == 0 else 1
                block_dilation = dilation
                if stride == 2 and reduction * 2 > output_stride:
                    stride, dilation = 1, dilation * 2  # later blocks dilate instead of striding
                elif stride == 2:
                    reduction *= 2
                stages[-1].append(InvertedResidual(spatial_dims, channels, width, stride, t, block_dilation))
                channels = width
        out_channels.append(channels)
        reductions.append(reduction)
        self.stages = nn.ModuleList(nn.Sequential(*blocks) for blocks in stages)
        self.out_channels = tuple(out_channels)
        self.reductions = tuple(reductions)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class _MobileNetV2Classifier(BackboneClassifier):
    def __init__(self, spatial_dims: int, in_channels: int, classes: int, width_mult: float, dropout: float) -> None:
        encoder = MobileNetV2Encoder(spatial_dims, in_channels, width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        head = nn.Sequential(ConvNormAct(spatial_dims, encoder.out_channels[-1], last, 1, act="relu6"),
                             ClassifierHead(last, classes, dropout))
        super().__init__(encoder, head)


@register(
    name="mobilenet_v2", full_name="MobileNetV2",
    paper="MobileNetV2: Inverted Residuals and Linear Bottlenecks", reference="arXiv:1801.04381", year=2018,
    task="backbone", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 1000, "width_mult": 1.0},
    paper_params=3.4,
    paper_params_source="Sandler et al. 2018, Table 4: MobileNetV2 (1.0, 224) 3.4M parameters.",
    test_config={"width_mult": 0.25, "dropout": 0.0},
    notes="Built by name: the ImageNet classifier (1×1 conv to 1280, pooling, dropout 0.2, linear). "
          "Widths rounded to multiples of 8 as in the reference models; counted 3.50M (the paper rounds to 3.4M). "
          "Segmentation nets (LiteSeg) use MobileNetV2Encoder; Fast-SCNN and ContextNet reuse InvertedResidual.",
)
def mobilenet_v2(spatial_dims: int, in_channels: int, out_channels: int, width_mult: float = 1.0,
                 dropout: float = 0.2) -> BackboneClassifier:
    return _MobileNetV2Classifier(spatial_dims, in_channels, out_channels, width_mult, dropout)
