"""LinkNet (Chaurasia and Culurciello, VCIP 2017, arXiv:1707.03718).

A ResNet-18 encoder and a light decoder: each decoder block (1×1 conv to a quarter of the channels,
3×3 full convolution up-sampling ×2, 1×1 conv) works on the sum of the deeper decoder's output and
the matching encoder block's output, a "link" that adds rather than concatenates, so the decoder
stays small (Fig. 1). A final full convolution, a 3×3 convolution and a 2×2 full convolution return
to the input's resolution.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.backbones import ResNetEncoder
from segarch.blocks import ConvNormAct
from segarch.blocks.link_decoder import FullConvNormAct, LinkDecoderBlock
from segarch.layers.checks import check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["LinkNet"]


@register(
    name="linknet", full_name="LinkNet (ResNet-18)",
    paper="LinkNet: Exploiting Encoder Representations for Efficient Semantic Segmentation",
    reference="arXiv:1707.03718", year=2017, task="semantic", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19},
    paper_params=11.5,
    paper_params_source="Chaurasia and Culurciello 2017, Table 1: LinkNet 11.5M parameters (Cityscapes, 19 classes, "
                        "RGB).",
    test_config={"base_width": 8},
    notes="The encoder is ResNet-18 as in the authors' model: its first block keeps the stride, so the first "
          "decoder block's full convolution has stride 1 and the final block up-samples ×2 twice "
          "(3×3 full conv, then 2×2 full conv to the classes). All decoder convolutions have batch norm and "
          "ReLU except the classifier.",
)
class LinkNet(SegmentationNet):
    """LinkNet for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        base_width: width of the ResNet-18 stem (64 in the paper); every width scales with it.

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 32.

    Examples::

        >>> net = LinkNet(2, 3, 19)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 19, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, base_width: int = 64) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "LinkNet")
        if not isinstance(base_width, int) or base_width < 4:
            raise ValueError(f"`base_width` must be an integer >= 4 for LinkNet, got {base_width!r}.")
        self.spatial_dims, self.size_divisor = spatial_dims, 32
        self.encoder = ResNetEncoder(spatial_dims, in_channels, depth=18, base_width=base_width)
        c = self.encoder.out_channels  # stem, layer1..4: 64, 64, 128, 256, 512 in the paper
        # Decoder block i maps encoder block i's width to block i-1's; ResNet-18's first block keeps the
        # stride, so its decoder does not up-sample (the authors' ResNet-18 model does the same).
        self.decoder = nn.ModuleList(
            LinkDecoderBlock(spatial_dims, c[i], c[i - 1] if i > 1 else c[1], scale=2 if i > 1 else 1)
            for i in (1, 2, 3, 4)
        )
        half = max(1, c[1] // 2)
        self.final = nn.Sequential(
            FullConvNormAct(spatial_dims, c[1], half, scale=2),
            ConvNormAct(spatial_dims, half, half, 3),
            Conv[Conv.CONVTRANS, spatial_dims](half, out_channels, kernel_size=2, stride=2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        _, *encoded = self.encoder(x)
        y = self.decoder[3](encoded[3])
        for level in (2, 1, 0):
            y = self.decoder[level](y + encoded[level])
        return self.final(y)
