"""Mask R-CNN (He et al. 2017, "Mask R-CNN", arXiv:1703.06870) with a ResNet-FPN backbone, in 2D and 3D.

- **backbone**: ResNet-50 or -101 (the zoo's :class:`~segarch.backbones.ResNetEncoder`), C2–C5 into an FPN
  (Lin et al. 2017: 1×1 laterals, nearest top-down, 3×3 outputs, 256) giving P2–P5, and P6 a stride-2
  sub-sampling of P5 for the RPN only.
- **RPN**: a 3×3 convolution (256, ReLU) and per anchor an objectness logit and box deltas, shared over P2–P6;
  one anchor size per level (32 … 512) and aspect ratios 0.5, 1, 2; training: anchors of IoU ≥ 0.7 positive,
  < 0.3 negative (and each object's best anchors positive), 256 sampled per image, half positive at most;
  proposals: the 2000 (1000 at inference) best per level, decoded, NMS at 0.7, the 2000 (1000) best kept.
- **RoIAlign** over P2–P5 (:func:`segarch.layers.detection.roi_align`, ``aligned=True``, 2 samples per bin
  axis), each RoI on level ``⌊4 + log2(√(wh) / 224)⌋`` (FPN's eq. 1) clamped to 2–5.
- **box head**: 7×7 RoIAlign, two fully connected layers of 1024 with ReLU, class logits and class-specific box
  deltas (weights 10, 10, 5, 5); training: 512 RoIs per image (the proposals and the objects' boxes), a quarter
  positive (IoU ≥ 0.5).
- **mask head**: 14×14 RoIAlign, four 3×3 convolutions (256, ReLU), a 2×2 stride-2 transposed convolution (256,
  ReLU) and a 1×1 convolution: one 28×28 mask logit map per class; trained with per-pixel binary cross-entropy
  on the object's class channel only, on positive RoIs.
- **inference**: class scores, class-specific boxes, score > 0.05, NMS at 0.5 per class, the 100 best; masks
  of those boxes pasted into the image (bilinear) as probabilities.

``forward(x)`` in eval mode returns one dict of detections per image; in train mode ``forward(x, targets)``
returns the losses. 3D (an extension, as medical detection toolkits do it): cuboid boxes, anchors whose Z side
is the level's size, trilinear RoIAlign, 28³ masks.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from torch import nn

from segarch.backbones import ResNetEncoder
from segarch.blocks.feature_pyramid import FeaturePyramid
from segarch.blocks.region_proposal import RegionProposalHead
from segarch.layers.checks import check_choice, check_positive_int, check_spatial_dims
from segarch.layers.detection import (batched_nms, box_iou, box_sizes, clip_boxes, decode_boxes, encode_boxes,
                                      grid_anchors, roi_align)
from segarch.nets._base import SegmentationNet
from segarch.zoo import register

__all__ = ["MaskRCNN", "MaskRCNNResNet101", "paste_masks", "mask_targets", "BoxHead", "MaskHead",
           "multiscale_roi_align", "batch_to_group_norm"]

#: The FPN levels the RoI heads read (P2–P5) and the extra RPN level (P6).
ROI_LEVELS = (2, 3, 4, 5)
#: Narrow widths and anchors for objects of ~16 pixels, for tests and demos.
TEST_CONFIG = {"base_width": 8, "fpn_channels": 16, "representation": 64, "mask_channels": 16,
               "anchor_sizes": (16, 32, 64, 128, 256), "proposals": (200, 100), "rpn_batch": 64, "roi_batch": 64,
               "detections": 20}


def _smooth_l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.smooth_l1_loss(x, y, beta=1 / 9, reduction="sum")  # Detectron's beta for box deltas


def _sample(labels: torch.Tensor, count: int, positive_fraction: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of positives (label > 0) and negatives (label 0) sampled at random: ``count`` in all, at most
    ``positive_fraction`` of them positive (ignored: label -1)."""
    positive = (labels > 0).nonzero()[:, 0]
    negative = (labels == 0).nonzero()[:, 0]
    n_pos = min(len(positive), int(count * positive_fraction))
    n_neg = min(len(negative), count - n_pos)
    return (positive[torch.randperm(len(positive), device=labels.device)[:n_pos]],
            negative[torch.randperm(len(negative), device=labels.device)[:n_neg]])


