"""ResNet (He et al., CVPR 2016, arXiv:1512.03385) as a 2D/3D encoder.

Basic blocks (two 3×3 convolutions; ResNet-18/34) or bottlenecks (1×1, 3×3, 1×1 with a 4× wider
output; ResNet-50/101/152), four stages after a 7×7 stride-2 stem and 3×3 max-pooling. The
stride sits on the 3×3 convolution (the "ResNet v1.5" placement used by torchvision and most
segmentation code). ``output_stride`` 8 or 16 replaces the strides of the last stages by dilation,
as DeepLab, PSPNet and other context networks do.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Pool

from segarch.backbones.base import BackboneClassifier, ClassifierHead, Encoder, stem_pool_stages
from segarch.blocks import ConvNormAct
from segarch.layers.checks import check_choice, check_spatial_dims
from segarch.zoo import register

__all__ = ["ResNetEncoder", "BasicBlock", "Bottleneck", "RESNET_LAYERS"]

RESNET_LAYERS = {18: ("basic", (2, 2, 2, 2)), 34: ("basic", (3, 4, 6, 3)), 50: ("bottleneck", (3, 4, 6, 3)),
                 101: ("bottleneck", (3, 4, 23, 3)), 152: ("bottleneck", (3, 8, 36, 3))}


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, spatial_dims: int, in_channels: int, width: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        out = width * self.expansion
        self.conv1 = ConvNormAct(spatial_dims, in_channels, width, 3, stride=stride, dilation=dilation)
        self.conv2 = ConvNormAct(spatial_dims, width, out, 3, dilation=dilation, act=None)
        self.shortcut = _shortcut(spatial_dims, in_channels, out, stride)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, spatial_dims: int, in_channels: int, width: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        out = width * self.expansion
        self.conv1 = ConvNormAct(spatial_dims, in_channels, width, 1)
        self.conv2 = ConvNormAct(spatial_dims, width, width, 3, stride=stride, dilation=dilation)
        self.conv3 = ConvNormAct(spatial_dims, width, out, 1, act=None)
        self.shortcut = _shortcut(spatial_dims, in_channels, out, stride)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


def _shortcut(spatial_dims: int, in_channels: int, out_channels: int, stride: int) -> nn.Module:
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    return ConvNormAct(spatial_dims, in_channels, out_channels, 1, stride=stride, act=None)


class ResNetEncoder(Encoder):
    """ResNet-18/34/50/101/152 features at strides 2, 4, 8, 16, 32 (or dilated to ``output_stride``).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        depth: 18, 34, 50, 101 or 152.
        output_stride: 32 (plain), 16 or 8 (the last one or two stages dilated instead of strided).
        base_width: channels of the stem and first stage (64 in the paper); smaller for tests.

    ``forward(x)`` returns ``[stem, layer1, layer2, layer3, layer4]`` feature maps;
    ``out_channels`` and ``reductions`` describe them.
    """

    def __init__(self, spatial_dims: int, in_channels: int, depth: int = 50, output_stride: int = 32,
                 base_width: int = 64) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "ResNet")
        check_choice(depth, tuple(RESNET_LAYERS), "depth", "ResNet")
        check_choice(output_stride, (8, 16, 32), "output_stride", "ResNet")
        kind, layers = RESNET_LAYERS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.spatial_dims = spatial_dims
        self.stem = ConvNormAct(spatial_dims, in_channels, base_width, 7, stride=2)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=2, padding=1)
        channels, reduction, dilation = base_width, 4, 1
        stages, out_channels, reductions = [], [base_width], [2]
        for i, blocks in enumerate(layers):
            width = base_width * 2 ** i
            stride = 1 if i == 0 else 2
            if i and reduction * stride > output_stride:
                stride, dilation = 1, dilation * 2  # dilate instead of striding past the output stride
            stage = []
            for b in range(blocks):
                stage.append(block(spatial_dims, channels, width, stride if b == 0 else 1, dilation))
                channels = width * block.expansion
            stages.append(nn.Sequential(*stage))
            reduction *= stride
            out_channels.append(channels)
            reductions.append(reduction)
        self.layers = nn.ModuleList(stages)
        self.out_channels = tuple(out_channels)
        self.reductions = tuple(reductions)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return stem_pool_stages(x, self.stem, self.pool, self.layers)


_PAPER = "Deep Residual Learning for Image Recognition"
_SOURCE = "He et al. 2016 (arXiv:1512.03385), Table 1 FLOPs; counts as commonly reported for the ImageNet model: "


def _register_resnet(depth: int, params: float) -> None:
    @register(
        name=f"resnet{depth}", full_name=f"ResNet-{depth}", paper=_PAPER, reference="arXiv:1512.03385", year=2016,
        task="backbone", spatial_dims=(2, 3), size_divisor=32,
        paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 1000},
        paper_params=params,
        paper_params_source=_SOURCE + f"{params}M with the 1000-class classifier (the paper's Table 1 gives the "
                                      "layers, not a count).",
        test_config={"base_width": 8},
        notes="Built by name: the ImageNet classifier (out_channels = classes). Segmentation nets use ResNetEncoder.",
    )
    def build(spatial_dims: int, in_channels: int, out_channels: int, output_stride: int = 32, base_width: int = 64):
        encoder = ResNetEncoder(spatial_dims, in_channels, depth=depth, output_stride=output_stride,
                                base_width=base_width)
        return BackboneClassifier(encoder, ClassifierHead(encoder.out_channels[-1], out_channels))


for _depth, _params in ((18, 11.69), (34, 21.80), (50, 25.56), (101, 44.55)):
    _register_resnet(_depth, _params)
