"""DANet (Fu et al., CVPR 2019, "Dual Attention Network for Scene Segmentation", arXiv:1809.02983).

A ResNet dilated to output stride 8, then two parallel branches on its last features: each a 3×3
conv-norm-act to 1/4 of the channels, an attention module — position attention (an ``N × N``
affinity over positions) or channel attention (a ``C × C`` affinity over channels) — and another 3×3
conv-norm-act. The branches are summed, dropped out and classified by a 1×1 convolution; logits are
up-sampled bilinearly to the input.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv, Dropout

from segarch.blocks import ConvNormAct
from segarch.blocks.self_attention import ChannelAttention, PositionAttention
from segarch.layers.checks import check_positive_int, check_rate
from segarch.nets._context import DilatedResNetNet
from segarch.zoo import register

__all__ = ["DANet"]


@register(
    name="danet",
    full_name="DANet (ResNet-101)",
    paper="Dual Attention Network for Scene Segmentation",
    reference="arXiv:1809.02983",
    year=2019,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=8,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "depth": 101, "output_stride": 8},
    paper_params=66.44,
    paper_params_source=(
        "Pinned (derived, not published): the paper gives no count. 66.44M is this implementation of the authors' "
        "released DANet head on a dilated ResNet-101 with Cityscapes' 19 classes: trunk 42.50M + per branch a 3x3 "
        "2048->512 convolution (9.44M), the attention module (position: 0.33M; channel: one scale) and a 3x3 "
        "512->512 convolution (2.36M) + classifier = head 23.94M. The OCRNet paper's complexity table (Yuan et al. "
        "2020, arXiv:1909.11065), which an earlier card cited for a 23.9M head, lists about 10.6M for its own "
        "re-implementation of the DA head (one shared 3x3 reduction), not for DANet's released head: that figure "
        "is not this network's."
    ),
    test_config={"depth": 18, "base_width": 4, "head_channels": 8},
    notes=(
        "Sum fusion of the two branches (the paper's), without the per-branch auxiliary classifiers of the "
        "authors' code; queries/keys of the position attention at 1/8 of the branch channels; channel attention "
        "with the authors' max-minus-energy softmax. The multi-grid refinement of the paper's ablations is "
        "not applied (DeepLab v3's `apply_multi_grid` would do it)."
    ),
)
class DANet(DilatedResNetNet):
    """DANet: dilated ResNet with position and channel attention.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        depth: ResNet depth (101 in the paper).
        output_stride: 8 (the paper) or 16.
        base_width: ResNet stem width (64).
        head_channels: channels of both attention branches (``2048 // 4 = 512`` in the paper); default
            a quarter of the trunk's channels.
        dropout: dropout before the classifier (0.1).
        aux_head: an FCN head on stage 3 for an auxiliary loss (kept in ``aux_logits``).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; sizes must be multiples of ``output_stride``.
    Position attention holds an ``N × N`` matrix (``N`` = positions of the stride-8 map): keep 3D inputs small.

    Examples::

        >>> net = DANet(2, 3, 19, depth=18, base_width=8)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 19, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int = 101,
                 output_stride: int = 8, base_width: int = 64, head_channels: int | None = None,
                 dropout: float = 0.1, aux_head: bool = False) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, depth, output_stride, base_width, aux_head, "DANet")
        c = self.encoder.out_channels[-1]
        inter = check_positive_int(head_channels, "head_channels", "DANet") if head_channels is not None else c // 4
        self.position_in = ConvNormAct(spatial_dims, c, inter, 3)
        self.position = PositionAttention(spatial_dims, inter, reduction=8)
        self.position_out = ConvNormAct(spatial_dims, inter, inter, 3)
        self.channel_in = ConvNormAct(spatial_dims, c, inter, 3)
        self.channel = ChannelAttention()
        self.channel_out = ConvNormAct(spatial_dims, inter, inter, 3)
        self.dropout = Dropout[Dropout.DROPOUT, spatial_dims](check_rate(dropout, "dropout", "DANet"))
        self.classifier = Conv[Conv.CONV, spatial_dims](inter, out_channels, 1)

    def head(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        p = self.position_out(self.position(self.position_in(x)))
        c = self.channel_out(self.channel(self.channel_in(x)))
        return self.classifier(self.dropout(p + c))