def batch_to_group_norm(module: nn.Module) -> None:
    """Every batch norm of ``module`` replaced, in place, by a group norm of the same channels (32 groups; fewer
    for narrow widths, at least 2 channels per group) and the same parameters."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            channels = child.num_features
            groups = math.gcd(32, channels)
            if channels // groups < 2 and channels >= 2:
                groups = math.gcd(32, channels // 2)
            setattr(module, name, nn.GroupNorm(groups, channels))
        else:
            batch_to_group_norm(child)


def multiscale_roi_align(pyramid: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor], output_size: int,
                         canonical_size: float = 224.0, sampling_ratio: int = 2) -> torch.Tensor:
    """RoIAlign of each image's ``boxes`` on the FPN level that fits its size (FPN eq. 1, ``k0`` = 4, levels 2–5).

    ``pyramid``: P2–P5 ``(B, C, *S/2^k)``; ``boxes``: per image ``(n_i, 2d)`` in input pixels. Returns
    ``(Σ n_i, C, *output_size)`` in the order of the images, then of their boxes.
    """
    d = pyramid[0].ndim - 2
    rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)])
    scale = box_sizes(rois[:, 1:]).clamp(min=1e-6).log().mean(1).exp()  # the geometric mean side
    levels = torch.floor(4 + torch.log2(scale / canonical_size) + 1e-6).clamp(ROI_LEVELS[0], ROI_LEVELS[-1]).long()
    out = pyramid[0].new_zeros(len(rois), pyramid[0].shape[1], *(output_size,) * d)
    for k, features in zip(ROI_LEVELS, pyramid):
        pick = (levels == k).nonzero()[:, 0]
        if len(pick):
            out[pick] = roi_align(features, rois[pick], output_size, 1 / 2 ** k, sampling_ratio)
    return out


class BoxHead(nn.Module):
    """Fast R-CNN's head on FPN: two fully connected layers (``representation``, ReLU) on the flattened
    RoIAlign features, then class logits and class-specific box deltas (``2·d`` per class)."""

    def __init__(self, spatial_dims: int, in_channels: int, pooled: int, representation: int, classes: int) -> None:
        super().__init__()
        self.fc6 = nn.Linear(in_channels * pooled ** spatial_dims, representation)
        self.fc7 = nn.Linear(representation, representation)
        self.classes = nn.Linear(representation, classes)
        self.boxes = nn.Linear(representation, classes * 2 * spatial_dims)
        for layer, std in ((self.classes, 0.01), (self.boxes, 0.001)):  # Detectron's initialisation
            nn.init.normal_(layer.weight, std=std)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.fc7(F.relu(self.fc6(x.flatten(1)))))
        return self.classes(x), self.boxes(x)


class MaskHead(nn.Sequential):
    """Mask R-CNN's FPN mask head: four 3×3 convolutions (ReLU), a 2×2 stride-2 transposed convolution (ReLU)
    and a 1×1 convolution to one mask logit map per class."""

    def __init__(self, spatial_dims: int, in_channels: int, channels: int, classes: int, convs: int = 4) -> None:
        conv = Conv[Conv.CONV, spatial_dims]
        layers = []
        for i in range(convs):
            layers += [conv(in_channels if i == 0 else channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        layers += [Conv[Conv.CONVTRANS, spatial_dims](channels, channels, 2, stride=2), nn.ReLU(inplace=True),
                   conv(channels, classes, 1)]
        super().__init__(*layers)


def mask_targets(masks: torch.Tensor, rois: Sequence[torch.Tensor], objects: torch.Tensor,
                 logits: torch.Tensor) -> torch.Tensor:
    """Binary mask targets of positive RoIs on the grid of ``logits`` ``(Σn, *m)``: each RoI's object (its index in
    ``masks`` ``(n, *S)``, in ``objects``) RoIAligned over the RoI and thresholded at 0.5."""
    boxes = torch.cat([objects[:, None].to(logits), torch.cat(list(rois)).to(logits)], 1)
    sampled = roi_align(masks[:, None].to(logits), boxes, logits.shape[-1], sampling_ratio=2)[:, 0]
    return (sampled >= 0.5).to(logits)


def paste_masks(masks: torch.Tensor, boxes: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Mask probabilities ``(N, *m)`` of ``boxes`` ``(N, 2d)`` resampled (bilinearly) into images of ``shape``:
    ``(N, *shape)``, 0 outside each box."""
    d = len(shape)
    out = masks.new_zeros(len(masks), *shape)
    for i, (mask, box) in enumerate(zip(masks, boxes)):
        lo = [max(0, int(math.floor(box[a]))) for a in range(d)]
        hi = [min(shape[a], int(math.ceil(box[d + a]))) for a in range(d)]
        if any(h <= low for low, h in zip(lo, hi)):
            continue
        axes = []
        for a in range(d):  # pixel centres within the box, in grid_sample's [-1, 1] over the box
            centres = torch.arange(lo[a], hi[a], device=masks.device, dtype=masks.dtype) + 0.5
            axes.append(2 * (centres - box[a]) / (box[d + a] - box[a]).clamp(min=1e-6) - 1)
        mesh = torch.meshgrid(*axes, indexing="ij")
        grid = torch.stack(mesh[::-1], -1)[None]
        region = tuple(slice(low, h) for low, h in zip(lo, hi))
        out[(i, *region)] = F.grid_sample(mask[None, None], grid, align_corners=False)[0, 0]
    return out


