"""Atrous spatial pyramid pooling: DeepLab's ASPP (v2 and v3) and DenseASPP's densely connected form.

- Chen et al. 2016, "DeepLab: Semantic Image Segmentation with Deep Convolutional Nets, Atrous
  Convolution, and Fully Connected CRFs", arXiv:1606.00915 (ASPP as parallel classifiers, summed).
- Chen et al. 2017, "Rethinking Atrous Convolution for Semantic Image Segmentation", arXiv:1706.05587
  (ASPP with a 1×1 branch, image-level pooling, batch norm, concatenation and a 1×1 projection).
- Yang et al. 2018, "DenseASPP for Semantic Segmentation in Street Scenes", CVPR 2018 (atrous layers
  with growing rates, each fed with the input and all previous layers' outputs).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_norm_layer

from segarch.blocks.conv import ConvNormAct
from segarch.blocks.pooled_conv import PooledConvNormAct
from segarch.blocks.separable import SeparableConv
from segarch.layers.checks import check_positive_ints

__all__ = ["ASPP", "ImagePooling", "DenseASPP"]


class ImagePooling(nn.Module):
    """Image-level features: global average pooling, a 1×1 conv-norm-act, broadcast back to the input's grid.

    The normalisation is a :class:`~segarch.blocks.pooled_conv.PooledBatchNorm`, so the branch also
    trains at batch size 1.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, act="relu") -> None:
        super().__init__()
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.conv = PooledConvNormAct(spatial_dims, in_channels, out_channels, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A 1×1 map up-sampled bilinearly is a constant: expanding it is the same and cheaper.
        return self.conv(self.pool(x)).expand(-1, -1, *x.shape[2:])


class ASPP(nn.Module):
    """Parallel atrous convolutions at several rates over the same features.

    Two fusions cover the DeepLab versions:

    - ``fusion="sum"`` (DeepLab v2, "ASPP-L"): each branch is a 3×3 convolution with one rate straight to
      ``out_channels`` (the classes), with bias, no normalisation; the branches' outputs are summed.
    - ``fusion="concat"`` (DeepLab v3/v3+): a 1×1 branch, one 3×3 branch per rate and, optionally,
      image-level pooling, each with ``out_channels`` channels, batch norm and ReLU; their concatenation
      is projected back to ``out_channels`` by a 1×1 conv-norm-act.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: channels of every branch and of the output.
        rates: dilation rates of the 3×3 branches (v2: 6, 12, 18, 24; v3 at output stride 16: 6, 12, 18).
        fusion: ``"sum"`` or ``"concat"``.
        image_pooling: add the image-level branch (``concat`` only).
        norm: normalisation of the ``concat`` branches and projection.
        dropout: dropout after the projection (``concat`` only).
        separable: the 3×3 branches are depthwise-separable (depthwise atrous 3×3 → BN → ReLU → pointwise 1×1 →
            BN → ReLU), DeepLab v3+'s choice with Xception (``concat`` only).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        rates: Sequence[int] = (6, 12, 18),
        fusion: str = "concat",
        image_pooling: bool = True,
        norm="batch",
        dropout: float = 0.0,
        separable: bool = False,
    ) -> None:
        super().__init__()
        self.rates = check_positive_ints(rates, "rates")
        self.separable = bool(separable)
        if fusion not in ("sum", "concat"):
            raise ValueError(f"`fusion` must be 'sum' or 'concat' for ASPP, got {fusion!r}.")
        self.fusion = fusion
        branches: list[nn.Module] = []
        if fusion == "sum":
            conv = Conv[Conv.CONV, spatial_dims]
            branches = [conv(in_channels, out_channels, 3, padding=r, dilation=r, bias=True) for r in self.rates]
            self.image_pooling = False
            self.project = None
        else:
            branches.append(ConvNormAct(spatial_dims, in_channels, out_channels, kernel_size=1, norm=norm))
            if self.separable:
                branches += [SeparableConv(spatial_dims, in_channels, out_channels, 3, dilation=r, norm=norm,
                                           depthwise_norm=norm) for r in self.rates]
            else:
                branches += [ConvNormAct(spatial_dims, in_channels, out_channels, 3, dilation=r, norm=norm)
                             for r in self.rates]
            self.image_pooling = bool(image_pooling)
            if self.image_pooling:
                branches.append(ImagePooling(spatial_dims, in_channels, out_channels))
            self.project = ConvNormAct(spatial_dims, len(branches) * out_channels, out_channels, kernel_size=1,
                                       norm=norm, dropout=dropout)
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        if self.fusion == "sum":
            return torch.stack(outs).sum(0)
        return self.project(torch.cat(outs, dim=1))


class _DenseASPPLayer(nn.Sequential):
    """One DenseASPP layer: norm-act, 1×1 reduction, norm-act, 3×3 atrous convolution (pre-activation, as DenseNet)."""

    def __init__(self, spatial_dims: int, in_channels: int, mid_channels: int, out_channels: int, rate: int,
                 dropout: float) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.add_module("norm1", get_norm_layer("batch", spatial_dims=spatial_dims, channels=in_channels))
        self.add_module("act1", nn.ReLU(inplace=True))
        self.add_module("conv1", conv(in_channels, mid_channels, 1, bias=False))
        self.add_module("norm2", get_norm_layer("batch", spatial_dims=spatial_dims, channels=mid_channels))
        self.add_module("act2", nn.ReLU(inplace=True))
        self.add_module("conv2", conv(mid_channels, out_channels, 3, padding=rate, dilation=rate, bias=False))
        if dropout:
            self.add_module("dropout", nn.Dropout(dropout))


class DenseASPP(nn.Module):
    """Densely connected atrous layers (Yang et al. 2018, Fig. 2).

    Layer ``i`` sees the input concatenated with the outputs of layers ``0..i-1``; rates grow (3, 6,
    12, 18, 24 in the paper) so the stack covers a large, densely sampled receptive field. The output is
    the input concatenated with every layer's output: ``in_channels + len(rates) * out_channels`` channels.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        mid_channels: channels of each layer's 1×1 reduction (``d_feature0``; 512 for DenseNet-161).
        out_channels: channels each layer adds (``d_feature1``; 128 for DenseNet-161).
        rates: dilation rates, in order.
        dropout: dropout after each layer (0.1 in the authors' configuration).
    """

    def __init__(self, spatial_dims: int, in_channels: int, mid_channels: int = 512, out_channels: int = 128,
                 rates: Sequence[int] = (3, 6, 12, 18, 24), dropout: float = 0.0) -> None:
        super().__init__()
        self.rates = check_positive_ints(rates, "rates")
        self.layers = nn.ModuleList(
            _DenseASPPLayer(spatial_dims, in_channels + i * out_channels, mid_channels, out_channels, r, dropout)
            for i, r in enumerate(self.rates)
        )
        self.out_channels = in_channels + len(self.rates) * out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x
