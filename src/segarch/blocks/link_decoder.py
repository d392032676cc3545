"""LinkNet's decoder block (Chaurasia and Culurciello 2017, arXiv:1707.03718, Fig. 3), also CE-Net's.

A 1×1 convolution to a quarter of the input channels, a 3×3 full (transposed) convolution that
up-samples, and a 1×1 convolution to the output channels, each with batch norm and ReLU. The cheap
bottleneck keeps the decoder at a few percent of the network's parameters.
"""

from __future__ import annotations

from torch import nn
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_norm_layer

from segarch.blocks.conv import ConvNormAct

__all__ = ["LinkDecoderBlock", "FullConvNormAct"]


class FullConvNormAct(nn.Sequential):
    """A 3×3 transposed convolution up-sampling by ``scale`` (1 or 2) exactly, then batch norm and ReLU.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        scale: 1 (a plain 3×3 convolution, written as a full convolution) or 2.
        kernel_size: odd kernel size (3 in LinkNet).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, scale: int = 2,
                 kernel_size: int = 3) -> None:
        super().__init__()
        if scale not in (1, 2):
            raise ValueError(f"`scale` must be 1 or 2 for FullConvNormAct, got {scale!r}.")
        self.add_module("conv", Conv[Conv.CONVTRANS, spatial_dims](
            in_channels, out_channels, kernel_size, stride=scale, padding=kernel_size // 2,
            output_padding=scale - 1, bias=False))
        self.add_module("norm", get_norm_layer("batch", spatial_dims=spatial_dims, channels=out_channels))
        self.add_module("act", nn.ReLU(inplace=True))


class LinkDecoderBlock(nn.Sequential):
    """1×1 conv (``in → in/4``), 3×3 full conv up-sampling by ``scale``, 1×1 conv (``in/4 → out``).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels ``m``.
        out_channels: output channels ``n``.
        scale: up-sampling factor of the full convolution, 1 or 2.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, scale: int = 2) -> None:
        super().__init__()
        mid = max(1, in_channels // 4)
        self.add_module("reduce", ConvNormAct(spatial_dims, in_channels, mid, 1))
        self.add_module("up", FullConvNormAct(spatial_dims, mid, mid, scale))
        self.add_module("expand", ConvNormAct(spatial_dims, mid, out_channels, 1))
