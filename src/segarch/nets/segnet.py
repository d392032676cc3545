"""SegNet (Badrinarayanan, Kendall and Cipolla, TPAMI 2017, arXiv:1511.00561).

The encoder is VGG-16's 13 convolutions with batch norm; each 2×2 max-pooling remembers where its
maxima were. The decoder mirrors the encoder: each stage max-unpools with the indices of the
matching encoder pooling (so values return to the positions they came from, leaving a sparse map)
and densifies with 3×3 convolutions, batch norm and ReLU. The last convolution outputs the class
scores (Fig. 2). No skip features are copied: only the indices cross from encoder to decoder.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.backbones import VGGEncoder
from segarch.backbones.vgg import VGG16_BLOCKS
from segarch.blocks import ConvNormAct
from segarch.layers.checks import check_spatial_dims
from segarch.layers.exportable import MaxUnpool
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["SegNet"]


@register(
    name="segnet", full_name="SegNet (VGG-16-BN)",
    paper="SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image Segmentation",
    reference="arXiv:1511.00561", year=2017, task="semantic", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 11},
    paper_params=29.5,
    paper_params_source="Badrinarayanan et al. 2017: SegNet has 29.5M trainable parameters (the figure the paper "
                        "sets against FCN's 134M and DeconvNet's 252M); CamVid, 11 classes (void ignored), RGB.",
    test_config={"width_scale": 0.125},
    notes="The decoder's last convolution outputs the classes directly (the authors' conv1_1_D), without "
          "batch norm; every other decoder convolution has batch norm and ReLU. 3D uses 2×2×2 pooling "
          "and max-unpooling with 3D indices.",
)
class SegNet(SegmentationNet):
    """SegNet for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        width_scale: multiplies VGG-16's widths in encoder and decoder (1 for the paper).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 32.

    Examples::

        >>> net = SegNet(2, 3, 11)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 11, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, width_scale: float = 1.0) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "SegNet")
        if not width_scale > 0:
            raise ValueError(f"`width_scale` must be positive for SegNet, got {width_scale!r}.")
        self.spatial_dims, self.size_divisor = spatial_dims, 32
        self.encoder = VGGEncoder(spatial_dims, in_channels, width_scale=width_scale, norm="batch", return_indices=True)
        self.unpool = MaxUnpool(kernel_size=2)
        # Mirror each encoder stage: its convolutions in reverse, the last one narrowing to the
        # next (shallower) stage's width, as conv5_3_D ... conv1_1_D in the authors' model.
        widths = [[max(1, int(round(w * width_scale))) for w in block] for block in VGG16_BLOCKS]
        stages = []
        for level in reversed(range(5)):
            block = widths[level]
            target = widths[level - 1][-1] if level else None
            convs = []
            for i in range(len(block)):
                last = i == len(block) - 1
                if last and target is None:
                    # conv1_1_D: the class scores, no norm or activation.
                    convs.append(Conv[Conv.CONV, spatial_dims](block[0], out_channels, 3, padding=1))
                else:
                    convs.append(ConvNormAct(spatial_dims, block[0], target if last else block[0], 3))
            stages.append(nn.Sequential(*convs))
        self.decoder = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        pooled = self.encoder(x)
        y = pooled[-1][0]
        for stage, (_, indices, shape) in zip(self.decoder, reversed(pooled)):
            y = stage(self.unpool(y, indices, output_size=shape[2:]))
        return y
