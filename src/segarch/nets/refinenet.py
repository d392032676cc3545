"""RefineNet, 4-cascaded (Lin, Milan, Shen and Reid, CVPR 2017, arXiv:1611.06612).

A ResNet encoder whose four stages (1/4 ... 1/32) feed four RefineNet blocks in a cascade: RefineNet-4
refines the 1/32 features alone; each finer block fuses its stage's features with the coarser block's
output (multi-resolution fusion), then applies chained residual pooling and residual conv units
(Fig. 2(c), Fig. 3). A 3×3 convolution predicts the classes at 1/4 scale and bilinear up-sampling
returns to the input.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from monai.networks.layers.factories import Conv, Dropout

from segarch.backbones import ResNetEncoder
from segarch.backbones.resnet import RESNET_LAYERS
from segarch.blocks.refine import RefineNetBlock
from segarch.blocks.resize import resize_to
from segarch.layers.checks import check_choice, check_features, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["RefineNet"]


@register(
    name="refinenet", full_name="RefineNet, 4-cascaded (ResNet-101)",
    paper="RefineNet: Multi-Path Refinement Networks for High-Resolution Semantic Segmentation",
    reference="arXiv:1611.06612", year=2017, task="semantic", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 21, "depth": 101},
    paper_params=118.0,
    paper_params_source="Lin et al. give no count; 118M is reported for the authors' RefineNet-101 by Nekrasov, Shen "
                        "and Reid 2018 (Light-Weight RefineNet, arXiv:1810.03272, Table 1), PASCAL VOC, 21 classes, "
                        "RGB.",
    test_config={"depth": 18, "base_width": 8, "channels": (16, 8), "crp_stages": 2, "out_units": 1, "dropout": 0.0},
    test_lr=3e-3,
    notes="Follows the authors' released RefineNet-101 where the paper leaves room: 4 CRP stages, 3 output RCUs, "
          "widths 512 (RefineNet-4) and 256, the coarser path entering fusion through its 3×3 convolution only, "
          "dropout 0.5 on the two deepest encoder outputs and before the 3×3 classifier. No batch norm outside "
          "the ResNet, as in the paper.",
)
class RefineNet(SegmentationNet):
    """4-cascaded RefineNet on a ResNet, for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        depth: ResNet depth (the paper: 50, 101, 152).
        base_width: width of the ResNet stem (64 in the paper).
        channels: width of RefineNet-4 and of RefineNet-3/2/1: ``(512, 256)`` in the paper.
        crp_stages: stages of each chained residual pooling (4 in the authors' released models).
        out_units: RCUs after each chained residual pooling (3 in the released models).
        dropout: dropout on the two deepest encoder outputs and before the classifier (0.5 in the
            released models).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 32.

    Examples::

        >>> net = RefineNet(2, 3, 21, depth=101)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 21, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int = 101, base_width: int = 64,
                 channels: Sequence[int] = (512, 256), crp_stages: int = 4, out_units: int = 3,
                 dropout: float = 0.5) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "RefineNet")
        check_choice(depth, tuple(RESNET_LAYERS), "depth", "RefineNet")
        top, rest = check_features(channels, 2, "RefineNet", "channels")
        for arg, value, low in (("crp_stages", crp_stages, 1), ("out_units", out_units, 0),
                                ("base_width", base_width, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"`{arg}` must be an integer >= {low} for RefineNet, got {value!r}.")
        if not 0 <= dropout < 1:
            raise ValueError(f"`dropout` must be in [0, 1) for RefineNet, got {dropout!r}.")
        self.spatial_dims, self.size_divisor = spatial_dims, 32
        self.encoder = ResNetEncoder(spatial_dims, in_channels, depth=depth, base_width=base_width)
        c = self.encoder.out_channels[1:]  # stages at 1/4, 1/8, 1/16, 1/32
        widths = (rest, rest, rest, top)
        # refine[3] is RefineNet-4 (1/32, single path); refine[0] is RefineNet-1 (1/4).
        self.refine = nn.ModuleList(
            RefineNetBlock(spatial_dims, c[i], widths[i], None if i == 3 else widths[i + 1],
                           crp_stages=crp_stages, out_units=out_units)
            for i in range(4)
        )
        self.dropout = Dropout[Dropout.DROPOUT, spatial_dims](dropout)
        self.classifier = Conv[Conv.CONV, spatial_dims](rest, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        features = self.encoder(x)[1:]
        features[2], features[3] = self.dropout(features[2]), self.dropout(features[3])
        y = self.refine[3](features[3])
        for i in (2, 1, 0):
            y = self.refine[i](features[i], y)
        logits = self.classifier(self.dropout(y))
        return resize_to(logits, x.shape[2:])
