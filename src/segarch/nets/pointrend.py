"""PointRend (Kirillov et al. 2020, "PointRend: Image Segmentation as Rendering", arXiv:1912.08193), in 2D and 3D:
a point head that predicts labels at chosen real-valued points from fine-grained features and a coarse prediction,
for instance segmentation on Mask R-CNN and for semantic segmentation on a semantic FPN.

- **point head** (Sec. 3.1, "Point head"): at each point, the fine-grained features of P2 (256 channels, bilinear)
  concatenated with the coarse prediction's logits there (K classes), through an MLP of three layers of 256
  channels (ReLU) and a per-class predictor, each layer's input also given the coarse prediction (the reference
  implementation's ``coarse_pred_each_layer``).
- **point selection** (Sec. 3.1): training reads ``N`` points: ``k·N`` random ones (``k = 3``), the ``β·N``
  (``β = 0.75``) most uncertain of them and ``(1 - β)·N`` uniformly random ones; inference refines by adaptive
  subdivision: up-sample ×2 (bilinear), predict the ``N`` most uncertain cells anew, repeat.
- **instance** (:class:`PointRend`, Sec. 4): Mask R-CNN (:class:`~segarch.nets.mask_rcnn.MaskRCNN`, ResNet-50-FPN)
  whose mask head is the lightweight coarse head: 14×14 RoIAlign on P2, a 2×2 stride-2 convolution (256, ReLU),
  two fully connected layers of 1024 (ReLU) and a per-class 7×7 mask; training: the coarse mask's binary
  cross-entropy plus the point head's on ``N = 14²`` points per RoI; inference: 5 subdivision steps of ``N = 28²``
  points, 7×7 → 224×224.
- **semantic** (:class:`PointRendSemanticFPN`, Sec. 5): the zoo's semantic FPN (ResNet-101) predicts coarse
  logits at 1/4 scale; the point head refines them: in training on ``N = 2048`` points per image, at inference
  2 subdivision steps of ``N = 8192`` points up to the input's resolution.
"""

from __future__ import annotations

import inspect
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

from segarch.blocks.resize import interp_mode, resize_to
from segarch.layers.checks import check_positive_int
from segarch.layers.detection import box_sizes, roi_align
from segarch.layers.points import (binary_uncertainty, class_uncertainty, point_sample, subdivide,
                                   training_points)
from segarch.nets.fpn import SemanticFPN
from segarch.nets.mask_rcnn import TEST_CONFIG, MaskRCNN, mask_targets
from segarch.zoo import register

__all__ = ["PointHead", "CoarseMaskHead", "PointRend", "PointRendSemanticFPN"]


class PointHead(nn.Module):
    """PointRend's point head: per point, fine features ``(N, C, P)`` and coarse logits ``(N, K, P)`` through
    ``layers`` shared 1×1 layers of ``channels`` (ReLU), the coarse logits concatenated to every layer's input;
    returns the point's logits ``(N, K, P)``."""

    def __init__(self, fine_channels: int, classes: int, channels: int = 256, layers: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Conv1d((fine_channels if i == 0 else channels) + classes, channels, 1)
                                    for i in range(layers))
        self.predictor = nn.Conv1d(channels + classes, classes, 1)
        nn.init.normal_(self.predictor.weight, std=0.001)  # the reference implementation's initialisation
        nn.init.zeros_(self.predictor.bias)

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        x = fine
        for layer in self.layers:
            x = F.relu(layer(torch.cat([x, coarse], 1)))
        return self.predictor(torch.cat([x, coarse], 1))


class CoarseMaskHead(nn.Module):
    """PointRend's coarse mask head: a 2×2 stride-2 convolution (ReLU) of the 14×14 RoI features, ``fcs`` fully
    connected layers (ReLU) and a fully connected predictor of one 7×7 mask logit map per class."""

    def __init__(self, spatial_dims: int, in_channels: int, channels: int, representation: int, classes: int,
                 pooled: int = 14, fcs: int = 2) -> None:
        super().__init__()
        self.output_size = pooled // 2
        self.spatial_dims, self.classes = spatial_dims, classes
        self.reduce = Conv[Conv.CONV, spatial_dims](in_channels, channels, 2, stride=2)
        cells = self.output_size ** spatial_dims
        self.fcs = nn.ModuleList(nn.Linear(channels * cells if i == 0 else representation, representation)
                                 for i in range(fcs))
        self.predictor = nn.Linear(representation, classes * cells)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.reduce(x)).flatten(1)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return self.predictor(x).view(len(x), self.classes, *(self.output_size,) * self.spatial_dims)


