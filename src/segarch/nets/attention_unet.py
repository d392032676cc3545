"""Attention U-Net (Oktay et al., MIDL 2018, arXiv:1804.03999).

A U-Net whose skip connections pass through additive attention gates driven by the coarser
decoder features, so irrelevant regions of the skip features are suppressed. As in the paper's
pancreas network: four levels of two 3×3×3 convolutions with batch norm and ReLU, a bottleneck,
a 1×1×1 gating signal from the bottleneck, attention gates on the three deepest skips (the
shallowest skip is too coarse a signal to gate), (tri)linear up-sampling in the decoder, and deep
supervision: each decoder level is projected to the classes, up-sampled and fused by a 1×1×1
convolution.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from monai.networks.layers.factories import Conv, Pool

from segarch.blocks import AttentionGate, ConvNormAct, DoubleConv, UpSample
from segarch.blocks.resize import resize_to
from segarch.layers.checks import check_features, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["AttentionUNet"]


@register(
    name="attention_unet",
    full_name="Attention U-Net",
    paper="Attention U-Net: Learning Where to Look for the Pancreas",
    reference="arXiv:1804.03999",
    year=2018,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=16,
    paper_config={"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "features": (16, 32, 64, 128, 256),
                  "deep_supervision": True},
    paper_params=6.40,
    paper_params_source="Oktay et al. 2018, Table 2: Attention U-Net 6.40M parameters (3D, CT pancreas); U-Net 5.88M.",
    test_config={"features": (4, 8, 16, 32, 64)},
    notes="The paper's single-scale gating with deep supervision (its code's `unet_CT_single_att_dsv_3D`).",
)
class AttentionUNet(SegmentationNet):
    """Attention U-Net for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        features: channels of the five levels; the paper uses ``(16, 32, 64, 128, 256)`` (its code's
            ``64…1024`` divided by a feature scale of 4).
        deep_supervision: fuse class projections of every decoder level (the paper) instead of
            reading the classes from the last level only.

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 16.
    The last forward's attention maps (finest first) are kept in ``attention_maps`` for inspection.

    Examples::

        >>> net = AttentionUNet(3, 1, 2)
        >>> net(torch.zeros(1, 1, 32, 32, 32)).shape
        torch.Size([1, 2, 32, 32, 32])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (16, 32, 64, 128, 256),
        deep_supervision: bool = True,
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "Attention U-Net")
        f = check_features(features, 5, "Attention U-Net")
        if not isinstance(deep_supervision, bool):
            raise ValueError(f"`deep_supervision` must be True or False for Attention U-Net, got {deep_supervision!r}.")
        self.spatial_dims = spatial_dims
        self.size_divisor = 16
        self.deep_supervision = deep_supervision

        widths = (in_channels,) + f
        self.encoder = nn.ModuleList(DoubleConv(spatial_dims, widths[i], widths[i + 1]) for i in range(5))
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2)
        self.gating = ConvNormAct(spatial_dims, f[4], f[4], kernel_size=1)
        # Gates for skips 1..3 (0-based levels); the gating signal is the level below each one.
        self.gates = nn.ModuleList(AttentionGate(spatial_dims, f[i], f[i + 1], f[i]) for i in (1, 2, 3))
        self.ups = nn.ModuleList(UpSample(spatial_dims, f[i + 1], f[i + 1], mode="interp") for i in range(4))
        self.decoder = nn.ModuleList(DoubleConv(spatial_dims, f[i + 1] + f[i], f[i]) for i in range(4))
        conv = Conv[Conv.CONV, spatial_dims]
        if deep_supervision:
            self.projections = nn.ModuleList(conv(f[i], out_channels, kernel_size=1) for i in range(4))
            self.head = conv(4 * out_channels, out_channels, kernel_size=1)
        else:
            self.head = conv(f[0], out_channels, kernel_size=1)
        self.attention_maps: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(self.pool(x) if level else x)
            skips.append(x)
        gate_signal = self.gating(skips.pop())
        decoded: list[torch.Tensor] = []
        maps = []
        for level in (3, 2, 1, 0):
            skip = skips[level]
            if level >= 1:
                signal = gate_signal if level == 3 else decoded[-1]
                skip, alpha = self.gates[level - 1](skip, signal)
                maps.append(alpha)
            x = self.decoder[level](torch.cat([skip, self.ups[level](x)], dim=1))
            decoded.append(x)
        self.attention_maps = [m.detach() for m in reversed(maps)]
        if not self.deep_supervision:
            return self.head(x)
        size = x.shape[2:]
        outs = []
        for level, features in zip((3, 2, 1, 0), decoded):
            outs.append(resize_to(self.projections[level](features), size))
        return self.head(torch.cat(outs, dim=1))
