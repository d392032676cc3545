"""DenseASPP (Yang et al., CVPR 2018, "DenseASPP for Semantic Segmentation in Street Scenes").

A DenseNet dilated to output stride 8 (the last two transitions keep the resolution; blocks 3 and 4
dilated 2 and 4), a 1×1 transition halving its channels, then densely connected atrous layers at rates
3, 6, 12, 18, 24 (:class:`~segarch.blocks.aspp.DenseASPP`: each layer a BN-ReLU-1×1 reduction and a
BN-ReLU-3×3 atrous convolution, fed with everything before it). The concatenation is dropped out and
classified by a 1×1 convolution; logits are up-sampled bilinearly to the input.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.layers.factories import Conv, Dropout

from segarch.backbones.densenet import DenseNetEncoder
from segarch.blocks.aspp import DenseASPP as DenseASPPBlock
from segarch.blocks.resize import resize_to
from segarch.nets._base import SegmentationNet
from segarch.layers.checks import check_positive_int, check_rate, check_spatial_dims
from segarch.zoo import register

__all__ = ["DenseASPPNet"]


@register(
    name="dense_aspp",
    full_name="DenseASPP (DenseNet-161)",
    paper="DenseASPP for Semantic Segmentation in Street Scenes",
    reference="doi:10.1109/CVPR.2018.00388",
    year=2018,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=8,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "depth": 161, "mid_channels": 512,
                  "layer_channels": 128},
    paper_params=35.39,
    paper_params_source=(
        "Pinned to ours (19 Cityscapes classes): dilated DenseNet-161 features 26.47M (28.68M ImageNet model less "
        "its 2.21M classifier) + transition 2208->1104 (2.44M) + five atrous layers (6.43M) + classifier. "
        "No count from the paper is checked here."
    ),
    test_config={"depth": 121, "growth_rate": 4, "init_features": 8, "mid_channels": 8, "layer_channels": 4,
                 "rates": (1, 2, 3, 4, 5)},
    notes=(
        "DenseNet-161 with d_feature0=512, d_feature1=128 and dropout 0.1 as in the authors' configuration; "
        "the transition after block 4 is a bare 1x1 convolution (block 4 already ends in BN-ReLU). Tests use a "
        "DenseNet-121 layout with growth 4 and rates 1-5 on their tiny maps."
    ),
)
class DenseASPPNet(SegmentationNet):
    """DenseASPP on a dilated DenseNet.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        depth: DenseNet depth (161 for the paper's best model; 121 also reported).
        growth_rate: override the DenseNet growth rate (tests).
        init_features: override the DenseNet stem width (tests).
        mid_channels: each atrous layer's 1×1 reduction (``d_feature0``: 512 for DenseNet-161, 256 for 121).
        layer_channels: channels each atrous layer adds (``d_feature1``: 128 for 161, 64 for 121).
        rates: atrous rates (3, 6, 12, 18, 24).
        dropout: dropout after each atrous layer and before the classifier (0.1).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; sizes must be multiples of 8.

    Examples::

        >>> net = DenseASPPNet(3, 1, 2, depth=121, growth_rate=4, init_features=8, mid_channels=8, layer_channels=4)
        >>> net(torch.zeros(1, 1, 16, 32, 32)).shape
        torch.Size([1, 2, 16, 32, 32])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int = 161,
                 growth_rate: int | None = None, init_features: int | None = None, mid_channels: int = 512,
                 layer_channels: int = 128, rates: Sequence[int] = (3, 6, 12, 18, 24), dropout: float = 0.1) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "DenseASPP")
        check_positive_int(mid_channels, "mid_channels", "DenseASPP")
        check_positive_int(layer_channels, "layer_channels", "DenseASPP")
        dropout = check_rate(dropout, "dropout", "DenseASPP")
        self.spatial_dims, self.size_divisor = spatial_dims, 8
        self.encoder = DenseNetEncoder(spatial_dims, in_channels, depth=depth, output_stride=8,
                                       growth_rate=growth_rate, init_features=init_features)
        c = self.encoder.out_channels[-1]
        # The authors' fourth transition: halve the channels, keep the resolution.
        self.transition = Conv[Conv.CONV, spatial_dims](c, c // 2, 1, bias=False)
        self.aspp = DenseASPPBlock(spatial_dims, c // 2, mid_channels, layer_channels, rates=rates, dropout=dropout)
        self.dropout = Dropout[Dropout.DROPOUT, spatial_dims](dropout)
        self.classifier = Conv[Conv.CONV, spatial_dims](self.aspp.out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        features = self.aspp(self.transition(self.encoder(x)[-1]))
        return resize_to(self.classifier(self.dropout(features)), x.shape[2:])
