"""ENet (Paszke et al. 2016, "ENet: A Deep Neural Network Architecture for Real-Time Semantic Segmentation",
arXiv:1606.02147).

A large encoder and a small decoder (Table 1). The initial block concatenates a 3×3 stride-2
convolution (13 filters for RGB) with max-pooled input. Bottlenecks are ResNet-like: a 1×1
projection (2×2 stride 2 when down-sampling) to a quarter of the width, a main convolution
(regular 3×3, dilated 3×3 or asymmetric 5×1 + 1×5), a 1×1 expansion and spatial dropout, added to
the main branch (max-pooling with zero-padded channels when down-sampling, max-unpooling with the
encoder's indices when up-sampling). PReLU in the encoder, ReLU in the decoder, no biases.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv, Dropout, Norm, Pool

from segarch.blocks.conv import ConvNormAct
from segarch.blocks.factorized import FactorizedConv
from segarch.layers.checks import check_features, check_spatial_dims
from segarch.layers.exportable import MaxUnpool
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["ENet", "ENetBottleneck", "ENetInitialBlock", "ENetUpsamplingBottleneck"]


def _act(kind: str, channels: int) -> nn.Module:
    return nn.PReLU(channels) if kind == "prelu" else nn.ReLU(inplace=True)


class ENetInitialBlock(nn.Module):
    """Concatenate a 3×3 stride-2 convolution with 2×2 max-pooled input, then BN and PReLU.

    The convolution has ``out_channels - in_channels`` filters (13 for RGB and 16 outputs).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int = 16) -> None:
        super().__init__()
        if in_channels >= out_channels:
            raise ValueError(f"`in_channels` must be below the initial width {out_channels} for ENet "
                             f"(its initial block concatenates the pooled input), got {in_channels!r}.")
        self.conv = Conv[Conv.CONV, spatial_dims](in_channels, out_channels - in_channels, 3, stride=2, padding=1,
                                                  bias=False)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)
        self.norm = Norm[Norm.BATCH, spatial_dims](out_channels)
        self.act = nn.PReLU(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(torch.cat([self.conv(x), self.pool(x)], dim=1)))