def _signature_with(own, base) -> inspect.Signature:
    """``own``'s named parameters, then ``base``'s that ``own`` does not name: one signature for the zoo to read a
    subclass's options from (``own`` passes the rest to ``base`` as ``**options``)."""
    named = [p for p in inspect.signature(own).parameters.values() if p.kind is not p.VAR_KEYWORD]
    names = {p.name for p in named}
    rest = [p.replace(kind=p.KEYWORD_ONLY) for p in inspect.signature(base).parameters.values()
            if p.name not in names and p.kind is not p.VAR_KEYWORD]
    return inspect.Signature(named + rest)


@register(
    name="pointrend",
    full_name="PointRend (Mask R-CNN ResNet-50-FPN, point head on coarse masks)",
    paper="PointRend: Image Segmentation as Rendering",
    reference="arXiv:1912.08193",
    year=2020,
    task="instance",
    spatial_dims=(2, 3),
    size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 91},
    paper_params=60.78,
    paper_params_source=(
        "Pinned, derived (we found no count in the paper, which compares FLOPs and activations): Mask R-CNN R50-FPN as "
        "torchvision counts it (44,401,393, 91-entry COCO head, batch norms frozen) without its mask head "
        "(2,646,107) plus the reference configuration's coarse mask head (2×2 convolution of 256, fully connected "
        "layers of 1024 and 1024, 7·7·91 outputs: 18,728,555) and point head (3 layers of 256 on 256 + 91 inputs, "
        "91 outputs: 298,932) = 60,782,773. The backbone's trainable norms (group norms by default) add 53,120 "
        "here (60.84M)."),
    test_config={**TEST_CONFIG, "point_channels": 16, "train_points": 49, "subdivision_steps": 2,
                 "subdivision_points": 49},
    test_lr=1e-2,
    notes=(
        "Built on the zoo's mask_rcnn (its notes apply). Configuration of the authors' Detectron2 release: coarse "
        "head and point head read P2 only, class-specific coarse masks and point predictions, binary cross-entropy "
        "for both with weight 1. At inference the subdivision refines only the detected class's mask (the "
        "reference refines all classes and then keeps that one: the same masks, less memory). The reference trains "
        "the mask heads on the box head's refined boxes (TRAIN_ON_PRED_BOXES); here on the proposals, as "
        "mask_rcnn does. 3D (an "
        "extension): trilinear point sampling, 3 subdivision steps by default (7^3 to 56^3 per object)."),
)
class PointRend(MaskRCNN):
    """PointRend for instance segmentation: Mask R-CNN with a coarse 7×7 mask head and a point head (see the
    module's docstring). Mask R-CNN's options (:class:`MaskRCNN`) and:

    Args:
        point_channels: the point head's width (256).
        train_points: points per RoI in training (``N = 14² = 196``).
        oversample: ``k``, random candidates per training point (3).
        importance: ``β``, the share of training points chosen as the most uncertain candidates (0.75).
        subdivision_steps: ×2 refinements at inference (5 in 2D: 7 → 224; 3 in 3D: 7 → 56).
        subdivision_points: cells refined per step and object (``28² = 784``).

    ``forward`` as :class:`MaskRCNN`'s; in training the losses also hold ``"mask_points"``. Masks are predicted
    on the subdivided grid (224×224 per object in 2D) and pasted into the image.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, point_channels: int = 256,
                 train_points: int = 196, oversample: float = 3.0, importance: float = 0.75,
                 subdivision_steps: int | None = None, subdivision_points: int = 784, **options) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, **options)
        subdivision_steps = (5 if spatial_dims == 2 else 3) if subdivision_steps is None else subdivision_steps
        for option, value in (("point_channels", point_channels), ("train_points", train_points),
                              ("subdivision_steps", subdivision_steps), ("subdivision_points", subdivision_points)):
            check_positive_int(value, option, "PointRend")
        self.train_points, self.oversample, self.importance = train_points, oversample, importance
        self.subdivision_steps, self.subdivision_points = subdivision_steps, subdivision_points
        channels = self.fpn.output[0].out_channels
        self.mask_head = CoarseMaskHead(spatial_dims, channels, self.mask_head[0].out_channels,
                                        self.box_head.fc7.out_features, out_channels)
        self.point_head = PointHead(channels, out_channels, point_channels)

    def mask_logits(self, pyramid, boxes) -> torch.Tensor:
        """Coarse mask logits ``(Σn, classes, 7, 7)``, from 14×14 RoIAlign on P2 only."""
        return self.mask_head(roi_align(pyramid[0], _rois(boxes), 14, 1 / 4, 2))

    def _fine_features(self, p2: torch.Tensor, boxes: Sequence[torch.Tensor], points: torch.Tensor) -> torch.Tensor:
        """P2's features ``(Σn, C, P)`` at ``points`` ``(Σn, P, d)`` given in each box's frame."""
        image_size = torch.tensor(p2.shape[2:], dtype=p2.dtype, device=p2.device) * 4
        out, start = [], 0
        for b, image_boxes in enumerate(boxes):
            n = len(image_boxes)
            if n:
                in_image = _box_to_image(points[start:start + n], image_boxes) / image_size
                sampled = point_sample(p2[b:b + 1], in_image.reshape(1, -1, in_image.shape[-1]))
                out.append(sampled.view(p2.shape[1], n, -1).transpose(0, 1))
            start += n
        return torch.cat(out)

    def mask_losses(self, pyramid, rois, classes: torch.Tensor, objects: torch.Tensor,
                    masks: torch.Tensor) -> dict[str, torch.Tensor]:
        if not len(classes):  # no object in the batch: the heads still take part (with no gradient)
            zero = sum(p.sum() for p in [*self.mask_head.parameters(), *self.point_head.parameters()]) * 0
            return {"masks": zero, "mask_points": zero}
        coarse = self.mask_logits(pyramid, rois)
        rows = torch.arange(len(classes), device=classes.device)
        own = coarse[rows, classes]
        losses = {"masks": F.binary_cross_entropy_with_logits(own, mask_targets(masks, rois, objects, own))}
        points = training_points(own.detach()[:, None], binary_uncertainty, self.train_points, self.oversample,
                                 self.importance)
        predicted = self.point_head(self._fine_features(pyramid[0], rois, points), point_sample(coarse, points))
        wanted = _point_labels(masks, torch.cat(list(rois)), objects, points)
        losses["mask_points"] = F.binary_cross_entropy_with_logits(predicted[rows, classes], wanted)
        return losses

    def mask_probabilities(self, pyramid, boxes, labels: torch.Tensor) -> torch.Tensor:
        """Masks refined by adaptive subdivision: ``(Σn, *m)`` with ``m = 7·2^subdivision_steps``."""
        coarse = self.mask_logits(pyramid, boxes)
        rows = torch.arange(len(labels), device=labels.device)

        def predict(points):
            refined = self.point_head(self._fine_features(pyramid[0], boxes, points), point_sample(coarse, points))
            return refined[rows, labels][:, None]

        own = coarse[rows, labels][:, None]
        refined = subdivide(own, binary_uncertainty, predict, self.subdivision_steps, self.subdivision_points)
        return torch.sigmoid(refined[:, 0])

    __init__.__signature__ = _signature_with(__init__, MaskRCNN.__init__)


def _rois(boxes: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)])


def _box_to_image(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Points ``(n, P, d)`` in ``[0, 1]`` over boxes ``(n, 2d)`` as image coordinates (pixel corners)."""
    d = points.shape[-1]
    return boxes[:, None, :d] + points * box_sizes(boxes)[:, None]


