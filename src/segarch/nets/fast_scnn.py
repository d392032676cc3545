"""Fast-SCNN (Poudel et al. 2019, "Fast-SCNN: Fast Semantic Segmentation Network", arXiv:1902.04502).

Table 1: a "learning to down-sample" module (a 3×3 stride-2 convolution and two stride-2
depthwise-separable convolutions: 1/8, 64 channels) shared by two branches; a global feature
extractor of MobileNetV2 bottlenecks (64→1/16, 96→1/32, 128) closed by a pyramid pooling module;
a feature fusion module adding the ×4 up-sampled global features to the 1/8 features; and a
classifier of two depthwise-separable convolutions and a 1×1 convolution, up-sampled ×8.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv, Dropout

from segarch.backbones.mobilenet import InvertedResidual
from segarch.blocks.conv import ConvNormAct
from segarch.blocks.pyramid_pooling import PyramidPooling
from segarch.blocks.resize import resize_to
from segarch.blocks.separable import SeparableConv
from segarch.blocks.two_branch_fusion import TwoBranchFusion
from segarch.layers.checks import check_features, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["FastSCNN", "bottleneck_sequence"]


def bottleneck_sequence(spatial_dims: int, in_channels: int, out_channels: int, repeats: int, stride: int,
                        expansion: int = 6) -> nn.Sequential:
    """``repeats`` MobileNetV2 bottlenecks, the first with ``stride`` (Fast-SCNN and ContextNet use ReLU)."""
    return nn.Sequential(*[
        InvertedResidual(spatial_dims, in_channels if i == 0 else out_channels, out_channels,
                         stride if i == 0 else 1, expansion, act="relu")
        for i in range(repeats)
    ])


@register(
    name="fast_scnn", full_name="Fast-SCNN", paper="Fast-SCNN: Fast Semantic Segmentation Network",
    reference="arXiv:1902.04502", year=2019, task="semantic", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19},
    paper_params=1.11,
    paper_params_source="Poudel et al. 2019, Cityscapes comparison table: Fast-SCNN 1.11M parameters "
                        "(19 classes).",
    test_config={"features": (8, 8, 16, 16, 16, 24), "dropout": 0.0},
    test_lr=2e-2,
    notes="Table 1 and 2. The paper names the pyramid pooling module only: PSPNet's (segarch.blocks.pyramid_pooling, "
          "bins 1, 2, 3, 6, a quarter of the channels each) and a 1×1 fusion back to 128 channels; the fusion's "
          "depthwise convolution is dilated by 4 as Table 2 says.",
)
class FastSCNN(SegmentationNet):
    """Fast-SCNN for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        features: widths ``(conv, dsconv1, dsconv2, gfe1, gfe2, gfe3)`` = ``(32, 48, 64, 64, 96, 128)``
            in Table 1; the fusion and classifier run at ``gfe3``.
        dropout: dropout before the last 1×1 convolution.

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 32.

    Examples::

        >>> net = FastSCNN(2, 3, 19)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 19, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int,
                 features=(32, 48, 64, 64, 96, 128), dropout: float = 0.1) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "Fast-SCNN")
        c0, c1, c2, g1, g2, g3 = check_features(features, 6, "Fast-SCNN")
        d = spatial_dims
        self.spatial_dims, self.size_divisor = spatial_dims, 32
        self.learning_to_downsample = nn.Sequential(
            ConvNormAct(d, in_channels, c0, 3, stride=2),
            SeparableConv(d, c0, c1, stride=2),
            SeparableConv(d, c1, c2, stride=2),
        )
        ppm = PyramidPooling(d, g3, bins=(1, 2, 3, 6))  # PSPNet's module, then a 1×1 fusion back to g3
        self.global_features = nn.Sequential(
            bottleneck_sequence(d, c2, g1, 3, 2),
            bottleneck_sequence(d, g1, g2, 3, 2),
            bottleneck_sequence(d, g2, g3, 3, 1),
            ppm,
            ConvNormAct(d, ppm.out_channels, g3, 1),
        )
        self.fusion = TwoBranchFusion(d, c2, g3, g3, scale=4)
        self.classifier = nn.Sequential(
            SeparableConv(d, g3, g3), SeparableConv(d, g3, g3),
            Dropout[Dropout.DROPOUT, d](dropout), Conv[Conv.CONV, d](g3, out_channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        high = self.learning_to_downsample(x)
        fused = self.fusion(high, self.global_features(high))
        return resize_to(self.classifier(fused), x.shape[2:])
