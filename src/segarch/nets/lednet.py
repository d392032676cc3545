"""LEDNet (Wang et al., ICIP 2019, "LEDNet: A Lightweight Encoder-Decoder Network for Real-Time Semantic
Segmentation", arXiv:1905.02423).

The encoder (Table 1) stacks split-shuffle-non-bottleneck (SS-nbt) units: the input is split into
two halves, each filtered by two factorised 3×3 convolutions (3×1 then 1×3 on one half, 1×3 then
3×1 on the other; the second pair dilated), concatenated, added to the input and channel-shuffled.
Three down-sampling units (a 3×3 stride-2 convolution concatenated with max-pooling, as in ENet)
bring it to 1/8. The decoder is an attention pyramid network (APN): 3×3, 5×5 and 7×7 stride-2
convolutions build a one-channel pyramid down to 1/64, merged coarse to fine into an attention map
that multiplies a 1×1 projection of the features to the classes, plus a global-pooling branch.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv, Dropout, Norm, Pool

from segarch.blocks.bisenet_fusion import global_pool
from segarch.blocks.conv import ConvNormAct
from segarch.blocks.factorized import FactorizedConv
from segarch.blocks.pooled_conv import PooledConvNormAct
from segarch.blocks.resize import resize_to
from segarch.blocks.shuffle import channel_shuffle
from segarch.layers.checks import check_features, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["LEDNet", "SSnbt", "DownsamplingUnit", "AttentionPyramid"]

# Dilations of the SS-nbt units at 1/8 (Table 1).
LEDNET_DILATIONS = (1, 2, 5, 9, 2, 5, 9, 17)


class DownsamplingUnit(nn.Module):
    """Concatenate a 3×3 stride-2 convolution (``out - in`` filters) with 2×2 max-pooling; BN, ReLU."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        if out_channels <= in_channels:
            raise ValueError(f"LEDNet down-sampling unit: `out_channels` must exceed `in_channels`, got "
                             f"{in_channels} → {out_channels}.")
        self.conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels - in_channels, 3, stride=2, padding=1)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)
        self.norm = Norm[Norm.BATCH, spatial_dims](out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(torch.cat([self.conv(x), self.pool(x)], dim=1)))


class SSnbt(nn.Module):
    """The split-shuffle-non-bottleneck unit (Fig. 2d).

    Args:
        spatial_dims: 2 or 3.
        channels: input and output channels (even: split into two halves).
        dilation: dilation of each branch's second factorised convolution.
        dropout: spatial dropout on the concatenated branches.
    """

    def __init__(self, spatial_dims: int, channels: int, dilation: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if channels % 2:
            raise ValueError(f"SS-nbt: `channels` must be even (split in two halves), got {channels!r}.")
        half = channels // 2
        axes = tuple(range(spatial_dims))

        def branch(order):
            return nn.Sequential(
                FactorizedConv(spatial_dims, half, half, 3, order=order, inner_act="relu", act="relu", bias=True),
                FactorizedConv(spatial_dims, half, half, 3, dilation=dilation, order=order, inner_act="relu",
                               act=None, bias=True),
            )

        self.left = branch(axes)
        self.right = branch(tuple(reversed(axes)))  # the other half filters the axes in the opposite order
        self.dropout = Dropout[Dropout.DROPOUT, spatial_dims](dropout)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        y = self.dropout(torch.cat([self.left(a), self.right(b)], dim=1))
        return channel_shuffle(self.act(y + x), 2)


class AttentionPyramid(nn.Module):
    """LEDNet's attention pyramid network (Fig. 3).

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the encoder's 1/8 features.
        out_channels: classes.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        d = spatial_dims
        self.project = ConvNormAct(d, in_channels, out_channels, 1)
        self.global_branch = PooledConvNormAct(d, in_channels, out_channels)
        self.down1 = ConvNormAct(d, in_channels, 1, 7, stride=2)
        self.down2 = ConvNormAct(d, 1, 1, 5, stride=2)
        self.down3 = nn.Sequential(ConvNormAct(d, 1, 1, 3, stride=2), ConvNormAct(d, 1, 1, 3))
        self.conv2 = ConvNormAct(d, 1, 1, 5)
        self.conv1 = ConvNormAct(d, 1, 1, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.down1(x)
        d2 = self.down2(d1)
        d3 = self.down3(d2)
        m2 = self.conv2(d2) + resize_to(d3, d2.shape[2:])
        m1 = self.conv1(d1) + resize_to(m2, d1.shape[2:])
        attention = resize_to(m1, x.shape[2:])
        return self.project(x) * attention + self.global_branch(global_pool(x))  # the pooled branch broadcasts


@register(
    name="lednet", full_name="LEDNet",
    paper="LEDNet: A Lightweight Encoder-Decoder Network for Real-Time Semantic Segmentation",
    reference="arXiv:1905.02423", year=2019, task="semantic", spatial_dims=(2, 3), size_divisor=8,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19},
    paper_params=0.94,
    paper_params_source="Wang et al. 2019, Cityscapes comparison table: LEDNet 0.94M parameters.",
    test_config={"features": (8, 16, 32), "blocks": (2, 1), "dilations": (2, 5, 9), "dropout": 0.0},
    notes="Table 1 and Fig. 3. The APN's pyramid carries one channel (an attention map), its convolutions have BN and "
          "ReLU, and its coarse levels are resized to the finer grids, so inputs need only be multiples of 8 (the "
          "1/64 level is ceil-rounded). The first down-sampling unit needs in_channels < 32. 3D: the factorised "
          "convolutions become one 3-long convolution per axis.",
)
class LEDNet(SegmentationNet):
    """LEDNet for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        features: widths at 1/2, 1/4, 1/8 (``(32, 64, 128)``).
        blocks: SS-nbt units at 1/2 and 1/4 (``(3, 2)``).
        dilations: one SS-nbt unit at 1/8 per dilation (``LEDNET_DILATIONS``: 1, 2, 5, 9, 2, 5, 9, 17).
        dropout: spatial dropout of the SS-nbt units (0.03 at 1/2 and 1/4 and 0.3 at 1/8 in the authors'
            training; here one probability, scaled by 0.1 before 1/8).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 8. Training
    on one image needs an input longer than 64 along one axis: the attention pyramid's 1/64 level is
    batch-normalised (a clear ``ValueError`` says so).

    Examples::

        >>> net = LEDNet(2, 3, 19)
        >>> net(torch.zeros(1, 3, 128, 128)).shape
        torch.Size([1, 19, 128, 128])
    """

    norm_stride = 64  # the attention pyramid's coarsest level (1/64) is batch-normalised

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, features=(32, 64, 128),
                 blocks=(3, 2), dilations=LEDNET_DILATIONS, dropout: float = 0.3) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "LEDNet")
        f1, f2, f3 = check_features(features, 3, "LEDNet")
        b1, b2 = check_features(blocks, 2, "LEDNet", "blocks")
        dilations = check_features(dilations, None, "LEDNet", "dilations")
        d = spatial_dims
        self.spatial_dims, self.size_divisor = spatial_dims, 8
        self.encoder = nn.Sequential(
            DownsamplingUnit(d, in_channels, f1), *[SSnbt(d, f1, 1, dropout / 10) for _ in range(b1)],
            DownsamplingUnit(d, f1, f2), *[SSnbt(d, f2, 1, dropout / 10) for _ in range(b2)],
            DownsamplingUnit(d, f2, f3), *[SSnbt(d, f3, r, dropout) for r in dilations],
        )
        self.decoder = AttentionPyramid(d, f3, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        return resize_to(self.decoder(self.encoder(x)), x.shape[2:])