def _point_labels(masks: torch.Tensor, boxes: torch.Tensor, objects: torch.Tensor,
                  points: torch.Tensor) -> torch.Tensor:
    """Each RoI's object mask (``masks[objects]``, ``(n, *S)``) read (bilinear, then ≥ 0.5) at ``points`` in its
    box: ``(Σn, P)`` of 0 and 1."""
    image_size = torch.tensor(masks.shape[1:], dtype=points.dtype, device=points.device)
    in_image = _box_to_image(points, boxes.to(points)) / image_size
    wanted = points.new_zeros(points.shape[:2])
    for i in objects.unique().tolist():  # one object's mask read once for all its RoIs
        pick = (objects == i).nonzero()[:, 0]
        mask = masks[i:i + 1, None].to(points.dtype)
        sampled = point_sample(mask, in_image[pick].reshape(1, -1, points.shape[-1]))
        wanted[pick] = (sampled.view(len(pick), -1) >= 0.5).to(points.dtype)
    return wanted


@register(
    name="pointrend_semantic",
    full_name="PointRend on Semantic FPN (ResNet-101)",
    paper="PointRend: Image Segmentation as Rendering",
    reference="arXiv:1912.08193",
    year=2020,
    task="semantic",
    spatial_dims=(2, 3),
    size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 19, "depth": 101},
    paper_params=47.72,
    paper_params_source=(
        "Pinned, derived: the zoo's semantic_fpn figure for its Cityscapes configuration (47.5M, pinned from "
        "the Panoptic FPN paper's description; ResNet-101, 19 classes) plus the point head (3 layers of 256 on "
        "256 + 19 inputs and 19 outputs: 217,212); we found no count in the PointRend paper."),
    test_config={"depth": 18, "base_width": 8, "fpn_channels": 16, "head_channels": 8, "point_channels": 16,
                 "train_points": 128, "subdivision_points": 256},
    notes=(
        "Configuration of the authors' Detectron2 release for Cityscapes (2048 training points, 8192 per "
        "subdivision step, 2 steps from 1/4 scale). Training points are snapped to pixel centres so that the "
        "train-mode output is one dense map: the coarse logits up-sampled to the input, the point head's logits at "
        "the sampled pixels, whose gradient is scaled by pixels/points so that a per-pixel mean loss weighs the "
        "points as the paper's separate point loss (their mean) does. Any dense loss of segarch.train then trains "
        "both the semantic FPN and the point head. 3D (an extension): trilinear sampling, the same steps."),
)
class PointRendSemanticFPN(SemanticFPN):
    """PointRend on the zoo's semantic FPN: crisp boundaries from coarse 1/4-scale logits (module docstring).
    Semantic FPN's options (:class:`~segarch.nets.fpn.SemanticFPN`) and:

    Args:
        point_channels: the point head's width (256).
        train_points: points per image in training (2048).
        oversample: ``k`` (3). importance: ``β`` (0.75).
        subdivision_points: cells refined per image and step at inference (8192); two steps from 1/4 scale.

    ``forward(x)`` → logits ``(B, out_channels, *S)`` (sizes multiples of 32). In eval mode: subdivided; in train
    mode: the coarse logits up-sampled, with point-head logits at ``train_points`` pixels per image.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, point_channels: int = 256,
                 train_points: int = 2048, oversample: float = 3.0, importance: float = 0.75,
                 subdivision_points: int = 8192, **options) -> None:
        super().__init__(spatial_dims, in_channels, out_channels, **options)
        for option, value in (("point_channels", point_channels), ("train_points", train_points),
                              ("subdivision_points", subdivision_points)):
            check_positive_int(value, option, "PointRend")
        self.train_points, self.oversample, self.importance = train_points, oversample, importance
        self.subdivision_points, self.subdivision_steps = subdivision_points, 2  # 1/4 scale → 1/1
        self.point_head = PointHead(self.fpn.output[0].out_channels, out_channels, point_channels)

    def _predict(self, p2: torch.Tensor, coarse: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        return self.point_head(point_sample(p2, points), point_sample(coarse, points))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input_shape(x)
        pyramid, coarse = self.coarse_logits(x)
        if not self.training:
            refined = subdivide(coarse, class_uncertainty, lambda p: self._predict(pyramid[0], coarse, p),
                                self.subdivision_steps, self.subdivision_points)
            return resize_to(refined, x.shape[2:])
        dense = F.interpolate(coarse, size=x.shape[2:], mode=interp_mode(self.spatial_dims), align_corners=False)
        shape = torch.tensor(x.shape[2:], device=x.device)
        points = training_points(coarse.detach(), class_uncertainty, self.train_points, self.oversample,
                                 self.importance)
        pixels = torch.minimum((points * shape).long(), shape - 1)  # snapped to pixel centres
        points = (pixels + 0.5) / shape
        predicted = self._predict(pyramid[0], coarse, points)
        # value unchanged, gradient × pixels/points: a per-pixel mean loss then weighs them as the point loss does
        weight = math.prod(x.shape[2:]) / self.train_points
        predicted = predicted * weight - (predicted * (weight - 1)).detach()
        flat_index = sum(pixels[..., a] * math.prod(x.shape[3 + a:]) for a in range(self.spatial_dims))
        flat = dense.flatten(2).scatter(2, flat_index[:, None].expand(-1, dense.shape[1], -1), predicted)
        return flat.view(dense.shape)

    __init__.__signature__ = _signature_with(__init__, SemanticFPN.__init__)
