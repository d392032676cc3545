"""Factorised (asymmetric) convolutions: a k×k(×k) filter split into one 1-D filter per axis.

ENet's "asymmetric" bottlenecks (5×1 then 1×5) and the non-bottleneck units of ERFNet/LEDNet
(3×1 then 1×3) use them; in 3D the same idea gives k×1×1, 1×k×1 and 1×1×k.
"""

from __future__ import annotations

from torch import nn
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer, get_norm_layer

from segarch.blocks.conv import ActSpec, NormSpec

__all__ = ["FactorizedConv", "axis_kernel"]


def axis_kernel(spatial_dims: int, axis: int, size: int) -> tuple[int, ...]:
    """A kernel shape that is ``size`` along ``axis`` and 1 elsewhere."""
    return tuple(size if a == axis else 1 for a in range(spatial_dims))


class FactorizedConv(nn.Sequential):
    """One 1-D convolution per spatial axis, then optional normalisation and activation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: the 1-D kernel length.
        dilation: dilation along each axis.
        order: the axes in the order they are filtered (``None``: axis 0, then 1, ...); LEDNet's two
            branches use opposite orders.
        inner_act: activation between the 1-D convolutions (ERFNet/LEDNet put a ReLU there; ENet none).
        norm: normalisation after the last 1-D convolution.
        act: activation after the normalisation.
        bias: whether the convolutions have biases (default: only without normalisation).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
                 dilation: int = 1, order: tuple[int, ...] | None = None, inner_act: ActSpec = None,
                 norm: NormSpec = "batch", act: ActSpec = "relu", bias: bool | None = None) -> None:
        super().__init__()
        order = tuple(range(spatial_dims)) if order is None else tuple(order)
        if sorted(order) != list(range(spatial_dims)):
            raise ValueError(f"`order` must be a permutation of {tuple(range(spatial_dims))}, got {order!r}.")
        conv = Conv[Conv.CONV, spatial_dims]
        channels = in_channels
        for i, axis in enumerate(order):
            last = i == len(order) - 1
            pad = tuple(dilation * (kernel_size - 1) // 2 if a == axis else 0 for a in range(spatial_dims))
            dil = tuple(dilation if a == axis else 1 for a in range(spatial_dims))
            has_bias = (norm is None or not last) if bias is None else bias
            self.add_module(f"conv{i}", conv(channels, out_channels, axis_kernel(spatial_dims, axis, kernel_size),
                                             padding=pad, dilation=dil, bias=has_bias))
            channels = out_channels
            if not last and inner_act is not None:
                self.add_module(f"act{i}", get_act_layer(inner_act))
        if norm is not None:
            self.add_module("norm", get_norm_layer(norm, spatial_dims=spatial_dims, channels=out_channels))
        if act is not None:
            self.add_module("act", get_act_layer(act))
