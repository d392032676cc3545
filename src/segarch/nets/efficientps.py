"""EfficientPS (Mohan & Valada 2021, "EfficientPS: Efficient Panoptic Segmentation", arXiv:2004.02307), in 2D and 3D.

- **backbone**: EfficientNet-B5 without its squeeze-and-excitation connections, normalisation + leaky ReLU (the
  paper uses in-place activated batch norm, iABN sync, with leaky ReLU: the same parameters); features at 1/4, 1/8,
  1/16 (stages 2, 3, 5: 40, 64, 176 channels) and 1/32 (the 1×1 head convolution, 2048).
- **2-way FPN**: each level has two 1×1 lateral convolutions (256), one for a top-down path (coarse to fine,
  nearest up-sampling, added) and one for a bottom-up path (fine to coarse, nearest down-sampling, added); at
  each level the two paths are summed and a 3×3 depthwise-separable convolution (256) gives P4, P8, P16, P32.
- **semantic head**: P16 and P32 through a dense prediction cell each (DPC: five 3×3 depthwise-separable
  convolutions with dilations (1,6), (1,1), (6,21), (18,15), (6,3) in DeepLab's cell arrangement, concatenated and
  reduced to 128), P4 and P8 through a large-scale feature extractor each (LSFE: two 3×3 separable convolutions,
  128); mismatch-correction modules (MC: two 3×3 separable convolutions, 128, and ×2 bilinear up-sampling) carry
  the DPC sum (1/16) to 1/8 and the 1/8 sum to 1/4; the four 128-channel maps meet at 1/4, are concatenated, and
  a 1×1 convolution gives the class logits, up-sampled ×4. Trained with the paper's hard-pixel log-loss (the
  worst 25% of each image's pixels).
- **instance head** (Sec. 3.4): Mask R-CNN's (:class:`~segarch.nets.mask_rcnn.MaskRCNN`, whose RPN, proposal
  selection, RoIAlign, box head, training and detection this class reuses) on P4–P32: the RPN (a 3×3
  convolution of 256 and ReLU; one anchor size per level, 32 … 256, as the authors' configuration: 8 × the
  stride; aspect ratios 0.5, 1, 2), 7×7 RoIAlign and the box head (two fully connected layers of 1024), and a
  mask head whose four 3×3 convolutions are depthwise-separable with normalisation and leaky ReLU (the paper's
  change: separable convolutions, iABN, leaky ReLU in place of convolutions, batch norm, ReLU), then Mask R-CNN's
  2×2 transposed convolution and per-class 1×1 predictor. The instance head's classes are the thing classes
  (and background); detections are labelled with their semantic class.
- **panoptic fusion** (Sec. 3.5): :class:`segarch.instances.efficientps.EfficientPSFusion` turns one image's
  outputs (detections, their pasted mask logits, the semantic logits) into a panoptic result.

``forward(x)`` in eval mode returns per image Mask R-CNN's detections plus ``"mask_logits"`` (each detection's
mask logits pasted into the image, 0 outside its box) and ``"semantic"`` (the class logits ``(K, *S)``); in train
mode ``forward(x, targets)`` returns Mask R-CNN's five losses and ``"semantic"``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

from segarch.backbones.efficientnet import EfficientNetEncoder
from segarch.blocks import ConvNormAct
from segarch.blocks.region_proposal import RegionProposalHead
from segarch.nets.mask_rcnn import BoxHead, MaskRCNN, batch_to_group_norm, paste_masks
from segarch.blocks.resize import resize_to
from segarch.blocks.separable import SeparableConv
from segarch.layers.checks import check_choice, check_positive_int, check_spatial_dims
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["EfficientPS", "TwoWayFPN", "DensePredictionCell", "EfficientPSSemanticHead", "SeparableMaskHead",
           "DPC_DILATIONS", "LEAKY_RELU", "hard_pixel_loss"]

#: iABN's activation in EfficientPS: leaky ReLU of slope 0.01.
LEAKY_RELU = ("leakyrelu", {"negative_slope": 0.01})
#: The dense prediction cell's dilations (rows, columns) in the order of its five convolutions.
DPC_DILATIONS = ((1, 6), (1, 1), (6, 21), (18, 15), (6, 3))
#: The strides of the 2-way FPN's levels P4–P32.
LEVEL_STRIDES = (4, 8, 16, 32)
#: Narrow widths and anchors for objects of ~16 pixels, for tests and demos.
TEST_CONFIG = {"width": 0.25, "fpn_channels": 16, "semantic_channels": 8, "rpn_channels": 16, "representation": 64,
               "mask_channels": 16, "anchor_sizes": (16, 32, 64, 128), "proposals": (200, 100), "rpn_batch": 64,
               "roi_batch": 64, "detections": 20}


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




class SeparableMaskHead(nn.Sequential):
    """EfficientPS's mask head: four 3×3 depthwise-separable convolutions (normalisation and leaky ReLU after the
    depthwise and the pointwise parts, as iABN), a 2×2 stride-2 transposed convolution (ReLU) and a 1×1
    convolution to one mask logit map per class (Mask R-CNN's last two layers)."""

    def __init__(self, spatial_dims: int, in_channels: int, channels: int, classes: int, convs: int = 4) -> None:
        d = spatial_dims
        layers = [_sep(d, in_channels if i == 0 else channels, channels) for i in range(convs)]
        layers += [Conv[Conv.CONVTRANS, d](channels, channels, 2, stride=2), nn.ReLU(inplace=True),
                   Conv[Conv.CONV, d](channels, classes, 1)]
        super().__init__(*layers)


def hard_pixel_loss(logits: torch.Tensor, target: torch.Tensor, fraction: float = 0.25,
                    ignore_index: int = -1) -> torch.Tensor:
    """EfficientPS's semantic loss: per-pixel cross-entropy averaged over the ``fraction`` of each image's pixels
    with the largest loss (the paper's weights: ``4 / (W·H)`` on the worst 25%, 0 on the rest).

    ``logits`` ``(B, K, *S)``, ``target`` ``(B, *S)`` class ids (``ignore_index``: not counted).
    """
    per_pixel = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="none").flatten(1)
    counted = (target != ignore_index).flatten(1).sum(1)
    losses = []
    for row, n in zip(per_pixel, counted):
        k = max(1, int(round(fraction * int(n))))
        losses.append(row.topk(min(k, row.numel())).values.mean())
    return torch.stack(losses).mean()


