"""DeeperLab (Yang et al. 2019, "DeeperLab: Single-Shot Image Parser", arXiv:1902.05093).

A single-shot, bottom-up panoptic parser: one encoder-decoder whose shared output feeds five prediction heads.

- **encoder**: Xception-71 (the paper's accurate model) at output stride 16, with ASPP (256 channels, rates 6, 12,
  18 and image pooling; depthwise-separable branches as DeepLab v3+ with Xception).
- **decoder**: the ASPP output and the encoder's 1/4 features (reduced by a 1×1 convolution to 32 channels) are
  concatenated at 1/16 without up-sampling: **space-to-depth** (block 4) folds the 1/4 features into
  ``32 · 16 = 512`` channels at 1/16. Two large-kernel (7×7) depthwise-separable convolutions make a 4096-channel
  map, and **depth-to-space** (block 4) turns it into 256 channels at 1/4. Keeping the large maps narrow and the
  wide maps small is the paper's memory argument for both operations.
- **heads** (each a 7×7 depthwise-separable convolution and a 1×1 convolution, on the shared decoder output): the
  semantic head (256 filters) and four class-agnostic instance heads (64 filters each), following PersonLab's
  keypoint representation of an object: its ``K`` keypoints are the corners of its bounding box and its centre of
  mass (``K = 5`` in 2D; ``K = 9`` in 3D, the box's 8 corners and the centre), and the heads predict

  - ``keypoints``: one heatmap per keypoint type (logits; the target is a disk around each keypoint),
  - ``short_offset``: from pixels near a keypoint to it (``d`` channels per keypoint type),
  - ``middle_offset``: from pixels near one keypoint to another of the same object, along the star of edges
    centre ↔ corners (``d`` channels per directed edge, ``2 (K - 1)`` edges),
  - ``long_offset``: from every pixel of an object to each of its keypoints (``d`` channels per keypoint).

Outputs are predicted at 1/4 and up-sampled to the input; offsets are scaled to input pixels. The grouping (Hough
voting of keypoints, greedy grouping along the middle offsets, pixel assignment by the long offsets, fusion with
the semantic map) is :class:`segarch.instances.deeperlab.DeeperLabDecoder`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from segarch.backbones.aligned_xception import AlignedXceptionEncoder
from segarch.blocks import ConvNormAct
from segarch.blocks.aspp import ASPP
from segarch.blocks.resize import resize_to
from segarch.blocks.separable import SeparableConv
from segarch.blocks.space_to_depth import depth_to_space, space_to_depth
from segarch.layers.checks import check_positive_int, check_spatial_dims
from segarch.nets._heads import Head, MultiHeadNet
from segarch.zoo import register

__all__ = ["DeeperLab", "DeeperLabDecoderModule", "keypoint_edges", "keypoint_count"]

#: Space-to-depth / depth-to-space block: the 1/4 features meet the 1/16 encoder output.
_BLOCK = 4


def keypoint_count(spatial_dims: int) -> int:
    """DeeperLab's keypoints per object: the centre of mass and the ``2^d`` corners of the bounding box."""
    return 2 ** spatial_dims + 1


def keypoint_edges(spatial_dims: int) -> tuple[tuple[int, int], ...]:
    """The directed keypoint pairs the middle offsets follow: centre (keypoint 0) → each corner, then each corner →
    centre."""
    corners = range(1, keypoint_count(spatial_dims))
    return tuple((0, c) for c in corners) + tuple((c, 0) for c in corners)


