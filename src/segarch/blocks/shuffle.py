"""Channel shuffle (Zhang et al. 2018, "ShuffleNet", arXiv:1707.01083).

After grouped or split convolutions, interleaving the channels of the groups lets information
flow between them in the next layer (used by LEDNet's split-shuffle units).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["channel_shuffle", "ChannelShuffle"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Reshape channels to ``(groups, C // groups)``, transpose and flatten: channel ``g·n + i`` moves to
    ``i·groups + g``."""
    batch, channels = x.shape[:2]
    if channels % groups:
        raise ValueError(f"`groups` must divide the {channels} channels, got {groups!r}.")
    spatial = x.shape[2:]
    x = x.reshape(batch, groups, channels // groups, *spatial).transpose(1, 2)
    return x.reshape(batch, channels, *spatial)


class ChannelShuffle(nn.Module):
    """Module form of :func:`channel_shuffle`."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return channel_shuffle(x, self.groups)
