"""DenseNet (Huang et al., CVPR 2017, "Densely Connected Convolutional Networks", arXiv:1608.06993) as a 2D/3D encoder.

A 7×7 stride-2 stem and 3×3 max pooling, then four dense blocks of bottleneck layers (BN-ReLU-1×1
conv to ``4·k``, BN-ReLU-3×3 conv to ``k`` channels, each layer's output concatenated to its input),
separated by transitions (BN-ReLU-1×1 conv halving the channels, 2× average pooling). As DenseASPP
does for segmentation, ``output_stride`` 8 or 16 drops the last transitions' pooling and dilates the
following blocks (2, then 4) instead.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Pool
from monai.networks.layers.utils import get_norm_layer

from segarch.backbones.base import BackboneClassifier, ClassifierHead, Encoder, stem_pool_stages
from segarch.blocks.conv import ConvNormAct, NormActConv
from segarch.layers.checks import check_choice, check_spatial_dims
from segarch.zoo import register

__all__ = ["DenseNetEncoder", "DENSENET_CONFIGS"]

# depth: (initial features, growth rate k, layers per block)
DENSENET_CONFIGS = {
    121: (64, 32, (6, 12, 24, 16)),
    161: (96, 48, (6, 12, 36, 24)),
    169: (64, 32, (6, 12, 32, 32)),
    201: (64, 32, (6, 12, 48, 32)),
}


class DenseLayer(nn.Module):
    """A bottleneck layer (1×1 to ``bn_size·k``, 3×3 to ``k``) whose output is concatenated to its input."""

    def __init__(self, spatial_dims: int, in_channels: int, growth_rate: int, bn_size: int = 4,
                 dilation: int = 1) -> None:
        super().__init__()
        self.bottleneck = NormActConv(spatial_dims, in_channels, bn_size * growth_rate, 1, bias=False)
        self.conv = NormActConv(spatial_dims, bn_size * growth_rate, growth_rate, 3, dilation=dilation, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.bottleneck(x))], dim=1)


class Transition(nn.Sequential):
    """BN-ReLU-1×1 convolution to ``out_channels``, then 2× average pooling (unless ``pool`` is False)."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, pool: bool = True) -> None:
        super().__init__()
        self.add_module("conv", NormActConv(spatial_dims, in_channels, out_channels, 1, bias=False))
        if pool:
            self.add_module("pool", Pool[Pool.AVG, spatial_dims](kernel_size=2, stride=2))


class DenseNetEncoder(Encoder):
    """DenseNet-121/161/169/201 features at strides 2, 4, 8, 16, 32 (or dilated to ``output_stride``).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        depth: 121, 161, 169 or 201.
        output_stride: 32 (plain), 16 or 8 (the last one or two transitions without pooling, the
            following blocks dilated 2 and 4).
        growth_rate: override the growth rate ``k`` (for small test networks).
        init_features: override the stem's width.

    ``forward(x)`` returns ``[stem, block1, block2, block3, block4]`` feature maps (each stage is a
    transition, from the second on, and a dense block; block 4 ends with the final batch norm and ReLU);
    ``out_channels`` and ``reductions`` describe them.
    """

    def __init__(self, spatial_dims: int, in_channels: int, depth: int = 121, output_stride: int = 32,
                 growth_rate: int | None = None, init_features: int | None = None, bn_size: int = 4) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "DenseNet")
        check_choice(depth, tuple(DENSENET_CONFIGS), "depth", "DenseNet")
        check_choice(output_stride, (8, 16, 32), "output_stride", "DenseNet")
        init, k, blocks = DENSENET_CONFIGS[depth]
        for name, value in (("growth_rate", growth_rate), ("init_features", init_features)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer or None for DenseNet, got {value!r}.")
        k = growth_rate or k
        init = init_features or init
        self.spatial_dims = spatial_dims
        self.stem = ConvNormAct(spatial_dims, in_channels, init, 7, stride=2)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=2, padding=1)
        channels, reduction, dilation = init, 4, 1
        stages, out_channels, reductions = [], [init], [2]
        for i, n in enumerate(blocks):
            layers = []
            if i:  # the transition opens the stage, so each stage's output is a dense block's at its stride
                pool = reduction * 2 <= output_stride
                layers.append(Transition(spatial_dims, channels, channels // 2, pool=pool))
                channels //= 2
                if pool:
                    reduction *= 2
                else:
                    dilation *= 2  # keep the receptive field growing where pooling was dropped
            for _ in range(n):
                layers.append(DenseLayer(spatial_dims, channels, k, bn_size, dilation))
                channels += k
            if i == len(blocks) - 1:
                layers += [get_norm_layer("batch", spatial_dims=spatial_dims, channels=channels), nn.ReLU(inplace=True)]
            stages.append(nn.Sequential(*layers))
            out_channels.append(channels)
            reductions.append(reduction)
        self.blocks = nn.ModuleList(stages)
        self.out_channels = tuple(out_channels)
        self.reductions = tuple(reductions)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return stem_pool_stages(x, self.stem, self.pool, self.blocks)


def _register_densenet(depth: int, params: float) -> None:
    @register(
        name=f"densenet{depth}", full_name=f"DenseNet-{depth}", paper="Densely Connected Convolutional Networks",
        reference="arXiv:1608.06993", year=2017, task="backbone", spatial_dims=(2, 3), size_divisor=32,
        paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 1000},
        paper_params=params,
        paper_params_source=(
            f"Huang et al. 2017 (arXiv:1608.06993) Table 1 gives the layers, not counts; {params}M is the count "
            "commonly reported for the ImageNet model (e.g. torchvision's model table)."
        ),
        test_config={"growth_rate": 4, "init_features": 8},
        notes="Built by name: the ImageNet classifier (out_channels = classes). Segmentation nets use DenseNetEncoder.",
    )
    def build(spatial_dims: int, in_channels: int, out_channels: int, output_stride: int = 32,
              growth_rate: int | None = None, init_features: int | None = None):
        encoder = DenseNetEncoder(spatial_dims, in_channels, depth=depth, output_stride=output_stride,
                                  growth_rate=growth_rate, init_features=init_features)
        return BackboneClassifier(encoder, ClassifierHead(encoder.out_channels[-1], out_channels))


for _depth, _params in ((121, 7.98), (161, 28.68)):
    _register_densenet(_depth, _params)