class DeeperLabDecoderModule(nn.Module):
    """DeeperLab's decoder: 1/4 features folded to 1/16 by space-to-depth, two 7×7 separable convolutions, then
    depth-to-space back to 1/4.

    Args:
        spatial_dims: 2 or 3.
        high_channels: channels of the ASPP output (1/16).
        low_channels: channels of the encoder's 1/4 features.
        low_reduced: channels the 1/4 features are reduced to before space-to-depth (32).
        channels: channels of the decoder's output at 1/4 (256); the 1/16 convolutions have
            ``channels · 4^d`` (4096 in 2D).
        kernel_size: kernel of the depthwise convolutions (7).
    """

    def __init__(self, spatial_dims: int, high_channels: int, low_channels: int, low_reduced: int = 32,
                 channels: int = 256, kernel_size: int = 7) -> None:
        super().__init__()
        d = spatial_dims
        fold = _BLOCK ** d
        self.reduce = ConvNormAct(d, low_channels, low_reduced, 1)
        self.convs = nn.Sequential(SeparableConv(d, high_channels + low_reduced * fold, channels * fold, kernel_size),
                                   SeparableConv(d, channels * fold, channels * fold, kernel_size))

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        folded = space_to_depth(self.reduce(low), _BLOCK)
        return depth_to_space(self.convs(torch.cat([high, folded], dim=1)), _BLOCK)


def _head(spatial_dims: int, in_channels: int, mid_channels: int, out_channels: int,
          kernel_size: int) -> nn.Sequential:
    return nn.Sequential(SeparableConv(spatial_dims, in_channels, mid_channels, kernel_size),
                         Conv[Conv.CONV, spatial_dims](mid_channels, out_channels, 1))


