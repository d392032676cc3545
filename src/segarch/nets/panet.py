"""PANet (Liu et al. 2018, "Path Aggregation Network for Instance Segmentation", arXiv:1803.01534): Mask R-CNN
(:class:`~segarch.nets.mask_rcnn.MaskRCNN`, ResNet-50-FPN) with its three additions, in 2D and 3D.

- **bottom-up path augmentation** (Sec. 3.1, Fig. 2): ``N2 = P2``; each ``N_{i+1}`` is a 3×3 stride-2
  convolution of ``N_i`` added to ``P_{i+1}``, then a 3×3 convolution (256 channels, every convolution followed
  by ReLU). N2–N5 replace P2–P5 everywhere (the RPN, with its extra stride-2 level, and both RoI heads).
- **adaptive feature pooling** (Sec. 3.2, Fig. 6): every RoI is pooled from all four levels N2–N5; each level's
  grid goes through the head's first parameter layer (the box head's first fully connected layer, the mask head's
  first convolution), shared by the levels, and the four results are fused by element-wise max before the rest
  of the head.
- **fully-connected fusion** of the mask branch (Sec. 3.3, Fig. 4): from the FCN's third convolution a short
  path of two 3×3 convolutions (``conv4_fc``: 256; ``conv5_fc``: 128, half) and one fully connected layer
  predicts a class-agnostic 28×28 mask, added to every class's 28×28 FCN mask logits.

Training and inference are Mask R-CNN's. 3D (an extension): the fully connected mask fusion reads ``conv5_fc``
average-pooled to 7³ and predicts a 7³ mask up-sampled (trilinear) to 28³ — at the 2D sizes (128·14³ inputs to
28³ outputs) the layer would hold 7.7 billion weights.
"""

from __future__ import annotations

import inspect
from typing import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

from segarch.layers.detection import roi_align
from segarch.nets.mask_rcnn import ROI_LEVELS, TEST_CONFIG, BoxHead, MaskRCNN
from segarch.zoo import register

__all__ = ["PANet", "BottomUpPath", "AdaptiveBoxHead", "FusedMaskHead", "pool_from_all_levels"]


def pool_from_all_levels(pyramid: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor],
                         output_size: int, sampling_ratio: int = 2) -> list[torch.Tensor]:
    """RoIAlign of every image's ``boxes`` on every level N2–N5 (adaptive feature pooling): one ``(Σn, C,
    *output_size)`` grid per level, finest first."""
    rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)])
    return [roi_align(features, rois, output_size, 1 / 2 ** k, sampling_ratio)
            for k, features in zip(ROI_LEVELS, pyramid)]


