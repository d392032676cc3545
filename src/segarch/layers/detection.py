"""Detection operators for the zoo's two-stage detectors (Mask R-CNN, PANet, PointRend), in 2D and 3D.

Written here rather than taken from torchvision: torchvision's compiled operators (``torchvision::nms``,
``torchvision::roi_align``) do not load beside this project's CPU torch build (``operator torchvision::nms does
not exist``), and the only torchvision wheel that installs is a 5.5 GB CUDA build that replaces torch. These are
plain torch: RoIAlign on :func:`torch.nn.functional.grid_sample`, greedy NMS on an IoU matrix; both follow
torchvision's semantics (tested against brute-force NumPy references) and work in 3D as well.

Boxes are ``(N, 2·d)`` float tensors ``(start_0, …, start_{d-1}, stop_0, …, stop_{d-1})`` in the image's axis order
(2D: ``y1, x1, y2, x2``; 3D: ``z1, y1, x1, z2, y2, x2``), in pixel-corner coordinates: pixel ``i`` covers
``[i, i + 1]``, so a box over pixels ``a … b`` is ``(a, b + 1)``.

- :func:`roi_align`: RoIAlign (He et al. 2017, arXiv:1703.06870, Sec. 3) with ``aligned=True`` (the half-pixel
  shift of Detectron2 / torchvision ``aligned=True``), ``sampling_ratio`` bilinear samples per bin axis, averaged.
- :func:`nms`, :func:`batched_nms`: greedy non-maximum suppression; class-aware by offsetting each class's boxes.
- :func:`box_iou`, :func:`encode_boxes`, :func:`decode_boxes` (Fast R-CNN's centre/log-size deltas),
  :func:`clip_boxes`, :func:`box_sizes`.
- :func:`grid_anchors`: anchors of one size and several aspect ratios at every cell of a feature map.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["box_iou", "box_sizes", "clip_boxes", "encode_boxes", "decode_boxes", "nms", "batched_nms",
           "roi_align", "grid_anchors", "BOX_DELTA_CLAMP"]

#: The largest log-size delta decoded (Detectron's ``log(1000 / 16)``): keeps exp() finite early in training.
BOX_DELTA_CLAMP = math.log(1000.0 / 16)


def _dims(boxes: torch.Tensor) -> int:
    if boxes.ndim != 2 or boxes.shape[1] not in (4, 6):
        raise ValueError(f"`boxes` must be (N, 4) or (N, 6) (starts then stops per axis), got {tuple(boxes.shape)}.")
    return boxes.shape[1] // 2


def box_sizes(boxes: torch.Tensor) -> torch.Tensor:
    """Per box, its extent along each axis ``(N, d)`` (0 where a box is inverted)."""
    d = _dims(boxes)
    return (boxes[:, d:] - boxes[:, :d]).clamp(min=0)


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection over union of every box of ``a`` (N, 2d) with every box of ``b`` (M, 2d): ``(N, M)``."""
    d = _dims(a)
    if _dims(b) != d:
        raise ValueError(f"`a` and `b` must be boxes of the same dimensionality, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}.")
    start = torch.maximum(a[:, None, :d], b[None, :, :d])
    stop = torch.minimum(a[:, None, d:], b[None, :, d:])
    inter = (stop - start).clamp(min=0).prod(-1)
    union = box_sizes(a).prod(-1)[:, None] + box_sizes(b).prod(-1)[None] - inter
    return inter / union.clamp(min=torch.finfo(a.dtype).tiny)