@register(
    name="deeperlab",
    full_name="DeeperLab (Xception-71)",
    paper="DeeperLab: Single-Shot Image Parser",
    reference="arXiv:1902.05093",
    year=2019,
    task="panoptic",
    spatial_dims=(2, 3),
    size_divisor=16,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 66, "width": 1.0},
    paper_params=63.72,
    paper_params_source=(
        "Derived: the paper gives no parameter count (it reports speed and PQ/PC on Mapillary Vistas, 66 classes). "
        "Ours at the paper's layer sizes: Xception-71 trunk 40.29M (as Panoptic-DeepLab's) + ASPP 3.02M (256, "
        "separable branches) + decoder 20.20M (1x1 to 32, S2D, two 7x7 separable convolutions to 4096, D2S) + "
        "five heads 0.22M = 63.72M, pinned to our count."
    ),
    test_config={"width": 0.0625, "middle_units": 1, "aspp_channels": 16, "low_reduced": 4,
                 "decoder_channels": 4, "semantic_channels": 8, "instance_channels": 8, "rates": (1, 2, 3)},
    notes=(
        "Sizes from Sec. 3 of the paper: Xception-71 + ASPP at output stride 16; decoder: 1/4 features reduced to "
        "32 by 1x1, space-to-depth (block 4) to 1/16, concatenated with the ASPP output, two 7x7 depthwise-"
        "separable convolutions to 4096 channels, depth-to-space (block 4) to 256 channels at 1/4; five heads of "
        "a 7x7 separable convolution (semantic 256, instance 64) and a 1x1 convolution. Our readings where the "
        "paper leaves room: the 1x1 reduction of the ASPP output is ASPP's own 256-channel projection; the middle "
        "offsets follow the star of edges centre <-> corners (the paper's keypoints: 4 box corners and the centre "
        "of mass); the heatmap is trained as logits. The wider MobileNetV2 variant (Light DeeperLab) is not built. "
        "Group the outputs into objects with segarch.instances.deeperlab.DeeperLabDecoder. 3D (an extension): "
        "9 keypoints (8 box corners and the centre), space-to-depth folds 4^3 positions, so the 1/16 convolutions "
        "have decoder_channels * 64 channels."
    ),
)
class DeeperLab(MultiHeadNet):
    """DeeperLab: semantic logits, keypoint heatmaps and short-, middle- and long-range offsets from one network.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: semantic classes (stuff and things).
        width: Xception-71 width multiplier (1.0).
        middle_units: Xception middle-flow units (16).
        aspp_channels: ASPP channels (256).
        rates: ASPP rates ((6, 12, 18) at output stride 16).
        low_reduced: channels the 1/4 features are reduced to before space-to-depth (32).
        decoder_channels: channels of the decoder's output at 1/4 (256; 4096 before depth-to-space in 2D).
        semantic_channels: the semantic head's width (256).
        instance_channels: the width of each instance head (64).
        kernel_size: kernel of the decoder's and heads' depthwise convolutions (7).

    ``forward(x)``: sizes multiples of 16 → ``{"semantic": (B, out_channels, *S), "keypoints": (B, K, *S),
    "short_offset": (B, K·d, *S), "middle_offset": (B, 2(K-1)·d, *S), "long_offset": (B, K·d, *S)}`` at the
    input's size ``S``, with ``K = 2^d + 1`` keypoints (:func:`keypoint_count`; keypoint 0 is the centre of mass,
    then the box corners) and the edges of :func:`keypoint_edges`; channels ``k·d + i`` of an offset hold axis
    ``i`` (Z, Y, X order) for keypoint (or edge) ``k``, in pixels.

    Examples::

        >>> net = DeeperLab(2, 3, 19)
        >>> {k: tuple(v.shape) for k, v in net(torch.zeros(1, 3, 64, 64)).items()}["middle_offset"]
        (1, 16, 64, 64)
    """

    size_divisor = 16

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, width: float = 1.0,
                 middle_units: int = 16, aspp_channels: int = 256, rates: Sequence[int] = (6, 12, 18),
                 low_reduced: int = 32, decoder_channels: int = 256, semantic_channels: int = 256,
                 instance_channels: int = 64, kernel_size: int = 7) -> None:
        super().__init__()
        net = "DeeperLab"
        check_spatial_dims(spatial_dims, (2, 3), net)
        for option, value in (("aspp_channels", aspp_channels), ("low_reduced", low_reduced),
                              ("decoder_channels", decoder_channels), ("semantic_channels", semantic_channels),
                              ("instance_channels", instance_channels), ("kernel_size", kernel_size)):
            check_positive_int(value, option, net)
        if kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd for {net} (it keeps the size), got {kernel_size}.")
        d = self.spatial_dims = spatial_dims
        self.encoder = AlignedXceptionEncoder(d, in_channels, depth=71, output_stride=16, width=width,
                                              middle_units=middle_units)
        enc = self.encoder.out_channels
        self.aspp = ASPP(d, enc[-1], aspp_channels, rates=rates, fusion="concat", image_pooling=True,
                         separable=True)
        self.decoder = DeeperLabDecoderModule(d, aspp_channels, enc[1], low_reduced, decoder_channels, kernel_size)
        k, edges = keypoint_count(d), len(keypoint_edges(d))
        self.heads = (
            Head("semantic", "semantic", out_channels, description="class logits (stuff and things)"),
            Head("keypoints", "keypoints", k,
                 description="keypoint heatmap logits: centre of mass, then the bounding box's corners"),
            Head("short_offset", "offset", k * d, description="to the nearby keypoint of each type, pixels"),
            Head("middle_offset", "offset", edges * d,
                 description="from near one keypoint to the other keypoint of each edge (keypoint_edges), pixels"),
            Head("long_offset", "offset", k * d, description="from each object pixel to each of its keypoints"),
        )
        self.predictors = nn.ModuleDict({
            h.name: _head(d, decoder_channels, semantic_channels if h.kind == "semantic" else instance_channels,
                          h.channels, kernel_size) for h in self.heads})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_input_shape(x)
        features = self.encoder(x)
        shared = self.decoder(self.aspp(features[-1]), features[1])
        size = x.shape[2:]
        # Offsets are predicted on the 1/4 grid, in that grid's pixels: up-sampled, they are scaled to the input's.
        scale = torch.tensor([s / o for s, o in zip(size, shared.shape[2:])], dtype=x.dtype, device=x.device)
        out = {}
        for head in self.heads:
            y = resize_to(self.predictors[head.name](shared), size)
            if head.kind == "offset":
                y = (y.unflatten(1, (-1, self.spatial_dims)) * scale.view(1, 1, -1, *[1] * self.spatial_dims)
                     ).flatten(1, 2)
            out[head.name] = y
        return out
