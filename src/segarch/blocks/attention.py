"""Additive attention gate (Oktay et al. 2018, "Attention U-Net", arXiv:1804.03999, Fig. 2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.blocks.conv import ConvNormAct
from segarch.blocks.resize import resize_to

__all__ = ["AttentionGate"]


class AttentionGate(nn.Module):
    """Gate skip features ``x`` with coefficients computed from ``x`` and a coarser gating signal ``g``.

    ``alpha = sigmoid(psi(relu(W_x x + W_g g)))``, computed on the gating signal's grid: ``W_x`` is a
    convolution with kernel and stride ``subsample`` (so ``x`` meets ``g`` at its resolution), ``W_g``
    and ``psi`` are 1×1 convolutions. ``alpha`` is resampled to ``x``'s grid, multiplies ``x``, and a
    1×1 convolution with batch norm follows, as in the authors' grid-attention gate.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the skip features ``x``.
        gating_channels: channels of the gating signal ``g``.
        inter_channels: channels of the intermediate space ``F_int``.
        subsample: the resolution ratio between ``x`` and ``g``.

    Returns (from ``forward(x, g)``): the gated features (shape of ``x``) and the attention map
    ``alpha`` (one channel, ``x``'s spatial shape).
    """

    def __init__(self, spatial_dims: int, in_channels: int, gating_channels: int, inter_channels: int,
                 subsample: int = 2) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.theta_x = conv(in_channels, inter_channels, kernel_size=subsample, stride=subsample, bias=False)
        self.phi_g = conv(gating_channels, inter_channels, kernel_size=1, bias=True)
        self.psi = conv(inter_channels, 1, kernel_size=1, bias=True)
        self.out = ConvNormAct(spatial_dims, in_channels, in_channels, kernel_size=1, norm="batch", act=None)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        theta = self.theta_x(x)
        phi = resize_to(self.phi_g(g), theta.shape[2:])
        alpha = torch.sigmoid(self.psi(F.relu(theta + phi)))
        alpha = resize_to(alpha, x.shape[2:])
        return self.out(alpha * x), alpha
