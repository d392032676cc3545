"""LSANet (Zhou, Zhou, Li, Li and Wang, IJCNN 2022, "Lightweight Self-Attention Network for Semantic
Segmentation", doi:10.1109/IJCNN55064.2022.9891928): the zoo's reading of the product list's "LSA-Net".

What the paper states (its abstract; the full text was not available to us): an encoder-decoder network whose
Lightweight Self-Attention Module (LSAM) captures context from "a hand-designed compact feature representation"
with "weighted fusion of position information", and whose decoder replaces bilinear up-sampling by "an improved
up-sampling module" that restores details better; evaluated on PASCAL VOC 2012 and Cityscapes. How it is read
here:

- encoder: a ResNet-101 dilated to output stride 16, as the encoder-decoder networks it is compared with
  (DeepLab v3+);
- LSAM (:class:`LightweightSelfAttention`): the compact representation is a pyramid of average-pooled grids
  (1, 3, 6 and 8 cells per axis: 110 positions in 2D instead of every pixel), from which keys and values are
  taken; every pixel attends to those few positions (cost ``N × 110`` instead of ``N × N``); the keys carry a
  learned position embedding of the pooled cells added with a learned weight (the weighted fusion of position
  information); the result is projected back and added to the input;
- improved up-sampling (:class:`ImprovedUpsampling`): ×2 bilinear up-sampling plus a learned sub-pixel
  correction (a 1×1 convolution and depth-to-space), fused with the encoder's skip features of that scale by a
  3×3 conv-norm-act; two such steps (1/16 → 1/8 → 1/4), a 1×1 classifier and ×4 bilinear up-sampling.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

from segarch.backbones import ResNetEncoder
from segarch.backbones.resnet import RESNET_LAYERS
from segarch.blocks import ConvNormAct
from segarch.blocks.resize import interp_mode, resize_to
from segarch.blocks.space_to_depth import depth_to_space
from segarch.layers.checks import check_choice, check_positive_int, check_positive_ints, check_spatial_dims
from segarch.layers.exportable import adaptive_avg_pool
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["LSANet", "LightweightSelfAttention", "ImprovedUpsampling"]


class LightweightSelfAttention(nn.Module):
    """Self-attention of every position to a compact pyramid of pooled cells, with weighted position information.

    Args:
        spatial_dims: 2 or 3.
        channels: input and output channels.
        key_channels: query/key channels (``channels // 4`` by default).
        bins: cells per axis of each pooled grid (1, 3, 6, 8): ``Σ bins^d`` keys and values per image.

    ``forward(x)`` returns ``x`` plus the attended context, same shape.
    """

    def __init__(self, spatial_dims: int, channels: int, key_channels: int | None = None,
                 bins: Sequence[int] = (1, 3, 6, 8)) -> None:
        super().__init__()
        d = spatial_dims
        self.bins = check_positive_ints(bins, "bins")
        key_channels = max(channels // 4, 1) if key_channels is None else key_channels
        self.key_channels = key_channels
        self.query = ConvNormAct(d, channels, key_channels, 1)
        self.key = ConvNormAct(1, channels, key_channels, 1)  # on the (B, C, S) pooled cells
        self.value = ConvNormAct(1, channels, channels // 2 or 1, 1)
        cells = sum(b ** d for b in self.bins)
        self.position = nn.Parameter(torch.zeros(1, key_channels, cells))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.position_weight = nn.Parameter(torch.ones(1))
        self.project = ConvNormAct(d, channels // 2 or 1, channels, 1, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        compact = torch.cat([adaptive_avg_pool(x, b).flatten(2) for b in self.bins], dim=2)  # (B, C, S)
        q = self.query(x).flatten(2)  # (B, K, N)
        k = self.key(compact) + self.position_weight * self.position
        v = self.value(compact)
        attention = torch.softmax(torch.einsum("bkn,bks->bns", q, k) * self.key_channels ** -0.5, dim=-1)
        context = torch.einsum("bns,bcs->bcn", attention, v).reshape(x.shape[0], -1, *x.shape[2:])
        return x + self.project(context)


class ImprovedUpsampling(nn.Module):
    """×2 up-sampling as bilinear interpolation plus a learned sub-pixel correction, fused with skip features.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the coarse features.
        skip_channels: channels of the skip features at twice the resolution (0 for none).
        out_channels: output channels.
    """

    def __init__(self, spatial_dims: int, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        d = spatial_dims
        self.reduce = ConvNormAct(d, in_channels, out_channels, 1)
        self.sub_pixel = Conv[Conv.CONV, d](in_channels, out_channels * 2 ** d, 1)
        self.fuse = ConvNormAct(d, out_channels + skip_channels, out_channels, 3)
        self._mode = interp_mode(d)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        up = F.interpolate(self.reduce(x), scale_factor=2, mode=self._mode, align_corners=False)
        up = up + depth_to_space(self.sub_pixel(x), 2)
        if skip is not None:
            up = torch.cat([resize_to(up, skip.shape[2:]), skip], dim=1)
        return self.fuse(up)


@register(
    name="lsanet",
    full_name="LSANet (Lightweight Self-Attention Network, ResNet-101)",
    paper="Lightweight Self-Attention Network for Semantic Segmentation",
    reference="doi:10.1109/IJCNN55064.2022.9891928",
    year=2022,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=16,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "depth": 101},
    paper_params=48.45,
    paper_params_source=(
        "Pinned: the paper's text was not available to us (only its abstract), so 48.45M is this reading's count for "
        "Cityscapes (19 classes, RGB), not the paper's figure: ResNet-101 trunk 42.50M + 3x3 reduction 2048->256 "
        "4.72M + LSAM 0.11M + up-sampling steps 0.90M and 0.23M + classifier."
    ),
    test_config={"depth": 18, "base_width": 8, "head_channels": 16, "decoder_channels": (16, 8)},
    notes=(
        "'LSA-Net' (the product list gives no link) read as LSANet, Zhou et al., IJCNN 2022: the only published "
        "network of that name for semantic segmentation, a lightweight self-attention network, confirmed from its "
        "abstract (indexed with its DOI). The layers follow the abstract, read as the module docstring says: a "
        "ResNet-101 at output stride 16, a 3x3 reduction to 256 channels, LSAM with keys and values from pooled "
        "1/3/6/8 grids (110 cells) and a weighted learned position embedding, and a decoder of two improved "
        "up-sampling steps (bilinear + sub-pixel correction, fused with stage-2 then stage-1 features). 3D (an "
        "extension): cubic grids (756 cells), 3D depth-to-space."
    ),
)
class LSANet(SegmentationNet):
    """LSANet: dilated ResNet, lightweight self-attention, decoder of improved up-sampling steps.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes.
        depth: ResNet depth (101).
        base_width: ResNet stem width (64).
        head_channels: channels the trunk's features are reduced to before LSAM (256).
        bins: cells per axis of LSAM's pooled grids (1, 3, 6, 8).
        decoder_channels: widths of the two up-sampling steps, to 1/8 and to 1/4 ((128, 64)).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; sizes must be multiples of 16.

    Examples::

        >>> net = LSANet(2, 3, 19, depth=18, base_width=8, head_channels=16, decoder_channels=(16, 8))
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 19, 64, 64])
    """

    size_divisor = 16

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int = 101,
                 base_width: int = 64, head_channels: int = 256, bins: Sequence[int] = (1, 3, 6, 8),
                 decoder_channels: Sequence[int] = (128, 64)) -> None:
        super().__init__()
        net = "LSANet"
        check_spatial_dims(spatial_dims, (2, 3), net)
        check_choice(depth, tuple(RESNET_LAYERS), "depth", net)
        check_positive_int(head_channels, "head_channels", net)
        decoder_channels = check_positive_ints(decoder_channels, "decoder_channels")
        if len(decoder_channels) != 2:
            raise ValueError(f"`decoder_channels` must be 2 positive integers for {net}, got {decoder_channels!r}.")
        d = self.spatial_dims = spatial_dims
        self.encoder = ResNetEncoder(d, in_channels, depth=depth, output_stride=16,
                                     base_width=check_positive_int(base_width, "base_width", net))
        enc = self.encoder.out_channels
        self.reduce = ConvNormAct(d, enc[-1], head_channels, 3)
        self.attention = LightweightSelfAttention(d, head_channels, bins=bins)
        self.up8 = ImprovedUpsampling(d, head_channels, enc[2], decoder_channels[0])
        self.up4 = ImprovedUpsampling(d, decoder_channels[0], enc[1], decoder_channels[1])
        self.classifier = Conv[Conv.CONV, d](decoder_channels[1], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        features = self.encoder(x)
        y = self.attention(self.reduce(features[-1]))
        y = self.up4(self.up8(y, features[2]), features[1])
        return resize_to(self.classifier(y), x.shape[2:])
