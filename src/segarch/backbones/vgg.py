"""VGG-16 (Simonyan and Zisserman, ICLR 2015, arXiv:1409.1556) as a 2D/3D encoder.

Configuration D: 13 3×3 convolutions in five blocks (64, 128, 256, 512, 512 channels), each block
closed by 2×2 max-pooling; the ImageNet classifier adds fc6/fc7 (4096) and fc8. FCN turns fc6/fc7
into convolutions; SegNet keeps only the 13 convolutions and the pooling indices.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv, Dropout, Pool

from segarch.backbones.base import Encoder
from segarch.blocks import ConvNormAct
from segarch.layers.batch_statistics import ExplainsBatchStatistics
from segarch.layers.checks import check_spatial_dims
from segarch.layers.exportable import AdaptiveAvgPool
from segarch.zoo import register

__all__ = ["VGGEncoder", "VGG16_BLOCKS", "fc_as_convolutions"]

VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def fc_as_convolutions(spatial_dims: int, in_channels: int, channels: int = 4096, kernel_size: int = 7,
                       dropout: float = 0.5) -> nn.Sequential:
    """fc6/fc7 as convolutions, as FCN (and LRR after it) recast VGG's classifier.

    ``kernel_size`` convolution, ReLU, dropout, 1×1 convolution, ReLU, dropout. "Same" padding keeps the
    stride-32 grid (FCN pads the input by 100 and crops instead, which the padded-input contract makes
    unnecessary).
    """
    conv = Conv[Conv.CONV, spatial_dims]
    drop = Dropout[Dropout.DROPOUT, spatial_dims]
    return nn.Sequential(
        conv(in_channels, channels, kernel_size, padding=kernel_size // 2), nn.ReLU(inplace=True), drop(dropout),
        conv(channels, channels, 1), nn.ReLU(inplace=True), drop(dropout),
    )


class VGGEncoder(Encoder):
    """VGG-16's five convolution blocks.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        width_scale: multiplies every block's channels (1 for the paper; smaller for tests).
        norm: ``None`` (the paper) or ``"batch"`` (VGG-16-BN, as SegNet uses).
        return_indices: also return the max-pooling indices (for SegNet's unpooling).

    ``forward(x)`` returns the five blocks' outputs after pooling (strides 2, 4, 8, 16, 32); with
    ``return_indices``, a list of ``(pooled, indices, pre-pool shape)`` instead.
    """

    def __init__(self, spatial_dims: int, in_channels: int, width_scale: float = 1.0, norm: str | None = None,
                 return_indices: bool = False) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "VGG-16")
        self.spatial_dims = spatial_dims
        self.return_indices = return_indices
        blocks, channels, out_channels = [], in_channels, []
        for block in VGG16_BLOCKS:
            convs = []
            for width in block:
                width = max(1, int(round(width * width_scale)))
                convs.append(ConvNormAct(spatial_dims, channels, width, 3, norm=norm))
                channels = width
            blocks.append(nn.Sequential(*convs))
            out_channels.append(channels)
        self.blocks = nn.ModuleList(blocks)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2, return_indices=return_indices)
        self.out_channels = tuple(out_channels)
        self.reductions = (2, 4, 8, 16, 32)

    def forward(self, x: torch.Tensor) -> list:
        features = []
        for block in self.blocks:
            x = block(x)
            if self.return_indices:
                shape = x.shape
                x, indices = self.pool(x)
                features.append((x, indices, shape))
            else:
                x = self.pool(x)
                features.append(x)
        return features


class _VGGClassifier(ExplainsBatchStatistics):
    def __init__(self, spatial_dims: int, in_channels: int, classes: int, width_scale: float, hidden: int,
                 dropout: float) -> None:
        super().__init__()
        self.encoder = VGGEncoder(spatial_dims, in_channels, width_scale)
        self.spatial_dims, self.size_divisor = spatial_dims, 32
        # fc6 sees a 7×7 map at 224²: adaptive pooling keeps that for any input size.
        self.pool = AdaptiveAvgPool(7)
        flat = self.encoder.out_channels[-1] * 7 ** spatial_dims
        self.fc = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(True), nn.Dropout(dropout),
                                nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(dropout),
                                nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.encoder(x)[-1]).flatten(1))


@register(
    name="vgg16", full_name="VGG-16", paper="Very Deep Convolutional Networks for Large-Scale Image Recognition",
    reference="arXiv:1409.1556", year=2015, task="backbone", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 1000},
    paper_params=138.0,
    paper_params_source="Simonyan and Zisserman 2015, Table 2: configuration D, 138M parameters.",
    test_config={"width_scale": 0.125, "hidden": 32, "dropout": 0.0},
    test_lr=1e-3,
    notes="Built by name: the ImageNet classifier. Segmentation nets (FCN, SegNet) use VGGEncoder.",
)
def vgg16(spatial_dims: int, in_channels: int, out_channels: int, width_scale: float = 1.0, hidden: int = 4096,
          dropout: float = 0.5):
    return _VGGClassifier(spatial_dims, in_channels, out_channels, width_scale, hidden, dropout)
