"""Convolution → normalisation → activation, its pre-activation order, and the two-convolution unit of U-Net-like
nets."""

from __future__ import annotations

from torch import nn
from monai.networks.layers.factories import Conv, Dropout
from monai.networks.layers.utils import get_act_layer, get_norm_layer

__all__ = ["ConvNormAct", "NormActConv", "DoubleConv"]

NormSpec = str | tuple | None
ActSpec = str | tuple | None


class ConvNormAct(nn.Sequential):
    """One convolution, then an optional normalisation, activation and dropout.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: convolution kernel size; padding keeps the spatial size (for stride 1).
        stride: convolution stride.
        dilation: convolution dilation (or one per spatial axis).
        groups: convolution groups.
        norm: a MONAI norm name or ``(name, kwargs)`` such as ``"batch"`` or ``("group", {"num_groups": 8})``;
            ``None`` for no normalisation.
        act: a MONAI activation name or ``(name, kwargs)``; ``None`` for no activation.
        dropout: dropout probability after the activation (0 for none).
        bias: whether the convolution has a bias; by default only when there is no normalisation
            (a bias before a normalisation is redundant).
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        dilation: int = 1,
        groups: int = 1,
        norm: NormSpec = "batch",
        act: ActSpec = "relu",
        dropout: float = 0.0,
        bias: bool | None = None,
    ) -> None:
        super().__init__()
        if bias is None:
            bias = norm is None
        # a tuple of dilations (one per axis, DPC's anisotropic rates) pads each axis by its own rate
        padding = (tuple(r * (kernel_size - 1) // 2 for r in dilation) if isinstance(dilation, (tuple, list))
                   else dilation * (kernel_size - 1) // 2)
        conv_type = Conv[Conv.CONV, spatial_dims]
        self.add_module(
            "conv",
            conv_type(
                in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                dilation=dilation, groups=groups, bias=bias,
            ),
        )
        if norm is not None:
            self.add_module("norm", get_norm_layer(norm, spatial_dims=spatial_dims, channels=out_channels))
        if act is not None:
            self.add_module("act", get_act_layer(act))
        if dropout:
            self.add_module("dropout", Dropout[Dropout.DROPOUT, spatial_dims](dropout))


class NormActConv(nn.Sequential):
    """Batch norm → ReLU → convolution → optional dropout: the pre-activation unit of DenseNet
    (Huang et al. 2017, arXiv:1608.06993) and FC-DenseNet (Jégou et al. 2017, arXiv:1611.09326).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (normalised before the convolution).
        out_channels: output channels.
        kernel_size: convolution kernel size; padding keeps the spatial size.
        dilation: convolution dilation.
        bias: whether the convolution has a bias.
        dropout: dropout probability after the convolution (0 for none).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                 dilation: int = 1, bias: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        self.add_module("norm", get_norm_layer("batch", spatial_dims=spatial_dims, channels=in_channels))
        self.add_module("act", nn.ReLU(inplace=True))  # in place is safe: it acts on the norm's output
        self.add_module("conv", Conv[Conv.CONV, spatial_dims](
            in_channels, out_channels, kernel_size, padding=dilation * (kernel_size - 1) // 2, dilation=dilation,
            bias=bias))
        if dropout:
            self.add_module("dropout", Dropout[Dropout.DROPOUT, spatial_dims](dropout))


class DoubleConv(nn.Sequential):
    """Two 3×3 (×3) convolutions, each followed by norm and activation: the unit of U-Net's levels.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels of both convolutions (or of the second, when
            ``mid_channels`` is given).
        mid_channels: channels between the two convolutions; defaults to ``out_channels``.
        norm: normalisation after each convolution (see :class:`ConvNormAct`).
        act: activation after each convolution.
        dropout: dropout after each activation.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        mid_channels: int | None = None,
        norm: NormSpec = "batch",
        act: ActSpec = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        mid_channels = out_channels if mid_channels is None else mid_channels
        self.add_module("conv1", ConvNormAct(spatial_dims, in_channels, mid_channels, norm=norm, act=act,
                                             dropout=dropout))
        self.add_module("conv2", ConvNormAct(spatial_dims, mid_channels, out_channels, norm=norm, act=act,
                                             dropout=dropout))
