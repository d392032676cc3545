"""LWBNA-UNet, "lightweight bottleneck narrowing with attention" U-Net (Sci. Rep. 12, 2022,
"A lightweight deep learning model for automatic segmentation and analysis of ophthalmic images",
doi:10.1038/s41598-022-12486-w).

A U-Net made light by keeping one width at every level instead of doubling it, with channel
attention after every pair of convolutions and skip connections that add instead of concatenate.
The bottleneck narrows: a chain of convolution + attention steps halving the channels each time
(64 → 32 → ... → 4), widened back by a convolution and added to its input, then two convolutions
and attention. The attention scales channels by ``sigmoid(relu(W · mean(x)))``, so a weight lies in
[0.5, 1): it can damp a channel to half but never silence it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from monai.networks.layers.factories import Conv, Dropout, Pool

from segarch.blocks import ConvNormAct
from segarch.layers.checks import check_positive_int, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["LWBNAUNet", "HalfGateAttention", "NarrowingBottleneck"]


class HalfGateAttention(nn.Module):
    """Channel attention with weights in [0.5, 1): ``x * sigmoid(relu(linear(global_mean(x))))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, channels)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.sigmoid(F.relu(self.fc(x.flatten(2).mean(-1))))
        return w.reshape(*w.shape, *([1] * (x.ndim - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class NarrowingBottleneck(nn.Module):
    """``x + widen(chain(x))`` where the chain's ``steps`` (conv + attention) halve the channels each time."""

    def __init__(self, spatial_dims: int, channels: int, steps: int) -> None:
        super().__init__()
        widths = [max(1, channels // 2 ** s) for s in range(steps)]
        layers, c = [], channels
        for w in widths:
            layers += [ConvNormAct(spatial_dims, c, w, 3), HalfGateAttention(w)]
            c = w
        self.narrow = nn.Sequential(*layers)
        self.widen = ConvNormAct(spatial_dims, c, channels, 3)
        self.widths = tuple(widths)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.widen(self.narrow(x))


class _Level(nn.Sequential):
    """(dropout) → conv → conv → attention, all at one width."""

    def __init__(self, spatial_dims: int, in_channels: int, channels: int, dropout: float) -> None:
        super().__init__()
        if dropout:
            self.add_module("dropout", Dropout[Dropout.DROPOUT, spatial_dims](dropout))
        self.add_module("conv1", ConvNormAct(spatial_dims, in_channels, channels, 3))
        self.add_module("conv2", ConvNormAct(spatial_dims, channels, channels, 3))
        self.add_module("attention", HalfGateAttention(channels))


@register(
    name="lwbna_unet", full_name="LWBNA-UNet (lightweight bottleneck narrowing with attention)",
    paper="A lightweight deep learning model for automatic segmentation and analysis of ophthalmic images",
    reference="doi:10.1038/s41598-022-12486-w", year=2022, task="semantic", spatial_dims=(2, 3), size_divisor=16,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 1, "filters": 64, "depth": 4,
                  "narrowing_steps": 5},
    paper_params=0.74,
    paper_params_source="Pinned to our count: the paper's text was not available to us (only its introduction), so "
                        "0.74M is computed for 64 filters, 4 levels, 5 narrowing steps, RGB input and one output "
                        "(binary FAZ masks); it is not the paper's figure.",
    test_config={"filters": 8, "depth": 4, "narrowing_steps": 2, "dropout": 0.0},
    notes="Read from the title's 'bottleneck narrowing with attention' and public re-implementations, since the "
          "paper's methods section was not available to us: constant width per level, additive skips, "
          "attention weights in [0.5, 1), a narrowing residual bottleneck, nearest up-sampling. Width 64, depth 4, "
          "5 narrowing steps and dropout 0.3 follow a re-implementation's defaults, not the paper. Convolutions "
          "before batch norm have no bias; the output is logits (the paper applies a sigmoid).",
)
class LWBNAUNet(SegmentationNet):
    """LWBNA-UNet for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        filters: the one width of every level (64).
        depth: pooling levels (4); ``size_divisor = 2 ** depth``.
        narrowing_steps: convolution + attention steps in the bottleneck, each halving the channels (5).
        dropout: dropout before each level but the first (0.3).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of
    ``2 ** depth``.

    Examples::

        >>> net = LWBNAUNet(2, 1, 2)
        >>> net(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 2, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, filters: int = 64, depth: int = 4,
                 narrowing_steps: int = 5, dropout: float = 0.3) -> None:
        super().__init__()
        name = "LWBNA-UNet"
        check_spatial_dims(spatial_dims, (2, 3), name)
        for arg, value in (("filters", filters), ("depth", depth), ("narrowing_steps", narrowing_steps)):
            check_positive_int(value, arg, name)
        if not 0 <= dropout < 1:
            raise ValueError(f"`dropout` must be in [0, 1) for {name}, got {dropout!r}.")
        self.spatial_dims, self.size_divisor = spatial_dims, 2 ** depth
        self.encoder = nn.ModuleList(
            _Level(spatial_dims, in_channels if d == 0 else filters, filters, dropout if d else 0.0)
            for d in range(depth)
        )
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2)
        self.bottleneck_dropout = Dropout[Dropout.DROPOUT, spatial_dims](dropout)
        self.bottleneck = NarrowingBottleneck(spatial_dims, filters, narrowing_steps)
        self.post_bottleneck = _Level(spatial_dims, filters, filters, 0.0)
        self.decoder = nn.ModuleList(_Level(spatial_dims, filters, filters, dropout) for _ in range(depth))
        self.head = Conv[Conv.CONV, spatial_dims](filters, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        skips = []
        for level in self.encoder:
            x = level(x)
            skips.append(x)
            x = self.pool(x)
        x = self.post_bottleneck(self.bottleneck(self.bottleneck_dropout(x)))
        for level in reversed(range(len(self.decoder))):
            # Up-sample ×2 (nearest) and add the skip: one width everywhere, so no concatenation.
            x = F.interpolate(x, scale_factor=2, mode="nearest") + skips[level]
            x = self.decoder[level](x)
        return self.head(x)
