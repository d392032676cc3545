"""Dense blocks (Huang et al. 2017, DenseNet, arXiv:1608.06993) as FC-DenseNet uses them (arXiv:1611.09326).

A dense layer is BN → ReLU → 3×3 convolution → dropout producing ``growth_rate`` new maps; a dense
block feeds each layer the concatenation of the block's input and every earlier layer's maps.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Pool

from segarch.blocks.conv import NormActConv

__all__ = ["DenseLayer", "DenseBlock", "TransitionDown"]


class DenseLayer(NormActConv):
    """BN → ReLU → ``kernel_size`` convolution (``growth_rate`` maps) → dropout (Jégou et al., Table 1).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        growth_rate: output channels.
        kernel_size: odd convolution kernel (3 in FC-DenseNet, 1 in its transitions).
        dropout: dropout probability (0.2 in FC-DenseNet).
    """

    def __init__(self, spatial_dims: int, in_channels: int, growth_rate: int, kernel_size: int = 3,
                 dropout: float = 0.2) -> None:
        super().__init__(spatial_dims, in_channels, growth_rate, kernel_size, dropout=dropout)


class DenseBlock(nn.Module):
    """``layers`` dense layers, each seeing the block input and all earlier layers' maps.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        layers: number of dense layers.
        growth_rate: maps each layer adds.
        dropout: dropout of each layer.
        keep_input: return the input concatenated with the new maps (``in_channels + layers * growth_rate``
            channels; FC-DenseNet's down path) or only the new maps (``layers * growth_rate``; its up path,
            which would otherwise grow without bound).
    """

    def __init__(self, spatial_dims: int, in_channels: int, layers: int, growth_rate: int, dropout: float = 0.2,
                 keep_input: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            DenseLayer(spatial_dims, in_channels + i * growth_rate, growth_rate, dropout=dropout) for i in range(layers)
        )
        self.keep_input = keep_input
        self.out_channels = (in_channels if keep_input else 0) + layers * growth_rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        new = []
        for layer in self.layers:
            new.append(layer(torch.cat([x, *new], dim=1)))
        return torch.cat([x, *new] if self.keep_input else new, dim=1)


class TransitionDown(nn.Sequential):
    """BN → ReLU → 1×1 convolution (same channels) → dropout → 2×2 max-pooling (Jégou et al., Table 1)."""

    def __init__(self, spatial_dims: int, channels: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.add_module("layer", DenseLayer(spatial_dims, channels, channels, kernel_size=1, dropout=dropout))
        self.add_module("pool", Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2))