def clip_boxes(boxes: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``boxes`` clipped to an image of spatial ``shape``."""
    d = _dims(boxes)
    limit = torch.tensor(list(shape) * 2, dtype=boxes.dtype, device=boxes.device)
    return torch.minimum(boxes.clamp(min=0), limit[: 2 * d])


def encode_boxes(boxes: torch.Tensor, references: torch.Tensor, weights: Sequence[float] | None = None) -> torch.Tensor:
    """Fast R-CNN's regression targets of ``boxes`` relative to ``references`` (both (N, 2d)): per axis
    ``w · (centre - reference centre) / reference size``, then per axis ``w · log(size / reference size)``.

    ``weights``: ``2·d`` multipliers (Mask R-CNN's box head: 10 for centres, 5 for sizes; the RPN: 1).
    """
    d = _dims(boxes)
    w = torch.as_tensor(weights if weights is not None else [1.0] * 2 * d, dtype=boxes.dtype, device=boxes.device)
    ref_size = box_sizes(references).clamp(min=1e-6)
    size = box_sizes(boxes).clamp(min=1e-6)
    centre_delta = ((boxes[:, :d] + boxes[:, d:]) - (references[:, :d] + references[:, d:])) / 2 / ref_size
    return torch.cat([centre_delta, torch.log(size / ref_size)], 1) * w


def decode_boxes(deltas: torch.Tensor, references: torch.Tensor,
                 weights: Sequence[float] | None = None) -> torch.Tensor:
    """The inverse of :func:`encode_boxes`: boxes from ``deltas`` (N, 2d) applied to ``references`` (N, 2d)."""
    d = _dims(references)
    w = torch.as_tensor(weights if weights is not None else [1.0] * 2 * d, dtype=deltas.dtype, device=deltas.device)
    deltas = deltas / w
    ref_size = box_sizes(references)
    centre = (references[:, :d] + references[:, d:]) / 2 + deltas[:, :d] * ref_size
    size = torch.exp(deltas[:, d:].clamp(max=BOX_DELTA_CLAMP)) * ref_size
    return torch.cat([centre - size / 2, centre + size / 2], 1)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: indices of the boxes kept, highest score first.

    A box is dropped when its IoU with a kept box of higher score exceeds ``iou_threshold`` (torchvision's rule).
    """
    _dims(boxes)
    if scores.shape != boxes.shape[:1]:
        raise ValueError(f"`scores` must be ({boxes.shape[0]},), one per box, got {tuple(scores.shape)}.")
    if not 0 <= iou_threshold <= 1:
        raise ValueError(f"`iou_threshold` must be in [0, 1], got {iou_threshold!r}.")
    order = torch.argsort(scores, descending=True, stable=True)
    if order.numel() == 0:
        return order
    overlaps = (box_iou(boxes[order], boxes[order]) > iou_threshold).cpu().numpy()
    removed = [False] * len(order)
    keep = []
    for i in range(len(order)):
        if removed[i]:
            continue
        keep.append(i)
        for j in overlaps[i, i + 1:].nonzero()[0]:
            removed[i + 1 + j] = True
    return order[torch.as_tensor(keep, dtype=torch.long, device=order.device)]


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """:func:`nms` within each group (class, or image) separately: boxes of different ``groups`` never suppress
    each other. Indices kept, highest score first."""
    if boxes.numel() == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    # move each group's boxes apart by more than the boxes' whole extent: one NMS does every group at once
    offsets = groups.to(boxes.dtype) * (boxes.max() - boxes.min() + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def roi_align(features: torch.Tensor, rois: torch.Tensor, output_size: int | Sequence[int],
              spatial_scale: float = 1.0, sampling_ratio: int = 2, aligned: bool = True) -> torch.Tensor:
    """RoIAlign: features ``(B, C, *S)`` (2D or 3D) sampled on ``rois`` ``(K, 1 + 2·d)`` (image index, then a
    box in input pixels) into ``(K, C, *output_size)``.

    Each RoI is ``spatial_scale`` times its box (the feature map's stride inverted), shifted by half a pixel when
    ``aligned`` (pixel centres at ``i + 0.5``), divided into ``output_size`` bins; each bin averages
    ``sampling_ratio`` bilinear samples per axis, at the bin's regularly spaced points. Samples beyond one pixel
    outside the map count 0; others read the border (torchvision's ``roi_align`` rules).
    """
    d = features.ndim - 2
    if d not in (2, 3) or rois.ndim != 2 or rois.shape[1] != 1 + 2 * d:
        raise ValueError(f"`features` must be (B, C, *S) with 2 or 3 spatial axes and `rois` (K, {1 + 2 * d}) "
                         f"(image index, box), got {tuple(features.shape)} and {tuple(rois.shape)}.")
    size = (output_size,) * d if isinstance(output_size, int) else tuple(output_size)
    if len(size) != d or int(sampling_ratio) < 1:
        raise ValueError(f"`output_size` must be one int or {d} ints and `sampling_ratio` >= 1, got {output_size!r} "
                         f"and {sampling_ratio!r}.")
    sr = int(sampling_ratio)
    k, channels = rois.shape[0], features.shape[1]
    out = features.new_zeros(k, channels, *size)
    if k == 0:
        return out
    spatial = features.shape[2:]
    offset = 0.5 if aligned else 0.0
    start = rois[:, 1:1 + d] * spatial_scale - offset
    extent = rois[:, 1 + d:] * spatial_scale - offset - start
    if not aligned:  # the legacy rule: at least one pixel
        extent = extent.clamp(min=1.0)
    coords, masks = [], []
    for axis in range(d):  # sample positions along each axis: (K, size·sr)
        steps = (torch.arange(size[axis] * sr, device=rois.device, dtype=rois.dtype) + 0.5) / (size[axis] * sr)
        pos = start[:, axis:axis + 1] + steps * extent[:, axis:axis + 1]
        n = spatial[axis]
        masks.append((pos >= -1.0) & (pos <= n))
        pos = pos.clamp(min=0, max=n - 1)
        coords.append(2 * pos / max(n - 1, 1) - 1)  # grid_sample's align_corners=True coordinates
    # grids (K, *sampled, d) with the last axis in grid_sample's order (x, y[, z]): reversed
    mesh = torch.meshgrid(*[torch.arange(c.shape[1], device=rois.device) for c in coords], indexing="ij")
    grid = torch.stack([coords[axis][:, mesh[axis]] for axis in reversed(range(d))], -1)
    valid = torch.ones_like(grid[..., 0], dtype=torch.bool)
    for axis in range(d):
        valid = valid & masks[axis][:, mesh[axis]]
    images = rois[:, 0].long()
    pool = F.avg_pool2d if d == 2 else F.avg_pool3d
    for b in images.unique().tolist():
        pick = (images == b).nonzero()[:, 0]
        # all of the image's RoIs in one grid, stacked along the first sampled axis: one sampling of one feature
        # map (its gradient is one map, not one per RoI, which made 3D training slow)
        picked = grid[pick].to(features.dtype)
        n, first = len(pick), picked.shape[1]
        stacked = picked.reshape(1, n * first, *picked.shape[2:])
        sampled = F.grid_sample(features[b:b + 1], stacked, mode="bilinear", padding_mode="border",
                                align_corners=True)  # (1, C, n·first, ...)
        sampled = sampled.reshape(channels, n, first, *sampled.shape[3:]).transpose(0, 1)
        sampled = sampled * valid[pick][:, None].to(features.dtype)
        out[pick] = pool(sampled, sr)
    return out


def grid_anchors(feature_shape: Sequence[int], stride: int, size: float, aspect_ratios: Sequence[float],
                 device=None, dtype=torch.float32) -> torch.Tensor:
    """Anchors at every cell of a feature map of ``feature_shape`` (spatial) and ``stride``: ``(cells · A, 2d)``,
    cell-major (the order of a ``(A, *cells)`` head output read as ``(*cells, A)``).

    Each anchor is centred on its cell's centre (``(i + 0.5) · stride``) with the area (volume) of a square (cube)
    of side ``size``; aspect ratio ``r`` makes the last two axes (Y, X) ``size·√r`` by ``size/√r`` (Z keeps
    ``size`` in 3D).
    """
    d = len(feature_shape)
    shapes = []
    for r in aspect_ratios:
        extent = [size] * (d - 2) + [size * math.sqrt(r), size / math.sqrt(r)]
        shapes.append(extent)
    half = torch.tensor(shapes, dtype=dtype, device=device) / 2  # (A, d)
    axes = [(torch.arange(n, dtype=dtype, device=device) + 0.5) * stride for n in feature_shape]
    centres = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 1, d)  # (cells, 1, d)
    return torch.cat([centres - half, centres + half], -1).reshape(-1, 2 * d)