@register(
    name="mask_rcnn",
    full_name="Mask R-CNN (ResNet-50-FPN)",
    paper="Mask R-CNN",
    reference="arXiv:1703.06870",
    year=2017,
    task="instance",
    spatial_dims=(2, 3),
    size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 91},
    paper_params=44.40,
    paper_params_source=(
        "torchvision's maskrcnn_resnet50_fpn (the reference implementation's documentation: 44,401,393 parameters "
        "with its 91-entry COCO head; the paper gives no count). That figure holds the backbone's batch norms "
        "frozen as buffers; trainable here they add 53,120 parameters (44.45M). With Detectron's 81 classes the "
        "class-specific outputs are 53,820 smaller (44.40M here)."),
    test_config=TEST_CONFIG,
    test_lr=5e-3,  # with group norm 1e-2 spikes; 5e-3 lowers 30 steps' loss most (to 0.69 of the start)
    notes=(
        "out_channels counts the classes with background (torchvision's num_classes). Boxes are (starts, stops) "
        "per axis in the image's axis order (2D: y1, x1, y2, x2). RoIAlign and NMS are written in plain torch "
        "(segarch.layers.detection) because torchvision's compiled operators do not load beside this CPU torch "
        "build; both follow torchvision's semantics and are tested against brute-force references. Anchors are "
        "centred on cell centres. The backbone normalises with group norm by default (norm='group', 32 groups; "
        "Wu & He 2018, arXiv:1803.08494, train Mask R-CNN from scratch so): Detectron freezes ImageNet-trained "
        "batch norms, and trained from scratch at small batches batch norm's running statistics lag and the "
        "eval-mode proposals miss objects; norm='batch' builds batch norms. The count is the same. 3D (an "
        "extension, as in medical detection toolkits): cuboid anchors (Z side = the level's "
        "size), trilinear RoIAlign, 28^3 masks."),
)
class MaskRCNN(SegmentationNet):
    """Mask R-CNN with a ResNet-FPN backbone (see the module's docstring).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: classes including background (2: one kind of object).
        depth: ResNet depth, 50 or 101 (default: 50; 101 for the ``mask_rcnn_r101`` entry).
        base_width: the ResNet's stem width (64; smaller for tests).
        fpn_channels: the FPN's width (256).
        representation: the box head's fully connected width (1024).
        mask_channels: the mask head's width (256).
        anchor_sizes: one anchor size per level P2–P6 (32, 64, 128, 256, 512).
        aspect_ratios: anchors per location, height/width (0.5, 1, 2).
        proposals: proposals per image kept in training and at inference (2000, 1000).
        rpn_batch: anchors sampled per image for the RPN's loss (256).
        roi_batch: RoIs sampled per image for the box head's loss (512).
        detections: detections kept per image at inference (100).
        score_threshold: the least class score of a detection (0.05).
        canonical_size: the RoI size mapped to P4 (224).
        norm: the backbone's normalisation, ``"group"`` (group norm, 32 groups: trains from scratch at small
            batches, Wu & He 2018) or ``"batch"``; the same parameters either way.

    ``forward(x)`` (eval mode; sizes multiples of 32) → per image ``{"boxes": (N, 2d), "scores": (N,),
    "labels": (N,) class 1…, "masks": (N, *S) probabilities}``, highest score first. ``forward(x, targets)``
    (train mode; ``targets`` per image ``{"boxes": (n, 2d), "labels": (n,), "masks": (n, *S)}``) → the losses
    ``{"rpn_objectness", "rpn_boxes", "classes", "boxes", "masks"}``.

    Examples::

        >>> net = MaskRCNN(2, 3, 91).eval()
        >>> detections = net(torch.zeros(1, 3, 256, 256))
        >>> sorted(detections[0])
        ['boxes', 'labels', 'masks', 'scores']
    """

    size_divisor = 32
    #: ``forward`` returns detections (eval) or losses (train), not a tensor of logits.
    is_detector = True

    #: The ResNet depth when ``depth`` is not given (the R101 entry's subclass says 101).
    default_depth = 50

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, depth: int | None = None,
                 base_width: int = 64, fpn_channels: int = 256, representation: int = 1024, mask_channels: int = 256,
                 anchor_sizes: Sequence[float] = (32, 64, 128, 256, 512),
                 aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0), proposals: Sequence[int] = (2000, 1000),
                 rpn_batch: int = 256, roi_batch: int = 512, detections: int = 100, score_threshold: float = 0.05,
                 canonical_size: float = 224.0, norm: str = "group") -> None:
        super().__init__()
        net = "Mask R-CNN"
        depth = self.default_depth if depth is None else depth
        check_spatial_dims(spatial_dims, (2, 3), net)
        check_choice(depth, (50, 101), "depth", net)
        check_choice(norm, ("group", "batch"), "norm", net)
        if not isinstance(out_channels, int) or out_channels < 2:
            raise ValueError(f"`out_channels` of {net} counts the classes with background and must be >= 2, "
                             f"got {out_channels!r}.")
        for option, value in (("fpn_channels", fpn_channels), ("representation", representation),
                              ("mask_channels", mask_channels), ("rpn_batch", rpn_batch), ("roi_batch", roi_batch),
                              ("detections", detections)):
            check_positive_int(value, option, net)
        if len(anchor_sizes) != 5 or len(proposals) != 2:
            raise ValueError(f"`anchor_sizes` must give 5 sizes (P2-P6) and `proposals` 2 counts (train, "
                             f"inference) for {net}, got {anchor_sizes!r} and {proposals!r}.")
        d = self.spatial_dims = spatial_dims
        self.classes = out_channels
        self.anchor_sizes, self.aspect_ratios = tuple(anchor_sizes), tuple(aspect_ratios)
        self.proposals, self.rpn_batch, self.roi_batch = tuple(proposals), rpn_batch, roi_batch
        self.detections, self.score_threshold, self.canonical_size = detections, score_threshold, canonical_size
        self.box_weights = [10.0] * d + [5.0] * d
        self.encoder = ResNetEncoder(d, in_channels, depth=depth, base_width=base_width)
        if norm == "group":
            batch_to_group_norm(self.encoder)
        self.fpn = FeaturePyramid(d, self.encoder.out_channels[1:], fpn_channels)
        self.rpn = RegionProposalHead(d, fpn_channels, fpn_channels, len(self.aspect_ratios))
        self.box_head = BoxHead(d, fpn_channels, 7, representation, out_channels)
        self.mask_head = MaskHead(d, fpn_channels, mask_channels, out_channels)

    # -- the pieces ------------------------------------------------------------------------------------------
    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """P2–P5 of ``x``."""
        return self.fpn(self.encoder(x)[1:])

    def _rpn(self, pyramid):
        """Per level: objectness (B, n), deltas (B, n, 2d), anchors (n, 2d)."""
        d = self.spatial_dims
        pool = F.max_pool2d if d == 2 else F.max_pool3d
        levels = list(pyramid)
        if len(self.anchor_sizes) > len(levels):  # Mask R-CNN's P6, a sub-sampling of P5 for the RPN only
            levels.append(pool(pyramid[-1], 1, 2))
        out = []
        for k, (level, size) in enumerate(zip(levels, self.anchor_sizes), start=2):
            objectness, deltas = self.rpn(level)
            batch, a = objectness.shape[:2]
            cells = level.shape[2:]
            order = (0, *range(2, 2 + d), 1)  # (B, A, *cells) → (B, *cells, A)
            objectness = objectness.permute(order).reshape(batch, -1)
            deltas = deltas.view(batch, a, 2 * d, *cells).permute(0, *range(3, 3 + d), 1, 2).reshape(batch, -1, 2 * d)
            anchors = grid_anchors(cells, 2 ** k, size, self.aspect_ratios, level.device, level.dtype)
            out.append((objectness, deltas, anchors))
        return out

    def _proposals(self, rpn, shape) -> list[torch.Tensor]:
        count = self.proposals[0 if self.training else 1]
        result = []
        for b in range(rpn[0][0].shape[0]):
            boxes, scores, levels = [], [], []
            for k, (objectness, deltas, anchors) in enumerate(rpn):
                top = objectness[b].detach().topk(min(count, objectness.shape[1])).indices
                decoded = clip_boxes(decode_boxes(deltas[b, top].detach(), anchors[top]), shape)
                boxes.append(decoded)
                scores.append(objectness[b, top].detach())
                levels.append(torch.full_like(top, k))
            boxes, scores, levels = torch.cat(boxes), torch.cat(scores), torch.cat(levels)
            big = (box_sizes(boxes) > 1e-3).all(1)
            boxes, scores, levels = boxes[big], scores[big], levels[big]
            keep = batched_nms(boxes, scores, levels, 0.7)[:count]
            result.append(boxes[keep])
        return result

    def _rpn_losses(self, rpn, targets) -> dict[str, torch.Tensor]:
        objectness = torch.cat([o for o, _, _ in rpn], 1)
        deltas = torch.cat([t for _, t, _ in rpn], 1)
        anchors = torch.cat([a for _, _, a in rpn])
        logits, labels, predicted, wanted = [], [], [], []
        for b, target in enumerate(targets):
            gt = target["boxes"].to(anchors)
            label = torch.zeros(len(anchors), dtype=torch.long, device=anchors.device)
            if len(gt):
                iou = box_iou(gt, anchors)
                best, match = iou.max(0)
                label[(best >= 0.3) & (best < 0.7)] = -1
                label[best >= 0.7] = 1
                best_per_object = iou.max(1, keepdim=True).values
                label[((iou == best_per_object) & (best_per_object > 0)).any(0)] = 1
            positive, negative = _sample(label, self.rpn_batch, 0.5)
            chosen = torch.cat([positive, negative])
            logits.append(objectness[b, chosen])
            labels.append((label[chosen] > 0).to(objectness.dtype))
            if len(positive):
                predicted.append(deltas[b, positive])
                wanted.append(encode_boxes(gt[match[positive]], anchors[positive]))
        sampled = max(1, sum(len(x) for x in logits))
        box_loss = (_smooth_l1(torch.cat(predicted), torch.cat(wanted)) if predicted else deltas.sum() * 0) / sampled
        return {"rpn_objectness": F.binary_cross_entropy_with_logits(torch.cat(logits), torch.cat(labels)),
                "rpn_boxes": box_loss}

    def _roi_losses(self, pyramid, proposals, targets) -> dict[str, torch.Tensor]:
        d = self.spatial_dims
        rois, classes, regress, mask_rois, mask_objects, mask_classes = [], [], [], [], [], []
        for b, (boxes, target) in enumerate(zip(proposals, targets)):
            gt, gt_labels = target["boxes"].to(boxes), target["labels"].long().to(boxes.device)
            boxes = torch.cat([boxes, gt])  # the objects' own boxes are RoIs too (Detectron)
            label = torch.zeros(len(boxes), dtype=torch.long, device=boxes.device)
            match = torch.zeros_like(label)
            if len(gt):
                best, match = box_iou(gt, boxes).max(0)
                label = torch.where(best >= 0.5, gt_labels[match], label)
            positive, negative = _sample(label, self.roi_batch, 0.25)
            chosen = torch.cat([positive, negative])
            rois.append(boxes[chosen])
            classes.append(label[chosen])
            regress.append(encode_boxes(gt[match[positive]], boxes[positive], self.box_weights) if len(gt)
                           else boxes.new_zeros(0, 2 * d))
            mask_rois.append(boxes[positive])
            mask_objects.append(match[positive] + sum(len(t["boxes"]) for t in targets[:b]))
            mask_classes.append(label[positive])
        class_logits, box_deltas = self.box_predictions(pyramid, rois)
        labels = torch.cat(classes)
        positive = (labels > 0).nonzero()[:, 0]
        box_deltas = box_deltas.view(len(labels), self.classes, 2 * d)[positive, labels[positive]]
        losses = {"classes": F.cross_entropy(class_logits, labels),
                  "boxes": _smooth_l1(box_deltas, torch.cat(regress)) / max(1, len(labels))}
        losses.update(self.mask_losses(pyramid, mask_rois, torch.cat(mask_classes), torch.cat(mask_objects),
                                       torch.cat([t["masks"] for t in targets])))
        return losses

    # -- the heads, one method each, so that a member of the family (PANet, PointRend) replaces only its own ------
    def box_predictions(self, pyramid, boxes) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits ``(Σn, classes)`` and box deltas ``(Σn, classes·2d)`` of each image's ``boxes``."""
        return self.box_head(multiscale_roi_align(pyramid, boxes, 7, self.canonical_size))

    def mask_logits(self, pyramid, boxes) -> torch.Tensor:
        """Mask logits ``(Σn, classes, *m)`` of each image's ``boxes``, in each box's frame."""
        return self.mask_head(multiscale_roi_align(pyramid, boxes, 14, self.canonical_size))

    def mask_probabilities(self, pyramid, boxes, labels: torch.Tensor) -> torch.Tensor:
        """Mask probabilities ``(Σn, *m)`` of each image's ``boxes``, each of its class in ``labels`` (Σn,)."""
        logits = self.mask_logits(pyramid, boxes)
        return torch.sigmoid(logits[torch.arange(len(labels)), labels])

    def mask_losses(self, pyramid, rois, classes: torch.Tensor, objects: torch.Tensor,
                    masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """The mask loss of positive RoIs (per image ``rois``; ``classes`` and ``objects``, their class and the
        index of their object in ``masks`` (all objects of the batch, ``(n, *S)``), both ``(Σn,)``)."""
        if not len(classes):  # no object in the batch: the mask head still takes part (with no gradient)
            return {"masks": sum(p.sum() for p in self.mask_head.parameters()) * 0}
        logits = self.mask_logits(pyramid, rois)
        logits = logits[torch.arange(len(classes)), classes]
        return {"masks": F.binary_cross_entropy_with_logits(logits, mask_targets(masks, rois, objects, logits))}

    def _detect(self, pyramid, proposals, shape) -> list[dict[str, torch.Tensor]]:
        d, k = self.spatial_dims, self.classes
        class_logits, box_deltas = self.box_predictions(pyramid, proposals)
        scores_all = F.softmax(class_logits, -1)
        results, start = [], 0
        for boxes in proposals:
            n = len(boxes)
            scores = scores_all[start:start + n, 1:]
            deltas = box_deltas[start:start + n].view(n, k, 2 * d)[:, 1:]
            start += n
            decoded = decode_boxes(deltas.reshape(-1, 2 * d), boxes.repeat_interleave(k - 1, 0), self.box_weights)
            decoded = clip_boxes(decoded, shape)
            labels = torch.arange(1, k, device=boxes.device).repeat(n)
            scores = scores.reshape(-1)
            keep = (scores > self.score_threshold) & (box_sizes(decoded) > 1e-2).all(1)
            decoded, scores, labels = decoded[keep], scores[keep], labels[keep]
            keep = batched_nms(decoded, scores, labels, 0.5)[:self.detections]
            results.append({"boxes": decoded[keep], "scores": scores[keep], "labels": labels[keep]})
        boxes = [r["boxes"] for r in results]
        if sum(len(b) for b in boxes):
            probabilities = self.mask_probabilities(pyramid, boxes, torch.cat([r["labels"] for r in results]))
        start = 0
        for r in results:
            n = len(r["boxes"])
            if n:
                r["masks"] = paste_masks(probabilities[start:start + n], r["boxes"], shape)
            else:
                r["masks"] = pyramid[0].new_zeros(0, *shape)
            start += n
        return results

    def check_targets(self, x: torch.Tensor, targets: Sequence[dict] | None, *, net: str = "Mask R-CNN",
                      keys: str = "'boxes', 'labels' and 'masks'", action: str = "detect") -> None:
        """Train mode needs ``targets``, and then one dict (of ``keys``) per image of ``x``."""
        if self.training and targets is None:
            raise ValueError(f"{net} in train mode needs `targets` (per image a dict of {keys}); call net.eval() to "
                             f"{action}.")
        if targets is not None and len(targets) != x.shape[0]:
            raise ValueError(f"`targets` must hold one dict per image ({x.shape[0]}), got {len(targets)}.")

    def forward(self, x: torch.Tensor, targets: Sequence[dict] | None = None):
        self.check_input_shape(x)
        self.check_targets(x, targets)
        shape = tuple(x.shape[2:])
        pyramid = self.pyramid(x)
        rpn = self._rpn(pyramid)
        proposals = self._proposals(rpn, shape)
        if targets is not None and self.training:
            return {**self._rpn_losses(rpn, targets), **self._roi_losses(pyramid, proposals, targets)}
        return self._detect(pyramid, proposals, shape)


@register(
    name="mask_rcnn_r101",
    full_name="Mask R-CNN (ResNet-101-FPN)",
    paper="Mask R-CNN",
    reference="arXiv:1703.06870",
    year=2017,
    task="instance",
    spatial_dims=(2,),
    size_divisor=32,
    paper_config={"spatial_dims": 2, "in_channels": 3, "out_channels": 91},
    paper_params=63.39,
    paper_params_source=(
        "Derived: torchvision's maskrcnn_resnet50_fpn count (44.40M, 91-entry head) plus the difference of "
        "ResNet-101 and ResNet-50 (44.55M - 25.56M = 18.99M: the 17 extra bottlenecks of stage 4); neither the "
        "paper nor torchvision publishes the R101-FPN count."),
    test_config={**TEST_CONFIG, "base_width": 16},  # 8 is too narrow for 30 steps through 33 bottlenecks
    test_lr=1e-2,
    notes="mask_rcnn with depth=101 (its notes apply).",
)
class MaskRCNNResNet101(MaskRCNN):
    """Mask R-CNN with a ResNet-101-FPN backbone: :class:`MaskRCNN` whose ``depth`` defaults to 101."""

    default_depth = 101