@register(
    name="efficientps",
    full_name="EfficientPS (EfficientNet-B5, 2-way FPN, semantic and instance heads)",
    paper="EfficientPS: Efficient Panoptic Segmentation",
    reference="arXiv:2004.02307",
    year=2021,
    task="panoptic",
    spatial_dims=(2, 3),
    size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "thing_classes": tuple(range(11, 19))},
    paper_params=40.89,
    paper_params_source=(
        "Mohan & Valada 2021 (arXiv:2004.02307) give EfficientPS 40.89M on Cityscapes (19 classes, 8 thing "
        "classes). Built here at that configuration: backbone 23.15M, 2-way FPN 1.47M, semantic head 1.21M, RPN "
        "0.59M, box head 13.95M (two fully connected layers of 1024 on 7x7x256 RoIAlign features; class and "
        "class-specific box outputs for 9 classes), mask head 0.54M (four 3x3 separable convolutions of 256 with "
        "their normalisations, a 2x2 transposed convolution, a 1x1 classifier for 9 classes): 40.90M."),
    test_config=TEST_CONFIG,
    test_lr=2e-2,  # 30 steps of the shared tester: 0.52-0.59 of the start (torch seeds 0-2); 5e-3: 0.76
    notes=(
        "out_channels counts the semantic classes (stuff and things); thing_classes names the things (default: "
        "every class but 0), the instance head's classes are those and background, and detections carry their "
        "semantic class. Normalisation: group norm by default (norm='group', as the zoo's mask_rcnn, for the "
        "same reason: trained from scratch at small batches, batch norm's running statistics lag and the "
        "eval-mode proposals miss objects); norm='batch' builds batch norms in place of the paper's iABN sync. "
        "Same count either way. The RPN's 3x3 convolution is a plain one (the authors' configuration; "
        "separable convolutions elsewhere in the instance head); the box head's fully connected layers keep ReLU. "
        "Training targets: Mask R-CNN's (boxes, semantic class labels, masks) plus an optional 'semantic' map; "
        "without it the objects' masks are painted with their classes on class 0. The 2-way FPN's outputs are "
        "separable 3x3 convolutions (plain ones, as in the authors' released code, would add 2.09M). Panoptic "
        "fusion: segarch.instances.efficientps.EfficientPSFusion. 3D (an extension): DPC's (rows, columns) "
        "dilations become (rows, rows, columns); cuboid anchors, trilinear RoIAlign, 28^3 masks."
    ),
)
class EfficientPS(MaskRCNN):
    """EfficientPS: semantic head and Mask R-CNN-style instance head on a 2-way FPN (see the module's docstring).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: semantic classes (stuff and things).
        thing_classes: the semantic classes that are objects (default: every class but 0).
        width: an extra width multiplier of the EfficientNet-B5 backbone (1.0; smaller for tests and demos).
        fpn_channels: the 2-way FPN's width (256).
        semantic_channels: the semantic head's width (128).
        rpn_channels: the RPN's 3×3 convolution width (256).
        representation: the box head's fully connected width (1024).
        mask_channels: the mask head's width (256).
        anchor_sizes: one anchor size per level P4–P32 (32, 64, 128, 256).
        aspect_ratios, proposals, rpn_batch, detections, score_threshold, canonical_size: as for
            :class:`~segarch.nets.mask_rcnn.MaskRCNN`.
        roi_batch: RoIs sampled per image for the box head's loss (256, the authors' configuration).
        hard_pixel_fraction: the share of each image's pixels the semantic loss counts (0.25).
        norm: ``"group"`` (default) or ``"batch"``: every normalisation of the network.

    ``forward(x)`` (eval mode; sizes multiples of 32) → per image ``{"boxes", "scores", "labels" (semantic
    classes), "masks" (probabilities), "mask_logits" (N, *S), "semantic" (K, *S)}``. ``forward(x, targets)``
    (train mode; per image ``{"boxes", "labels" (semantic classes), "masks"}`` and optionally ``"semantic"``
    (*S) class ids) → ``{"rpn_objectness", "rpn_boxes", "classes", "boxes", "masks", "semantic"}``.

    Examples::

        >>> net = EfficientPS(2, 3, 19, thing_classes=range(11, 19)).eval()
        >>> found = net(torch.zeros(1, 3, 256, 512))[0]
        >>> found["semantic"].shape, found["mask_logits"].shape[1:]
        (torch.Size([19, 256, 512]), torch.Size([256, 512]))
    """

    size_divisor = 32
    is_detector = True

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int,
                 thing_classes: Sequence[int] | None = None, width: float = 1.0, fpn_channels: int = 256,
                 semantic_channels: int = 128, rpn_channels: int = 256, representation: int = 1024,
                 mask_channels: int = 256, anchor_sizes: Sequence[float] = (32, 64, 128, 256),
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), proposals: Sequence[int] = (2000, 1000),
                 rpn_batch: int = 256, roi_batch: int = 256, detections: int = 100, score_threshold: float = 0.05,
                 canonical_size: float = 224.0, hard_pixel_fraction: float = 0.25, norm: str = "group") -> None:
        # Not Mask R-CNN's constructor (its ResNet and heads are not EfficientPS's): the attributes its
        # detection methods read are set here.
        SegmentationNet.__init__(self)
        net = "EfficientPS"
        check_spatial_dims(spatial_dims, (2, 3), net)
        check_choice(norm, ("group", "batch"), "norm", net)
        for option, value in (("fpn_channels", fpn_channels), ("semantic_channels", semantic_channels),
                              ("rpn_channels", rpn_channels), ("representation", representation),
                              ("mask_channels", mask_channels), ("rpn_batch", rpn_batch), ("roi_batch", roi_batch),
                              ("detections", detections)):
            check_positive_int(value, option, net)
        if not isinstance(out_channels, int) or out_channels < 2:
            raise ValueError(f"`out_channels` of {net} counts the semantic classes (stuff and things) and must be "
                             f">= 2, got {out_channels!r}.")
        things = tuple(range(1, out_channels)) if thing_classes is None else tuple(int(c) for c in thing_classes)
        if not things or len(set(things)) != len(things) or not all(0 <= c < out_channels for c in things):
            raise ValueError(f"`thing_classes` of {net} must name distinct classes in 0..{out_channels - 1} (at "
                             f"least one), got {thing_classes!r}.")
        if len(anchor_sizes) != len(LEVEL_STRIDES) or len(proposals) != 2:
            raise ValueError(f"`anchor_sizes` must give 4 sizes (P4-P32) and `proposals` 2 counts (train, "
                             f"inference) for {net}, got {anchor_sizes!r} and {proposals!r}.")
        if not 0 < hard_pixel_fraction <= 1:
            raise ValueError(f"`hard_pixel_fraction` must be in (0, 1], got {hard_pixel_fraction!r}.")
        d = self.spatial_dims = spatial_dims
        self.semantic_classes, self.thing_classes = out_channels, things
        self.classes = len(things) + 1  # the instance head's: background and the things
        self.anchor_sizes, self.aspect_ratios = tuple(anchor_sizes), tuple(aspect_ratios)
        self.proposals, self.rpn_batch, self.roi_batch = tuple(proposals), rpn_batch, roi_batch
        self.detections, self.score_threshold, self.canonical_size = detections, score_threshold, canonical_size
        self.hard_pixel_fraction = hard_pixel_fraction
        self.box_weights = [10.0] * d + [5.0] * d
        self.encoder = EfficientNetEncoder(d, in_channels, "b5", squeeze_excitation=False, act=LEAKY_RELU,
                                           width=width)
        self.fpn = TwoWayFPN(d, self.encoder.out_channels, fpn_channels)
        self.semantic_head = EfficientPSSemanticHead(d, fpn_channels, semantic_channels, out_channels)
        self.rpn = RegionProposalHead(d, fpn_channels, rpn_channels, len(self.aspect_ratios))
        self.box_head = BoxHead(d, fpn_channels, 7, representation, self.classes)
        self.mask_head = SeparableMaskHead(d, fpn_channels, mask_channels, self.classes)
        if norm == "group":
            batch_to_group_norm(self)

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """P4–P32 of ``x`` (the 2-way FPN's outputs)."""
        return self.fpn(self.encoder(x))

    def _class_lookup(self, device) -> torch.Tensor:
        """Semantic class → the instance head's class (0: not a thing)."""
        lookup = torch.zeros(self.semantic_classes, dtype=torch.long, device=device)
        lookup[list(self.thing_classes)] = torch.arange(1, self.classes, device=device)
        return lookup

    def _instance_target(self, target: dict) -> dict:
        labels = target["labels"].long()
        if len(labels) and (labels.min() < 0 or labels.max() >= self.semantic_classes):
            raise ValueError(f"`targets` labels must be semantic classes in 0..{self.semantic_classes - 1}, got "
                             f"{labels.tolist()}.")
        index = self._class_lookup(labels.device)[labels]
        keep = index > 0  # objects of stuff classes are not the instance head's
        return {"boxes": target["boxes"][keep], "labels": index[keep], "masks": target["masks"][keep]}

    def _semantic_target(self, target: dict, shape) -> torch.Tensor:
        if "semantic" in target:
            semantic = torch.as_tensor(target["semantic"]).long()
            if tuple(semantic.shape) != tuple(shape):
                raise ValueError(f"`targets` 'semantic' must be the image's shape {tuple(shape)}, got "
                                 f"{tuple(semantic.shape)}.")
            return semantic
        semantic = torch.zeros(shape, dtype=torch.long)
        for mask, label in zip(target["masks"], target["labels"]):
            semantic[mask.cpu() > 0] = int(label)
        return semantic

    def forward(self, x: torch.Tensor, targets: Sequence[dict] | None = None):
        self.check_input_shape(x)
        self.check_targets(x, targets, net="EfficientPS", keys="'boxes', 'labels', 'masks' and optionally 'semantic'",
                           action="predict")
        shape = tuple(x.shape[2:])
        pyramid = self.pyramid(x)
        semantic = resize_to(self.semantic_head(pyramid), shape)
        rpn = self._rpn(pyramid)
        proposals = self._proposals(rpn, shape)
        if targets is not None and self.training:
            instance_targets = [self._instance_target(t) for t in targets]
            wanted = torch.stack([self._semantic_target(t, shape) for t in targets]).to(x.device)
            return {**self._rpn_losses(rpn, instance_targets),
                    **self._roi_losses(pyramid, proposals, instance_targets),
                    "semantic": hard_pixel_loss(semantic, wanted, self.hard_pixel_fraction)}
        results = self._detect(pyramid, proposals, shape)
        boxes = [r["boxes"] for r in results]
        classes = torch.cat([r["labels"] for r in results])
        if len(classes):  # the chosen class's mask logits, pasted (the fusion's MLA)
            logits = self.mask_logits(pyramid, boxes)[torch.arange(len(classes)), classes]
        semantic_class = torch.tensor((0, *self.thing_classes), device=x.device)
        start = 0
        for b, r in enumerate(results):
            n = len(r["boxes"])
            r["mask_logits"] = (paste_masks(logits[start:start + n], r["boxes"], shape) if n
                                else semantic.new_zeros(0, *shape))
            r["labels"] = semantic_class[r["labels"]]
            r["semantic"] = semantic[b]
            start += n
        return results
