"""Depthwise(-separable) convolutions (Chollet 2017, arXiv:1610.02357; Howard et al. 2017, arXiv:1704.04861).

A depthwise convolution filters each channel on its own (``groups = channels``); a pointwise 1×1
convolution then mixes channels. The real-time networks (Fast-SCNN, ContextNet, BiSeNet's
Xception39, LiteSeg, ESPNetv2, ...) use them to cut the cost of 3×3 convolutions.
"""

from __future__ import annotations

from torch import nn

from segarch.blocks.conv import ActSpec, ConvNormAct, NormSpec

__all__ = ["DepthwiseConv", "SeparableConv"]


class DepthwiseConv(ConvNormAct):
    """A depthwise convolution (one filter per channel), then optional normalisation and activation.

    Args:
        spatial_dims: 2 or 3.
        channels: input and output channels.
        kernel_size: kernel size.
        stride: stride.
        dilation: dilation.
        norm: normalisation (see :class:`ConvNormAct`).
        act: activation (``None`` for a linear depthwise filter).
    """

    def __init__(self, spatial_dims: int, channels: int, kernel_size: int = 3, stride: int = 1, dilation: int = 1,
                 norm: NormSpec = "batch", act: ActSpec = None) -> None:
        super().__init__(spatial_dims, channels, channels, kernel_size, stride=stride, dilation=dilation,
                         groups=channels, norm=norm, act=act)


class SeparableConv(nn.Sequential):
    """Depthwise ``kernel_size`` convolution, then a pointwise 1×1 convolution.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel of the depthwise convolution.
        stride: stride of the depthwise convolution.
        dilation: dilation of the depthwise convolution.
        norm: normalisation after the pointwise convolution.
        act: activation after the pointwise convolution.
        depthwise_norm: normalisation after the depthwise convolution (Fast-SCNN's "DSConv" has one;
            Xception's separable convolution does not).
        depthwise_act: activation after the depthwise convolution.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, dilation: int = 1, norm: NormSpec = "batch", act: ActSpec = "relu",
                 depthwise_norm: NormSpec = "batch", depthwise_act: ActSpec = "relu") -> None:
        super().__init__()
        self.add_module("depthwise", DepthwiseConv(spatial_dims, in_channels, kernel_size, stride, dilation,
                                                   norm=depthwise_norm, act=depthwise_act))
        self.add_module("pointwise", ConvNormAct(spatial_dims, in_channels, out_channels, 1, norm=norm, act=act))
