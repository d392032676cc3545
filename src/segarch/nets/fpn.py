"""Semantic FPN: the semantic segmentation branch of Panoptic FPN (Kirillov et al., CVPR 2019, arXiv:1901.02446).

A ResNet with a feature pyramid (P2–P5, 256 channels). Each level goes through as many stages of
3×3 convolution (128 channels), group norm, ReLU and ×2 bilinear up-sampling as it needs to reach
1/4 scale (P2: one convolution and no up-sampling, P5: three stages); the four maps are summed, a
1×1 convolution predicts the classes at 1/4 scale and ×4 bilinear up-sampling returns to the input
(Sec. 3.2, Fig. 3).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from monai.networks.layers.factories import Conv

from segarch.backbones import ResNetEncoder
from segarch.backbones.resnet import RESNET_LAYERS
from segarch.blocks import ConvNormAct
from segarch.blocks.feature_pyramid import FeaturePyramid
from segarch.blocks.resize import interp_mode, resize_to
from segarch.layers.checks import check_choice, check_positive_int, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["SemanticFPN"]


def _group_norm(channels: int) -> tuple:
    # 32 groups as in the paper; fewer for a narrow width, so that every group keeps at least 2 channels: a group
    # of one channel on P5's 1×1 map (a 32-px input) would hold a single value, which group norm refuses.
    groups = math.gcd(32, channels)
    if channels // groups < 2:
        groups = math.gcd(32, channels // 2) if channels >= 2 else 1
    return ("group", {"num_groups": groups})


@register(
    name="semantic_fpn", full_name="Semantic FPN (Panoptic FPN semantic branch, ResNet-101)",
    paper="Panoptic Feature Pyramid Networks", reference="arXiv:1901.02446", year=2019, task="semantic",
    spatial_dims=(2, 3), size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "depth": 101},
    paper_params=47.5,
    paper_params_source="Pinned: the paper gives no count; 47.5M follows from Sec. 3 (ResNet-101 without the "
                        "classifier 42.5M, FPN 256 channels 3.3M, semantic branch 128 channels 1.6M) for its "
                        "Cityscapes semantic-segmentation model (19 classes, RGB).",
    test_config={"depth": 18, "base_width": 8, "fpn_channels": 16, "head_channels": 8},
    notes="Only the semantic branch (no instance branch, no P6). Group norm with 32 groups, fewer when a narrow "
          "width is not a multiple of 32; the FPN convolutions have biases and no norm, as in Detectron. "
          "The up-sampling after each branch stage comes after its convolution, as in Fig. 3.",
)
class SemanticFPN(SegmentationNet):
    """Panoptic FPN's semantic branch on a ResNet, for 2D or 3D semantic segmentation.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes).
        depth: ResNet depth, 18, 34, 50, 101 or 152 (the paper: 50 and 101).
        base_width: width of the ResNet stem (64 in the paper).
        fpn_channels: width of the pyramid levels (256).
        head_channels: width of the semantic branch's convolutions (128).

    ``forward(x)`` returns logits ``(B, out_channels, *spatial)``; spatial sizes must be multiples of 32.

    Examples::

        >>> net = SemanticFPN(2, 3, 19, depth=50)
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 19, 64, 64])
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int = 50, base_width: int = 64,
                 fpn_channels: int = 256, head_channels: int = 128) -> None:
        super().__init__()
        check_spatial_dims(spatial_dims, (2, 3), "Semantic FPN")
        check_choice(depth, tuple(RESNET_LAYERS), "depth", "Semantic FPN")
        for arg, value in (("base_width", base_width), ("fpn_channels", fpn_channels),
                           ("head_channels", head_channels)):
            check_positive_int(value, arg, "Semantic FPN")
        self.spatial_dims, self.size_divisor = spatial_dims, 32
        self.encoder = ResNetEncoder(spatial_dims, in_channels, depth=depth, base_width=base_width)
        self.fpn = FeaturePyramid(spatial_dims, self.encoder.out_channels[1:], fpn_channels)
        self.branches = nn.ModuleList()
        for level in range(4):  # P2 (1/4) ... P5 (1/32)
            stages = [ConvNormAct(spatial_dims, fpn_channels if s == 0 else head_channels, head_channels, 3,
                                  norm=_group_norm(head_channels)) for s in range(max(1, level))]
            self.branches.append(nn.ModuleList(stages))
        self.classifier = Conv[Conv.CONV, spatial_dims](head_channels, out_channels, 1)
        self._mode = interp_mode(spatial_dims)

    def coarse_logits(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The pyramid P2–P5 of ``x`` and the class logits at 1/4 scale (before the final up-sampling)."""
        pyramid = self.fpn(self.encoder(x)[1:])
        fused = 0
        for level, (p, stages) in enumerate(zip(pyramid, self.branches)):
            for stage in stages:
                p = stage(p)
                if level:
                    p = F.interpolate(p, scale_factor=2, mode=self._mode, align_corners=False)
            fused = fused + p
        return pyramid, self.classifier(fused)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        return resize_to(self.coarse_logits(x)[1], x.shape[2:])
