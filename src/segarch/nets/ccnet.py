"""CCNet (Huang et al., ICCV 2019, "CCNet: Criss-Cross Attention for Semantic Segmentation", arXiv:1811.11721).

A ResNet dilated to output stride 8, then the recurrent criss-cross attention module (Fig. 2): a 3×3
conv-norm-act to 1/4 of the channels, criss-cross attention applied ``R`` times with shared weights
(R = 2), a 3×3 conv-norm-act, concatenation with the trunk's features, a 3×3 conv-norm-act (512),
dropout and a 1×1 classifier; logits are up-sampled to the input. Criss-cross attention is written
with ``einsum`` (no CUDA kernels), so it runs on CPUs and, in 3D, along the three axes through a voxel.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv

from segarch.blocks import ConvNormAct
from segarch.blocks.self_attention import RecurrentCrissCrossAttention
from segarch.layers.checks import check_positive_int, check_rate
from segarch.nets._context import DilatedResNetNet
from segarch.zoo import register

__all__ = ["CCNet"]


@register(
    name="ccnet",
    full_name="CCNet (ResNet-101, R=2)",
    paper="CCNet: Criss-Cross Attention for Semantic Segmentation",
    reference="arXiv:1811.11721",
    year=2019,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=8,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "depth": 101, "output_stride": 8,
                  "recurrence": 2},
    paper_params=66.43,
    paper_params_source=(
        "Pinned (derived, not published): the paper gives no total. 66.43M is this implementation of the authors' "
        "released CCNet head (R=2) on a dilated ResNet-101 with Cityscapes' 19 classes: trunk 42.50M + 3x3 "
        "2048->512 reduction (9.44M) + criss-cross attention (0.33M) + 3x3 512->512 (2.36M) + 3x3 bottleneck on "
        "the concatenated 2560 channels to 512 (11.80M) + classifier = head 23.93M. The OCRNet paper's complexity "
        "table (Yuan et al. 2020, arXiv:1909.11065), which an earlier card cited for a 23.9M head, lists about 10.6M "
        "for its own re-implementation of the CC head (no bottleneck on the concatenation), not for CCNet's "
        "released head: that figure is not this network's."
    ),
    test_config={"depth": 18, "base_width": 4, "attention_channels": 8, "head_channels": 16},
    notes=(
        "Criss-cross attention in plain PyTorch (einsum over each axis line; the position itself counted "
        "once), so it runs on CPU and in 3D (three axis lines per voxel). R=2 as in the paper; in 3D full-volume "
        "context needs recurrence=3. The authors' InPlace-ABN is plain batch norm + ReLU here; the deep-supervision "
        "head is optional (aux_head)."
    ),
)
class CCNet(DilatedResNetNet):
    """CCNet: dilated ResNet with recurrent criss-cross attention.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        depth: ResNet depth (101 in the paper).
        output_stride: 8 (the paper) or 16.
        base_width: ResNet stem width (64).
        recurrence: criss-cross passes ``R`` (2 in the paper: full-image context in 2D; in 3D two passes
            reach the three axis planes through a voxel and three reach the whole volume).
        attention_channels: channels the attention runs at (``2048 // 4 = 512``); default a quarter of the trunk's.
        head_channels: channels of the fusion convolution (512).
        dropout: dropout before the classifier (0.1).
        aux_head: an FCN head on stage 3 for the paper's auxiliary loss (kept in ``aux_logits``).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; sizes must be multiples of ``output_stride``.

    Examples::

        >>> net = CCNet(3, 1, 2, depth=18, base_width=8, head_channels=16)
        >>> net(torch.zeros(1, 1, 16, 32, 32)).shape
        torch.Size([1, 2, 16, 32, 32])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int = 101,
                 output_stride: int = 8, base_width: int = 64, recurrence: int = 2,
                 attention_channels: int | None = None, head_channels: int = 512, dropout: float = 0.1,
                 aux_head: bool = False) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, depth, output_stride, base_width, aux_head, "CCNet")
        c = self.encoder.out_channels[-1]
        inter = (c // 4 if attention_channels is None
                 else check_positive_int(attention_channels, "attention_channels", "CCNet"))
        check_positive_int(head_channels, "head_channels", "CCNet")
        check_positive_int(recurrence, "recurrence", "CCNet")
        self.reduce = ConvNormAct(spatial_dims, c, inter, 3)
        self.rcca = RecurrentCrissCrossAttention(spatial_dims, inter, recurrence=recurrence)
        self.expand = ConvNormAct(spatial_dims, inter, inter, 3)
        self.bottleneck = ConvNormAct(spatial_dims, c + inter, head_channels, 3,
                                      dropout=check_rate(dropout, "dropout", "CCNet"))
        self.classifier = Conv[Conv.CONV, spatial_dims](head_channels, out_channels, 1)

    def head(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        context = self.expand(self.rcca(self.reduce(x)))
        return self.classifier(self.bottleneck(torch.cat([x, context], dim=1)))
