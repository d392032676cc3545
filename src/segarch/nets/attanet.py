"""AttaNet (Song, Mei and Huang, AAAI 2021, "AttaNet: Attention-Augmented Network for Fast and Accurate
Scene Parsing", arXiv:2103.05930) — the zoo's reading of "AF-Net".

A real-time network on a ResNet-18 (output stride 32). The Attention Fusion Module merges the stride-16
and stride-32 features with a channel-wise weight ``α`` learned from both (``α·up(f32) + (1 - α)·f16``);
the Strip Attention Module then adds global context at a cost linear in the image size (keys and values
pooled into vertical strips). The result is up-sampled to stride 8, refined by a 3×3 conv-norm-act and
classified by a 3×3 conv-norm-act, dropout and a 1×1 convolution; logits are up-sampled bilinearly to the
input.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Pool

from segarch.backbones import ResNetEncoder
from segarch.blocks import ConvNormAct
from segarch.blocks.resize import resize_to
from segarch.blocks.pooled_conv import PooledConvNormAct
from segarch.blocks.self_attention import StripAttention
from segarch.layers.checks import check_positive_int, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.nets._context import FCNHead
from segarch.zoo import register

__all__ = ["AttaNet", "AttentionFusion"]


class AttentionFusion(nn.Module):
    """AttaNet's Attention Fusion Module: a learned channel-wise blend of two levels.

    ``α = sigmoid(BN(W · GAP(conv([f16, up(f32)]))))``; output ``conv(α·up(conv(f32)) + (1 - α)·conv(f16))``.
    The last ``α`` (``(B, C, 1, …)``) is kept in ``alpha``.
    """

    def __init__(self, spatial_dims: int, low_channels: int, high_channels: int, out_channels: int) -> None:
        super().__init__()
        self.low = ConvNormAct(spatial_dims, low_channels, out_channels, 3)
        self.high = ConvNormAct(spatial_dims, high_channels, out_channels, 3)
        self.mix = ConvNormAct(spatial_dims, out_channels + high_channels, out_channels, 1)
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.weight = PooledConvNormAct(spatial_dims, out_channels, out_channels, act="sigmoid")
        self.fuse = ConvNormAct(spatial_dims, out_channels, out_channels, 3)
        self.alpha: torch.Tensor | None = None

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        size = low.shape[2:]
        low = self.low(low)
        alpha = self.weight(self.pool(self.mix(torch.cat([low, resize_to(high, size)], dim=1))))
        self.alpha = alpha.detach()
        high = resize_to(self.high(high) * alpha, size)
        return self.fuse(low * (1 - alpha) + high)


@register(
    name="attanet",
    full_name="AttaNet (ResNet-18)",
    paper="AttaNet: Attention-Augmented Network for Fast and Accurate Scene Parsing",
    reference="arXiv:2103.05930",
    year=2021,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "depth": 18, "channels": 128},
    paper_params=12.64,
    paper_params_source=(
        "The paper gives no count for the ResNet-18 model; pinned to ours (19 Cityscapes classes): ResNet-18 trunk "
        "11.18M + attention fusion 1.13M + strip attention 0.03M + refinement and output head 0.30M."
    ),
    test_config={"base_width": 4, "channels": 8, "key_channels": 4},
    notes=(
        "'AF-Net' read as AttaNet, whose Attention Fusion Module (AFM) the name points at. ResNet-18 trunk (the "
        "paper's main model), fusion at 128 channels, strip attention with 64 query/key channels, as in the "
        "authors' code; its two auxiliary heads (training only) are left out. In 3D the strips run along H."
    ),
)
class AttaNet(SegmentationNet):
    """AttaNet on a ResNet encoder.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        depth: ResNet depth (18 in the paper's main model).
        base_width: ResNet stem width (64).
        channels: fusion/attention channels (128).
        key_channels: strip attention query/key channels (64).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; sizes must be multiples of 32.

    Examples::

        >>> net = AttaNet(3, 1, 2, base_width=8, channels=16, key_channels=8)
        >>> net(torch.zeros(1, 1, 32, 64, 64)).shape
        torch.Size([1, 2, 32, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int = 18,
                 base_width: int = 64, channels: int = 128, key_channels: int = 64) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "AttaNet")
        check_positive_int(channels, "channels", "AttaNet")
        check_positive_int(key_channels, "key_channels", "AttaNet")
        self.spatial_dims, self.size_divisor = spatial_dims, 32
        self.encoder = ResNetEncoder(spatial_dims, in_channels, depth=depth,
                                     base_width=check_positive_int(base_width, "base_width", "AttaNet"))
        enc = self.encoder.out_channels
        self.afm = AttentionFusion(spatial_dims, enc[3], enc[4], channels)
        self.sam = StripAttention(spatial_dims, channels, key_channels)
        self.refine = ConvNormAct(spatial_dims, channels, channels, 3)
        self.classifier = FCNHead(spatial_dims, channels, channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        features = self.encoder(x)
        fused = self.sam(self.afm(features[3], features[4]))  # stride 16
        out = self.refine(resize_to(fused, features[2].shape[2:]))  # stride 8
        return resize_to(self.classifier(out), x.shape[2:])
