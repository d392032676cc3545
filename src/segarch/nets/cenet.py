"""CE-Net, the context encoder network (Gu et al., IEEE TMI 2019, arXiv:1903.02740).

A ResNet-34 encoder, a context extractor — the dense atrous convolution (DAC) block and the
residual multi-kernel pooling (RMP) block on the deepest features — and LinkNet-style decoder
blocks (1×1 conv, 3×3 deconvolution, 1×1 conv) whose outputs are added to the encoder's skips
(Fig. 1). A 4×4 deconvolution and two 3×3 convolutions return to the input's resolution.
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.backbones import ResNetEncoder
from segarch.blocks import ConvNormAct
from segarch.blocks.dac_rmp import DenseAtrousConv, ResidualMultiKernelPool
from segarch.blocks.link_decoder import LinkDecoderBlock
from segarch.layers.checks import check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["CENet"]


@register(
    name="cenet", full_name="CE-Net (ResNet-34, DAC + RMP)",
    paper="CE-Net: Context Encoder Network for 2D Medical Image Segmentation",
    reference="arXiv:1903.02740", year=2019, task="semantic", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 1},
    paper_params=29.0,
    paper_params_source="Pinned: we found no count in the paper; 29.0M follows from its Figs. 1-4 (ResNet-34 "
                        "without the classifier 21.3M, DAC 7.3M with the authors' shared convolutions, decoder "
                        "0.4M) for its binary optic-disc masks (1 output, RGB).",
    test_config={"base_width": 8},
    notes="DAC shares its atrous and 1×1 convolutions between branches and RMP shares its 1×1 convolution "
          "between pooling levels, as the authors' code does (the paper's figures do not say); RMP pools with "
          "ceil_mode so maps smaller than a kernel still work. The decoder's first block up-samples (the "
          "encoder's first stage keeps the stride), so the 4×4 deconvolution returns to full resolution.",
)
class CENet(SegmentationNet):
    """CE-Net for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes; 1 for the paper's binary masks).
        base_width: width of the ResNet-34 stem (64 in the paper); every width scales with it.

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 32.

    Examples::

        >>> net = CENet(2, 3, 1)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, base_width: int = 64) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "CE-Net")
        if not isinstance(base_width, int) or base_width < 4:
            raise ValueError(f"`base_width` must be an integer >= 4 for CE-Net, got {base_width!r}.")
        self.spatial_dims, self.size_divisor = spatial_dims, 32
        self.encoder = ResNetEncoder(spatial_dims, in_channels, depth=34, base_width=base_width)
        c = self.encoder.out_channels  # stem, layer1..4: 64, 64, 128, 256, 512
        self.dac = DenseAtrousConv(spatial_dims, c[4])
        self.rmp = ResidualMultiKernelPool(spatial_dims, c[4])
        ins = (c[1], c[2], c[3], self.rmp.out_channels)
        outs = (c[1], c[1], c[2], c[3])
        self.decoder = nn.ModuleList(LinkDecoderBlock(spatial_dims, i, o, scale=2) for i, o in zip(ins, outs))
        half = max(1, c[1] // 2)
        self.final = nn.Sequential(
            Conv[Conv.CONVTRANS, spatial_dims](c[1], half, kernel_size=4, stride=2, padding=1),
            nn.ReLU(inplace=True),
            ConvNormAct(spatial_dims, half, half, 3, norm=None),
            Conv[Conv.CONV, spatial_dims](half, out_channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        _, *encoded = self.encoder(x)
        y = self.decoder[3](self.rmp(self.dac(encoded[3])))
        for level in (2, 1, 0):
            y = self.decoder[level](y + encoded[level])
        return self.final(y)
