"""EfficientPS, its dense parts (Mohan & Valada 2021, "EfficientPS: Efficient Panoptic Segmentation",
arXiv:2004.02307).

- **backbone**: EfficientNet-B5 without its squeeze-and-excitation connections, batch norm + leaky ReLU (the paper
  uses in-place activated batch norm, iABN sync, with leaky ReLU: the same parameters); features at 1/4, 1/8,
  1/16 (stages 2, 3, 5: 40, 64, 176 channels) and 1/32 (the 1×1 head convolution, 2048).
- **2-way FPN**: each level has two 1×1 lateral convolutions (256), one for a top-down path (coarse to fine,
  nearest up-sampling, added) and one for a bottom-up path (fine to coarse, nearest down-sampling, added); at
  each level the two paths are summed and a 3×3 depthwise-separable convolution (256) gives P4, P8, P16, P32.
- **semantic head**: P16 and P32 through a dense prediction cell each (DPC: five 3×3 depthwise-separable
  convolutions with dilations (1,6), (1,1), (6,21), (18,15), (6,3) in DeepLab's cell arrangement, concatenated and
  reduced to 128), P4 and P8 through a large-scale feature extractor each (LSFE: two 3×3 separable convolutions,
  128); mismatch-correction modules (MC: two 3×3 separable convolutions, 128, and ×2 bilinear up-sampling) carry
  the DPC sum (1/16) to 1/8 and the 1/8 sum to 1/4; the four 128-channel maps meet at 1/4, are concatenated, and
  a 1×1 convolution gives the class logits, up-sampled ×4.
- **region-proposal maps**: the RPN of Mask R-CNN shared over P4–P32: a 3×3 convolution (256, ReLU), then per
  anchor an objectness logit and ``2·d`` box deltas.

The instance head (Mask R-CNN's RoIAlign, box and mask heads) and the panoptic fusion are not built: they wait
for RoIAlign and NMS operators (torchvision's do not load beside this CPU torch build).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

from segarch.backbones.efficientnet import EfficientNetEncoder
from segarch.blocks import ConvNormAct
from segarch.blocks.region_proposal import RegionProposalHead
from segarch.blocks.resize import resize_to
from segarch.blocks.separable import SeparableConv
from segarch.layers.checks import check_positive_int, check_spatial_dims
from segarch.nets._heads import Head, MultiHeadNet
from segarch.zoo import register

__all__ = ["EfficientPS", "TwoWayFPN", "DensePredictionCell", "EfficientPSSemanticHead", "RegionProposalHead",
           "DPC_DILATIONS", "LEAKY_RELU"]

#: iABN's activation in EfficientPS: leaky ReLU of slope 0.01.
LEAKY_RELU = ("leakyrelu", {"negative_slope": 0.01})
#: The dense prediction cell's dilations (rows, columns) in the order of its five convolutions.
DPC_DILATIONS = ((1, 6), (1, 1), (6, 21), (18, 15), (6, 3))
#: The FPN levels EfficientPS reads and the strides of their region-proposal maps.
LEVEL_STRIDES = (4, 8, 16, 32)


def _sep(d: int, in_channels: int, out_channels: int, dilation=1) -> SeparableConv:
    return SeparableConv(d, in_channels, out_channels, 3, dilation=dilation, act=LEAKY_RELU,
                         depthwise_act=LEAKY_RELU)


class TwoWayFPN(nn.Module):
    """EfficientPS's 2-way feature pyramid: top-down and bottom-up paths in parallel, summed per level.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the encoder's features, finest first.
        channels: the pyramid's width (256).

    ``forward(features)`` → ``[P_finest, …, P_coarsest]`` at the features' sizes, ``channels`` each.
    """

    def __init__(self, spatial_dims: int, in_channels, channels: int = 256) -> None:
        super().__init__()
        d = spatial_dims
        self.top_down_laterals = nn.ModuleList(ConvNormAct(d, c, channels, 1, act=LEAKY_RELU) for c in in_channels)
        self.bottom_up_laterals = nn.ModuleList(ConvNormAct(d, c, channels, 1, act=LEAKY_RELU) for c in in_channels)
        self.outputs = nn.ModuleList(_sep(d, channels, channels) for _ in in_channels)

    def forward(self, features) -> list[torch.Tensor]:
        top_down = [lateral(f) for lateral, f in zip(self.top_down_laterals, features)]
        bottom_up = [lateral(f) for lateral, f in zip(self.bottom_up_laterals, features)]
        for i in range(len(top_down) - 1, 0, -1):  # coarse → fine
            top_down[i - 1] = top_down[i - 1] + F.interpolate(top_down[i], size=top_down[i - 1].shape[2:])
        for i in range(1, len(bottom_up)):  # fine → coarse
            bottom_up[i] = bottom_up[i] + F.interpolate(bottom_up[i - 1], size=bottom_up[i].shape[2:])
        return [conv(a + b) for conv, a, b in zip(self.outputs, top_down, bottom_up)]


def _dilation(spatial_dims: int, rows: int, columns: int) -> tuple[int, ...]:
    # 3D (an extension): Z shares the rows' rate
    return (rows, columns) if spatial_dims == 2 else (rows, rows, columns)


class DensePredictionCell(nn.Module):
    """DeepLab's dense prediction cell (Chen et al. 2018, arXiv:1809.04184) as EfficientPS uses it.

    Five 3×3 depthwise-separable convolutions (``in_channels`` wide) with the dilations of :data:`DPC_DILATIONS`:
    the first reads the input, the second, third and fourth read the first, the fifth reads the fourth; the five
    outputs are concatenated and a 1×1 convolution makes ``out_channels``.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        d = spatial_dims
        self.convs = nn.ModuleList(_sep(d, in_channels, in_channels, _dilation(d, *r)) for r in DPC_DILATIONS)
        self.project = ConvNormAct(d, 5 * in_channels, out_channels, 1, act=LEAKY_RELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.convs[0](x)
        second, third, fourth = (conv(first) for conv in self.convs[1:4])
        fifth = self.convs[4](fourth)
        return self.project(torch.cat([first, second, third, fourth, fifth], dim=1))


class EfficientPSSemanticHead(nn.Module):
    """EfficientPS's semantic head over P4, P8, P16, P32 (see the module's docstring): logits at 1/4.

    Args:
        spatial_dims: 2 or 3.
        in_channels: the pyramid's width (256).
        channels: the width of DPC, LSFE and MC outputs (128).
        out_channels: classes.
    """

    def __init__(self, spatial_dims: int, in_channels: int, channels: int, out_channels: int) -> None:
        super().__init__()
        d = spatial_dims
        self.dpc = nn.ModuleList(DensePredictionCell(d, in_channels, channels) for _ in range(2))  # P16, P32
        self.lsfe = nn.ModuleList(nn.Sequential(_sep(d, in_channels, channels), _sep(d, channels, channels))
                                  for _ in range(2))  # P4, P8
        self.mc = nn.ModuleList(nn.Sequential(_sep(d, channels, channels), _sep(d, channels, channels))
                                for _ in range(2))  # 1/16 → 1/8, 1/8 → 1/4 (then ×2 up-sampling)
        self.classifier = Conv[Conv.CONV, d](4 * channels, out_channels, 1)

    @staticmethod
    def _up2(x: torch.Tensor) -> torch.Tensor:
        return resize_to(x, [2 * s for s in x.shape[2:]])

    def forward(self, pyramid) -> torch.Tensor:
        p4, p8, p16, p32 = pyramid
        s16, s32 = self.dpc[0](p16), self.dpc[1](p32)
        to8 = self._up2(self.mc[0](s16 + resize_to(s32, s16.shape[2:])))
        l8 = self.lsfe[1](p8) + resize_to(to8, p8.shape[2:])
        to4 = self._up2(self.mc[1](l8))
        l4 = self.lsfe[0](p4) + resize_to(to4, p4.shape[2:])
        size = l4.shape[2:]
        return self.classifier(torch.cat([l4, resize_to(l8, size), resize_to(s16, size), resize_to(s32, size)], 1))


@register(
    name="efficientps",
    full_name="EfficientPS (EfficientNet-B5, dense parts)",
    paper="EfficientPS: Efficient Panoptic Segmentation",
    reference="arXiv:2004.02307",
    year=2021,
    task="panoptic",
    spatial_dims=(2, 3),
    size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19},
    paper_params=26.42,
    paper_params_source=(
        "Derived from the paper's figure: Mohan & Valada 2021 (arXiv:2004.02307) give EfficientPS 40.89M on "
        "Cityscapes (19 classes, 8 thing classes) for the whole network. What is built here (backbone, 2-way FPN, "
        "semantic head 1.21M, RPN 0.59M) counts 26.42M (backbone 23.15M, FPN 1.47M); the RoI heads not built count "
        "14.48M by the paper's sizes (box head: two fully connected layers of 1024 on 7x7x256 RoIAlign features, "
        "13.90M, class and box outputs for 9 classes, 0.05M; mask head: four 3x3 separable convolutions of 256, a "
        "2x2 transposed convolution and a 1x1 classifier for 9 classes, 0.54M), and 26.42M + 14.48M = 40.90M "
        "against the paper's 40.89M. The card's figure is pinned to the dense parts' 26.42M (derived)."
    ),
    test_config={"width": 0.125, "fpn_channels": 8, "semantic_channels": 8, "rpn_channels": 8},
    test_lr=2e-2,
    notes=(
        "Dense parts only: EfficientNet-B5 without squeeze-and-excitation, BN + leaky ReLU (0.01) in place of "
        "iABN sync; 2-way FPN (two 1x1 laterals per level, 256, nearest re-sampling in both paths, a 3x3 "
        "separable output convolution per level: plain 3x3 convolutions, as in the authors' released code, would "
        "add 2.09M and miss the paper's 40.89M); semantic head of DPC (P16, P32), LSFE (P4, P8) and MC modules "
        "(128) with a 1x1 classifier, logits up-sampled x4 to the input; RPN (3x3 256 conv + ReLU, 3 anchors per "
        "location: objectness logits and box deltas) on P4-P32. Waiting for RoIAlign/NMS: the Mask R-CNN RoI "
        "heads (box head 2 x FC 1024, mask head 4 x sep conv 256 + deconv), proposal selection and the panoptic "
        "fusion; so no grouping decoder yet. 3D (an extension): DPC's (rows, columns) dilations become (rows, rows, "
        "columns); 6 box deltas per anchor."
    ),
)
class EfficientPS(MultiHeadNet):
    """EfficientPS's dense parts: semantic logits and region-proposal maps (objectness, box deltas) per level.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: semantic classes (stuff and things).
        width: an extra width multiplier of the EfficientNet-B5 backbone (1.0; smaller for tests and demos).
        fpn_channels: the 2-way FPN's width (256).
        semantic_channels: the semantic head's width (128).
        rpn_channels: the RPN's 3×3 convolution width (256).
        anchors: anchors per location (3: aspect ratios 0.5, 1, 2 at one scale).

    ``forward(x)``: sizes multiples of 32 → ``{"semantic": (B, out_channels, *S), "objectness_4": (B, A, *S/4),
    "boxes_4": (B, A·2d, *S/4), …, "objectness_32", "boxes_32"}``; box deltas per anchor in the usual
    ``(d centre deltas, d log-size deltas)`` order, Z, Y, X.

    Examples::

        >>> net = EfficientPS(2, 3, 19)
        >>> net.output_shapes((1, 3, 512, 1024))["boxes_8"]
        (1, 12, 64, 128)
    """

    size_divisor = 32

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, width: float = 1.0,
                 fpn_channels: int = 256, semantic_channels: int = 128, rpn_channels: int = 256,
                 anchors: int = 3) -> None:
        super().__init__()
        net = "EfficientPS"
        check_spatial_dims(spatial_dims, (2, 3), net)
        for option, value in (("fpn_channels", fpn_channels), ("semantic_channels", semantic_channels),
                              ("rpn_channels", rpn_channels), ("anchors", anchors)):
            check_positive_int(value, option, net)
        d = self.spatial_dims = spatial_dims
        self.encoder = EfficientNetEncoder(d, in_channels, "b5", squeeze_excitation=False, act=LEAKY_RELU,
                                           width=width)
        self.fpn = TwoWayFPN(d, self.encoder.out_channels, fpn_channels)
        self.semantic_head = EfficientPSSemanticHead(d, fpn_channels, semantic_channels, out_channels)
        self.rpn = RegionProposalHead(d, fpn_channels, rpn_channels, anchors)
        heads = [Head("semantic", "semantic", out_channels, description="class logits (stuff and things)")]
        for s in LEVEL_STRIDES:
            heads += [Head(f"objectness_{s}", "objectness", anchors, s, f"region-proposal logits on P{s}, per anchor"),
                      Head(f"boxes_{s}", "boxes", anchors * 2 * d, s, f"region-proposal box deltas on P{s}")]
        self.heads = tuple(heads)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.check_input_shape(x)
        pyramid = self.fpn(self.encoder(x))
        out = {"semantic": resize_to(self.semantic_head(pyramid), x.shape[2:])}
        for s, level in zip(LEVEL_STRIDES, pyramid):
            out[f"objectness_{s}"], out[f"boxes_{s}"] = self.rpn(level)
        return out