class BottomUpPath(nn.Module):
    """PANet's bottom-up path: N2 = P2, ``N_{i+1} = ReLU(conv3×3(ReLU(conv3×3/2(N_i)) + P_{i+1}))``."""

    def __init__(self, spatial_dims: int, channels: int, levels: int = 4) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.down = nn.ModuleList(conv(channels, channels, 3, stride=2, padding=1) for _ in range(levels - 1))
        self.fuse = nn.ModuleList(conv(channels, channels, 3, padding=1) for _ in range(levels - 1))

    def forward(self, pyramid: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        out = [pyramid[0]]
        for down, fuse, lateral in zip(self.down, self.fuse, pyramid[1:]):
            out.append(F.relu(fuse(F.relu(down(out[-1])) + lateral)))
        return out


class AdaptiveBoxHead(BoxHead):
    """The box head on adaptively pooled features: ``fc6`` (ReLU) on each level's grid, element-wise max over the
    levels, then ``fc7`` and the predictions as in :class:`~segarch.nets.mask_rcnn.BoxHead`."""

    def forward(self, levels: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        fused = torch.stack([F.relu(self.fc6(grid.flatten(1))) for grid in levels]).amax(0)
        x = F.relu(self.fc7(fused))
        return self.classes(x), self.boxes(x)


class FusedMaskHead(nn.Module):
    """PANet's mask head: ``conv1`` (shared) on each level's grid, max over the levels, ``conv2``–``conv4``, the
    2×2 stride-2 transposed convolution and the per-class 1×1 predictor (Mask R-CNN's FCN), plus the fully
    connected fusion path from ``conv3``: ``conv4_fc``, ``conv5_fc`` (half the channels) and a fully connected
    layer to one class-agnostic mask, added to every class's logits."""

    def __init__(self, spatial_dims: int, in_channels: int, channels: int, classes: int, pooled: int = 14) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.spatial_dims, self.mask_size = spatial_dims, 2 * pooled
        self.convs = nn.ModuleList(conv(in_channels if i == 0 else channels, channels, 3, padding=1)
                                   for i in range(4))
        self.upsample = Conv[Conv.CONVTRANS, spatial_dims](channels, channels, 2, stride=2)
        self.predictor = conv(channels, classes, 1)
        self.conv4_fc = conv(channels, channels, 3, padding=1)
        self.conv5_fc = conv(channels, channels // 2, 3, padding=1)
        # 2D: the paper's fc from 14×14 to 28×28; 3D: from 7³ to 7³ (see the module's docstring)
        self.fc_grid = pooled if spatial_dims == 2 else pooled // 2
        self.fc_mask = self.mask_size if spatial_dims == 2 else pooled // 2
        self.fc = nn.Linear(channels // 2 * self.fc_grid ** spatial_dims, self.fc_mask ** spatial_dims)

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        d = self.spatial_dims
        x = torch.stack([F.relu(self.convs[0](grid)) for grid in levels]).amax(0)
        x = F.relu(self.convs[2](F.relu(self.convs[1](x))))
        fcn = self.predictor(F.relu(self.upsample(F.relu(self.convs[3](x)))))
        short = F.relu(self.conv5_fc(F.relu(self.conv4_fc(x))))
        if short.shape[-1] != self.fc_grid:
            short = F.adaptive_avg_pool3d(short, self.fc_grid)
        agnostic = self.fc(short.flatten(1)).view(len(x), 1, *(self.fc_mask,) * d)
        if self.fc_mask != self.mask_size:
            agnostic = F.interpolate(agnostic, size=fcn.shape[2:], mode="trilinear", align_corners=False)
        return fcn + agnostic


@register(
    name="panet",
    full_name="PANet (Mask R-CNN ResNet-50-FPN with path aggregation)",
    paper="Path Aggregation Network for Instance Segmentation",
    reference="arXiv:1803.01534",
    year=2018,
    task="instance",
    spatial_dims=(2, 3),
    size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 91},
    paper_params=68.50,
    paper_params_source=(
        "Pinned, derived (we found no count in the paper): Mask R-CNN R50-FPN as torchvision counts it "
        "(44,401,393, 91-entry COCO head, batch norms frozen) plus PANet's layers at the paper's widths: the "
        "bottom-up path (6 3×3 convolutions of 256: 3,540,480), the mask branch's conv4_fc (590,080) and "
        "conv5_fc (295,040) and its fc from 128·14·14 to 28·28 (19,669,776) = 68,496,769; adaptive feature "
        "pooling shares each head's first layer among the levels (as in the authors' Detectron code), adding "
        "nothing. The backbone's trainable norms (group norms by default) add 53,120 here (68.55M)."),
    test_config=TEST_CONFIG,
    test_lr=1e-2,
    notes=(
        "Built on the zoo's mask_rcnn (its notes apply: plain-torch RoIAlign and NMS, trainable group norms in "
        "the backbone). "
        "N2-N5 feed the RPN too (with N6, a stride-2 sub-sampling of N5). The paper's other additions "
        "(synchronised batch norm, multi-scale training, heavier heads in its ablation) are training choices or "
        "variants, not built. The fully connected fusion's mask is added as logits (no activation). 3D (an "
        "extension): that fc reads conv5_fc pooled to 7^3 and predicts a 7^3 mask up-sampled to 28^3."),
)
class PANet(MaskRCNN):
    """PANet: Mask R-CNN with bottom-up path augmentation, adaptive feature pooling and fully-connected mask
    fusion (see the module's docstring). Arguments, inputs and outputs as :class:`MaskRCNN`'s.

    Examples::

        >>> net = PANet(2, 1, 2).eval()
        >>> detections = net(torch.zeros(1, 1, 256, 256))
        >>> sorted(detections[0])
        ['boxes', 'labels', 'masks', 'scores']
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, **options) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, **options)
        d = spatial_dims
        channels = self.fpn.output[0].out_channels
        self.bottom_up = BottomUpPath(d, channels)
        self.box_head = AdaptiveBoxHead(d, channels, 7, self.box_head.fc7.out_features, out_channels)
        self.mask_head = FusedMaskHead(d, channels, self.mask_head[0].out_channels, out_channels)

    # Mask R-CNN's options are PANet's: the zoo reads them (and checks users' options) from this signature.
    __init__.__signature__ = inspect.signature(MaskRCNN.__init__)

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """N2–N5 of ``x``."""
        return self.bottom_up(super().pyramid(x))

    def box_predictions(self, pyramid, boxes) -> tuple[torch.Tensor, torch.Tensor]:
        return self.box_head(pool_from_all_levels(pyramid, boxes, 7))

    def mask_logits(self, pyramid, boxes) -> torch.Tensor:
        return self.mask_head(pool_from_all_levels(pyramid, boxes, 14))
