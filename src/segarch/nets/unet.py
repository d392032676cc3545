"""U-Net (Ronneberger, Fischer and Brox, MICCAI 2015, arXiv:1505.04597).

A contracting path of two 3×3 convolutions + ReLU and 2×2 max-pooling per level, doubling the
channels at each level (64 → 1024), and an expanding path of 2×2 up-convolutions that halve the
channels, concatenation with the cropped (here: same-size, since convolutions are padded) skip
features and two 3×3 convolutions, then a 1×1 convolution to the classes: 23 convolutional
layers in all. Dropout sits at the end of the contracting path. Convolutions are padded so the
output has the input's size (the paper's unpadded convolutions shrink it by 184 pixels).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from monai.networks.layers.factories import Conv, Dropout, Pool

from segarch.blocks import DoubleConv, UpSample
from segarch.blocks.upsample import UPSAMPLE_MODES
from segarch.layers.checks import check_choice, check_features, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["UNet", "NORMS"]

NORMS = (None, "batch", "instance", "group")


def _norm_spec(norm: str | None):
    return ("group", {"num_groups": 8}) if norm == "group" else norm


@register(
    name="unet",
    full_name="U-Net",
    paper="U-Net: Convolutional Networks for Biomedical Image Segmentation",
    reference="arXiv:1505.04597",
    year=2015,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=16,
    paper_config={"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "features": (64, 128, 256, 512, 1024)},
    paper_params=31.03,
    paper_params_source=(
        "Pinned (derived): the paper gives no count. 31.03M follows from its Fig. 1 (23 convolutions, 64→1024 "
        "channels, 1 input channel, 2 classes) and agrees with Zhou et al. 2018 (arXiv:1807.10165) Table 1, whose "
        "7.76M for the same U-Net at a quarter of the width (32→512) is this implementation's count at that width."
    ),
    test_config={"features": (4, 8, 16, 32, 64)},
    notes="Padded convolutions keep the input size; optional norm and interpolation up-sampling are extensions.",
)
class UNet(SegmentationNet):
    """U-Net for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        features: channels per level, from the first to the bottleneck; the paper uses
            ``(64, 128, 256, 512, 1024)``. The number of levels sets ``size_divisor = 2 ** (len - 1)``.
        norm: ``None`` (the paper), ``"batch"``, ``"instance"`` or ``"group"`` after each convolution.
        dropout: dropout probability at the end of the contracting path (the paper: 0.5).
        up_mode: ``"deconv"`` (the paper's 2×2 up-convolution) or ``"interp"`` (linear interpolation
            and a 1×1 convolution).

    Examples::

        >>> net = UNet(2, 1, 2)                       # the paper's network, padded
        >>> net(torch.zeros(1, 1, 64, 64)).shape
        torch.Size([1, 2, 64, 64])
        >>> net3d = UNet(3, 1, 3, features=(8, 16, 32, 64))
        >>> net3d(torch.zeros(1, 1, 16, 32, 32)).shape
        torch.Size([1, 3, 16, 32, 32])

    ``forward(x)``: ``x`` of shape ``(B, in_channels, *spatial)`` with spatial sizes multiples of
    ``size_divisor``; returns logits ``(B, out_channels, *spatial)``.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        norm: str | None = None,
        dropout: float = 0.5,
        up_mode: str = "deconv",
    ) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "U-Net")
        features = check_features(features, None, "U-Net")
        check_choice(norm, NORMS, "norm", "U-Net")
        check_choice(up_mode, UPSAMPLE_MODES, "up_mode", "U-Net")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"`dropout` must be in [0, 1) for U-Net, got {dropout!r}.")
        self.spatial_dims = spatial_dims
        self.size_divisor = 2 ** (len(features) - 1)
        norm_spec = _norm_spec(norm)

        self.encoder = nn.ModuleList()
        channels = in_channels
        for width in features:
            self.encoder.append(DoubleConv(spatial_dims, channels, width, norm=norm_spec))
            channels = width
        self.pool = Pool[Pool.MAX, spatial_dims](kernel_size=2)
        self.dropout = Dropout[Dropout.DROPOUT, spatial_dims](float(dropout))

        self.ups = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for width in reversed(features[:-1]):
            self.ups.append(UpSample(spatial_dims, channels, width, mode=up_mode))
            self.decoder.append(DoubleConv(spatial_dims, 2 * width, width, norm=norm_spec))
            channels = width
        self.head = Conv[Conv.CONV, spatial_dims](channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        skips = []
        for level, block in enumerate(self.encoder):
            if level:
                x = self.pool(x)
            x = block(x)
            if level >= len(self.encoder) - 2:  # the paper's dropout: end of the contracting path
                x = self.dropout(x)
            skips.append(x)
        skips.pop()
        for up, block in zip(self.ups, self.decoder):
            x = block(torch.cat([skips.pop(), up(x)], dim=1))
        return self.head(x)
