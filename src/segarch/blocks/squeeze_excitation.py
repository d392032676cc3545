"""Channel gating by global context (Hu et al. 2018, "Squeeze-and-Excitation Networks", arXiv:1709.01507).

Global average pooling, a bottleneck of two fully connected layers, and a sigmoid that rescales
each channel. CGNet's global context extractor ``f_glo`` and OSNet's unified aggregation gate
are this block.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SqueezeExcitation"]


class SqueezeExcitation(nn.Module):
    """Rescale channels by ``sigmoid(W2 relu(W1 mean(x)))``.

    Args:
        channels: input and output channels.
        reduction: the bottleneck is ``channels // reduction`` wide (at least 1).
        bias: whether the two layers have biases.
        hidden: the bottleneck's width, instead of ``channels // reduction`` (EfficientNet sizes it from the
            block's input, before the expansion).
        act: the bottleneck's activation module class (``nn.ReLU``; EfficientNet: ``nn.SiLU``, i.e. Swish).

    ``forward(x)`` returns ``x`` times the gate; ``gate(x)`` returns the gate ``(B, C, 1, ...)`` alone.
    Works for any number of spatial dimensions.
    """

    def __init__(self, channels: int, reduction: int = 16, bias: bool = True, hidden: int | None = None,
                 act: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        hidden = max(1, channels // reduction) if hidden is None else hidden
        self.fc = nn.Sequential(nn.Linear(channels, hidden, bias=bias), act(inplace=True),
                                nn.Linear(hidden, channels, bias=bias), nn.Sigmoid())

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(x.flatten(2).mean(-1))
        return weights.reshape(*weights.shape, *([1] * (x.ndim - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)