class ENetBottleneck(nn.Module):
    """ENet's encoder/decoder bottleneck (Fig. 2b).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (larger than ``in_channels`` only when down-sampling).
        kind: ``"regular"`` (3×3), ``"dilated"`` (3×3 with ``dilation``) or ``"asymmetric"``
            (a 5-long 1-D convolution per axis).
        dilation: dilation of a ``"dilated"`` bottleneck.
        downsample: project with a 2×2 stride-2 convolution; the main branch max-pools (keeping the
            indices for the decoder) and zero-pads its channels.
        dropout: spatial dropout probability (0.01 before bottleneck 2.0, 0.1 after).
        act: ``"prelu"`` (encoder) or ``"relu"`` (decoder).
        ratio: the projection keeps ``in_channels // ratio`` channels (4 in the paper).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kind: str = "regular",
                 dilation: int = 1, downsample: bool = False, dropout: float = 0.1, act: str = "prelu",
                 ratio: int = 4) -> None:
        super().__init__()
        inner = max(1, in_channels // ratio)
        self.downsample = downsample
        self.pad = out_channels - in_channels
        if self.pad < 0 or (self.pad and not downsample):
            raise ValueError(f"ENet bottleneck: `out_channels` must equal `in_channels` unless down-sampling, "
                             f"got {in_channels} → {out_channels}.")
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        k = 2 if downsample else 1
        self.project = nn.Sequential(conv(in_channels, inner, k, stride=k, bias=False), norm(inner), _act(act, inner))
        if kind == "asymmetric":
            main = FactorizedConv(spatial_dims, inner, inner, kernel_size=5, act=None)
        elif kind in ("regular", "dilated"):
            main = ConvNormAct(spatial_dims, inner, inner, 3, dilation=dilation if kind == "dilated" else 1, act=None)
        else:
            raise ValueError(f"`kind` must be one of ('regular', 'dilated', 'asymmetric'), got {kind!r}.")
        self.conv = nn.Sequential(main, _act(act, inner))
        self.expand = nn.Sequential(conv(inner, out_channels, 1, bias=False), norm(out_channels))
        self.dropout = Dropout[Dropout.DROPOUT, spatial_dims](dropout)
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2, return_indices=True) if downsample else None
        self.act = _act(act, out_channels)

    def forward(self, x: torch.Tensor):
        ext = self.dropout(self.expand(self.conv(self.project(x))))
        indices = None
        if self.pool is not None:
            x, indices = self.pool(x)
        if self.pad:
            x = torch.cat([x, x.new_zeros(x.shape[0], self.pad, *x.shape[2:])], dim=1)
        out = self.act(x + ext)
        return (out, indices) if self.downsample else out


class ENetUpsamplingBottleneck(nn.Module):
    """ENet's up-sampling bottleneck: max-unpooling of a 1×1-projected main branch plus a transposed-conv branch."""

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, dropout: float = 0.1,
                 ratio: int = 4) -> None:
        super().__init__()
        inner = max(1, in_channels // ratio)
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        deconv = Conv[Conv.CONVTRANS, spatial_dims]
        self.main = nn.Sequential(conv(in_channels, out_channels, 1, bias=False), norm(out_channels))
        self.unpool = MaxUnpool(2)
        self.project = nn.Sequential(conv(in_channels, inner, 1, bias=False), norm(inner), nn.ReLU(inplace=True))
        self.up = nn.Sequential(deconv(inner, inner, 3, stride=2, padding=1, output_padding=1, bias=False),
                                norm(inner), nn.ReLU(inplace=True))
        self.expand = nn.Sequential(conv(inner, out_channels, 1, bias=False), norm(out_channels))
        self.dropout = Dropout[Dropout.DROPOUT, spatial_dims](dropout)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        main = self.unpool(self.main(x), indices)
        ext = self.dropout(self.expand(self.up(self.project(x))))
        return self.act(main + ext)


# Stages 2 and 3 (Table 1): bottleneck 2.1 … 2.8 (stage 3 repeats them without 2.0).
_STAGE = (("regular", 1), ("dilated", 2), ("asymmetric", 1), ("dilated", 4),
          ("regular", 1), ("dilated", 8), ("asymmetric", 1), ("dilated", 16))


@register(
    name="enet", full_name="ENet",
    paper="ENet: A Deep Neural Network Architecture for Real-Time Semantic Segmentation",
    reference="arXiv:1606.02147", year=2016, task="semantic", spatial_dims=(2, 3), size_divisor=8,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "features": (16, 64, 128)},
    paper_params=0.37,
    paper_params_source="Paszke et al. 2016, Table 3: ENet 0.37M parameters (SegNet 29.46M).",
    test_config={"features": (8, 16, 32), "dropout": 0.0},
    test_lr=2e-2,
    notes="Table 1 as printed; the final 'fullconv' is a 2×2 stride-2 transposed convolution (the paper gives no "
          "kernel). 3D: asymmetric 5×1/1×5 becomes one 5-long convolution per axis. in_channels must be below "
          "the initial width (the initial block concatenates the pooled input).",
)
class ENet(SegmentationNet):
    """ENet for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (fewer than ``features[0]``: the initial block concatenates them).
        out_channels: output channels (classes).
        features: widths of the initial block, stage 1 and stages 2–3 (``(16, 64, 128)`` in the paper);
            the decoder mirrors them.
        dropout: spatial dropout of stages 2–5 (stage 1 uses a tenth of it, as the paper's 0.01 / 0.1).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 8.

    Examples::

        >>> net = ENet(2, 3, 19)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 19, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, features=(16, 64, 128),
                 dropout: float = 0.1) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "ENet")
        f0, f1, f2 = check_features(features, 3, "ENet")
        self.spatial_dims, self.size_divisor = spatial_dims, 8
        d = spatial_dims
        self.initial = ENetInitialBlock(d, in_channels, f0)
        self.down1 = ENetBottleneck(d, f0, f1, downsample=True, dropout=dropout / 10)
        self.stage1 = nn.Sequential(*[ENetBottleneck(d, f1, f1, dropout=dropout / 10) for _ in range(4)])
        self.down2 = ENetBottleneck(d, f1, f2, downsample=True, dropout=dropout)
        self.stage2 = nn.Sequential(*[ENetBottleneck(d, f2, f2, k, dil, dropout=dropout) for k, dil in _STAGE])
        self.stage3 = nn.Sequential(*[ENetBottleneck(d, f2, f2, k, dil, dropout=dropout) for k, dil in _STAGE])
        self.up4 = ENetUpsamplingBottleneck(d, f2, f1, dropout=dropout)
        self.stage4 = nn.Sequential(*[ENetBottleneck(d, f1, f1, dropout=dropout, act="relu") for _ in range(2)])
        self.up5 = ENetUpsamplingBottleneck(d, f1, f0, dropout=dropout)
        self.stage5 = ENetBottleneck(d, f0, f0, dropout=dropout, act="relu")
        self.fullconv = Conv[Conv.CONVTRANS, d](f0, out_channels, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        x = self.initial(x)
        x, idx1 = self.down1(x)
        x = self.stage1(x)
        x, idx2 = self.down2(x)
        x = self.stage3(self.stage2(x))
        x = self.stage4(self.up4(x, idx2))
        x = self.stage5(self.up5(x, idx1))
        return self.fullconv(x)
