"""Spatially-adaptive normalisation (SPADE; Park et al., CVPR 2019, arXiv:1903.07291) and its residual block.

SPADE normalises activations with a parameter-free normalisation (batch statistics, no affine),
then modulates them with a scale γ and bias β that are *maps*: a small convolutional net computes
them from the label map resized to the activations' resolution, so the modulation varies from
pixel to pixel with the semantic layout instead of washing it away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from monai.networks.layers.factories import Conv

__all__ = ["SPADE", "SPADEResBlock", "SPADE_NORMS"]

SPADE_NORMS = ("batch", "instance")


def _param_free_norm(kind: str, spatial_dims: int, channels: int) -> nn.Module:
    if kind not in SPADE_NORMS:
        raise ValueError(f"`norm` must be one of {SPADE_NORMS} for SPADE, got {kind!r}.")
    if kind == "batch":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels, affine=False)
    return (nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d)(channels, affine=False)


class SPADE(nn.Module):
    """Parameter-free normalisation modulated by γ(segmap), β(segmap) maps.

    Args:
        spatial_dims: 2 or 3.
        channels: channels of the normalised activations.
        label_channels: channels of the label map (one-hot classes, plus any extra maps).
        hidden: channels of the shared convolution computing γ and β (128 in the paper).
        norm: ``"batch"`` (the paper, synchronised there) or ``"instance"``, both without affine parameters.

    ``forward(x, segmap)``: ``segmap`` of any spatial size is resized (nearest) to ``x``'s.
    """

    def __init__(self, spatial_dims: int, channels: int, label_channels: int, hidden: int = 128,
                 norm: str = "batch") -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.norm = _param_free_norm(norm, spatial_dims, channels)
        self.shared = nn.Sequential(conv(label_channels, hidden, 3, padding=1), nn.ReLU(inplace=True))
        self.gamma = conv(hidden, channels, 3, padding=1)
        self.beta = conv(hidden, channels, 3, padding=1)

    def modulation(self, x: torch.Tensor, segmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The γ and β maps for activations shaped like ``x``."""
        seg = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        hidden = self.shared(seg)
        return self.gamma(hidden), self.beta(hidden)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.modulation(x, segmap)
        return self.norm(x) * (1 + gamma) + beta


def _spectral_norm(module: nn.Module) -> nn.Module:
    # Spectral normalisation adds buffers, not parameters. Its power-iteration start-up takes
    # seconds on the meta device, where nets are only built to count parameters, so skip it there.
    if module.weight.device.type == "meta":
        return module
    return nn.utils.parametrizations.spectral_norm(module)


class SPADEResBlock(nn.Module):
    """SPADE ResBlk: (SPADE, leaky ReLU, 3×3 conv) twice, with a SPADE + 1×1 conv shortcut when widths differ.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels; the middle width is ``min(in_channels, out_channels)``.
        label_channels: label-map channels.
        hidden: SPADE hidden width.
        norm: SPADE's parameter-free normalisation.
        spectral_norm: spectral normalisation on the convolutions (the paper's generator uses it).
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, label_channels: int,
                 hidden: int = 128, norm: str = "batch", spectral_norm: bool = True) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        sn = _spectral_norm if spectral_norm else (lambda m: m)
        middle = min(in_channels, out_channels)
        self.norm_0 = SPADE(spatial_dims, in_channels, label_channels, hidden, norm)
        self.conv_0 = sn(conv(in_channels, middle, 3, padding=1))
        self.norm_1 = SPADE(spatial_dims, middle, label_channels, hidden, norm)
        self.conv_1 = sn(conv(middle, out_channels, 3, padding=1))
        self.learned_shortcut = in_channels != out_channels
        if self.learned_shortcut:
            self.norm_s = SPADE(spatial_dims, in_channels, label_channels, hidden, norm)
            self.conv_s = sn(conv(in_channels, out_channels, 1, bias=False))

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        shortcut = self.conv_s(self.norm_s(x, segmap)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, segmap), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, segmap), 0.2))
        return shortcut + dx
