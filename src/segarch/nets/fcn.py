"""Fully Convolutional Networks (Long, Shelhamer and Darrell, CVPR 2015, arXiv:1411.4038).

VGG-16 with its classifier turned into convolutions: fc6 becomes a 7×7 convolution with 4096
channels on pool5, fc7 a 1×1 convolution, and a 1×1 "score" layer predicts the classes at stride
32. FCN-32s up-samples those scores straight to the input; FCN-16s first adds scores predicted from
pool4 (after a learned 2× up-sampling), and FCN-8s then adds scores from pool3 as well (Fig. 3).
"""

from __future__ import annotations

import torch
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.backbones import VGGEncoder
from segarch.backbones.vgg import fc_as_convolutions
from segarch.blocks.bilinear_deconv import BilinearDeconv
from segarch.blocks.resize import resize_to
from segarch.layers.checks import check_choice, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["FCN", "FCN_VARIANTS"]

FCN_VARIANTS = ("32s", "16s", "8s")

_SOURCE = (
    "Long et al. 2015, Table 1: FCN-VGG16, 134M parameters (PASCAL VOC, 21 classes, RGB), for FCN-8s as "
    "for FCN-32s: the skip scores and 2× up-samplings of FCN-16s/8s add under 0.05M."
)
_NOTES = (
    "One entry for the three nets: `variant` '32s', '16s' or '8s' (the paper's best, the default). fc6 is a "
    "7×7 convolution with 'same' padding instead of the paper's 100-pixel input padding and cropping; the 2× "
    "up-samplings are learned transposed convolutions started at bilinear interpolation and the last "
    "up-sampling is fixed bilinear interpolation (no parameters), as in the paper; skip scores start at zero, "
    "as in the paper. test_config uses FCN-8s with VGG-16-BN (`norm='batch'`): from a random start the "
    "unnormalised VGG barely trains in 30 steps (the paper starts from ImageNet weights), and FCN-32s' "
    "stride-32 scores are a single value per 32×32 image. In 3D fc6 is a 7×7×7 convolution (≈719M parameters "
    "at the paper's widths): use a smaller fc_kernel/fc_channels there."
)


@register(
    name="fcn", full_name="FCN-8s/16s/32s (VGG-16)",
    paper="Fully Convolutional Networks for Semantic Segmentation", reference="arXiv:1411.4038", year=2015,
    task="semantic", spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 21, "variant": "8s"},
    paper_params=134.0, paper_params_source=_SOURCE,
    test_config={"variant": "8s", "width_scale": 0.125, "fc_channels": 32, "fc_kernel": 3, "dropout": 0.0,
                 "norm": "batch"},
    notes=_NOTES,
)
class FCN(SegmentationNet):
    """FCN-32s/16s/8s on VGG-16 for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        variant: ``"32s"``, ``"16s"`` or ``"8s"``: the finest skip fused (none, pool4, pool4 and pool3).
        width_scale: multiplies VGG-16's convolution widths (1 for the paper).
        fc_channels: channels of the convolutionalised fc6/fc7 (4096 in the paper).
        fc_kernel: kernel of fc6 as a convolution (7 in the paper: VGG's fc6 sees a 7×7 pool5 map).
        dropout: dropout after fc6 and fc7 (0.5 in the paper).
        norm: ``None`` (the paper's VGG-16) or ``"batch"`` (VGG-16-BN, which trains from scratch far faster).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 32.

    Examples::

        >>> net = FCN(2, 3, 21, variant="8s")
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 21, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, variant: str = "8s",
                 width_scale: float = 1.0, fc_channels: int = 4096, fc_kernel: int = 7, dropout: float = 0.5,
                 norm: str | None = None) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "FCN")
        check_choice(variant, FCN_VARIANTS, "variant", "FCN")
        if not isinstance(fc_kernel, int) or fc_kernel < 1 or fc_kernel % 2 == 0:
            raise ValueError(f"`fc_kernel` must be a positive odd integer for FCN, got {fc_kernel!r}.")
        if not isinstance(fc_channels, int) or fc_channels < 1:
            raise ValueError(f"`fc_channels` must be a positive integer for FCN, got {fc_channels!r}.")
        check_choice(norm, (None, "batch"), "norm", "FCN")
        if not 0 <= dropout < 1:
            raise ValueError(f"`dropout` must be in [0, 1) for FCN, got {dropout!r}.")
        self.spatial_dims, self.size_divisor, self.variant = spatial_dims, 32, variant
        conv = Conv[Conv.CONV, spatial_dims]
        self.encoder = VGGEncoder(spatial_dims, in_channels, width_scale=width_scale, norm=norm)
        c3, c4, c5 = self.encoder.out_channels[2:]
        self.fc = fc_as_convolutions(spatial_dims, c5, fc_channels, fc_kernel, dropout)
        self.score = conv(fc_channels, out_channels, 1)
        self.skip_scores = nn.ModuleList()
        self.ups = nn.ModuleList()
        for channels in ((c4,) if variant == "16s" else (c4, c3) if variant == "8s" else ()):
            score = conv(channels, out_channels, 1)
            # The paper zero-initialises the new skip scores, so a finer net starts as the coarser one.
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)
            self.skip_scores.append(score)
            self.ups.append(BilinearDeconv(spatial_dims, out_channels, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        size = x.shape[2:]
        pools = self.encoder(x)
        y = self.score(self.fc(pools[4]))
        for up, score, pool in zip(self.ups, self.skip_scores, (pools[3], pools[2])):
            y = up(y) + score(pool)
        # The last up-sampling is fixed interpolation (the paper fixes it to bilinear).
        return resize_to(y, size)
