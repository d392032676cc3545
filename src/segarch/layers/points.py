"""Point-based rendering (PointRend, Kirillov et al. 2020, arXiv:1912.08193, Sec. 3.1): reading features at real
points, choosing the points to predict (uncertain ones), and refining a coarse prediction by adaptive subdivision.
2D and 3D.

Points are ``(N, P, d)`` coordinates in ``[0, 1]`` over a map (or a box), in the map's axis order (2D: y, x),
0 and 1 being the outer edges of its first and last cells (``align_corners=False``).

- :func:`point_sample`: bilinear (trilinear) features ``(N, C, P)`` of maps ``(N, C, *S)`` at points.
- :func:`binary_uncertainty`, :func:`class_uncertainty`: the paper's uncertainty of a logit map.
- :func:`training_points`: the paper's training selection: ``k·P`` random points, the ``β·P`` most uncertain of
  them, plus ``(1 - β)·P`` uniformly random points.
- :func:`subdivide`: the inference: up-sample ×2, predict the ``P`` most uncertain cells anew, repeat.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

__all__ = ["point_sample", "binary_uncertainty", "class_uncertainty", "training_points", "most_uncertain_cells",
           "subdivide"]


def point_sample(features: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Features ``(N, C, *S)`` read (bilinear or trilinear interpolation) at ``points`` ``(N, P, d)`` in
    ``[0, 1]``: ``(N, C, P)``."""
    d = features.ndim - 2
    if points.ndim != 3 or points.shape[0] != features.shape[0] or points.shape[2] != d:
        raise ValueError(f"`points` must be ({features.shape[0]}, P, {d}) for features {tuple(features.shape)}, "
                         f"got {tuple(points.shape)}.")
    grid = (2 * points - 1).flip(-1)  # grid_sample's coordinates run x, y[, z]
    grid = grid.reshape(points.shape[0], points.shape[1], *(1,) * (d - 1), d).to(features.dtype)
    sampled = F.grid_sample(features, grid, mode="bilinear", align_corners=False)
    return sampled.reshape(*features.shape[:2], points.shape[1])


def binary_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """A mask logit's uncertainty: ``-|logit|`` (highest at the decision boundary, logit 0)."""
    return -logits.abs()


def class_uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Class logits' ``(N, K, …)`` uncertainty ``(N, 1, …)``: minus the margin of the best class over the second."""
    if logits.shape[1] == 1:
        return binary_uncertainty(logits)
    top = logits.topk(2, dim=1).values
    return (top[:, 1:2] - top[:, 0:1])


def training_points(coarse: torch.Tensor, uncertainty: Callable[[torch.Tensor], torch.Tensor], count: int,
                    oversample: float = 3.0, importance: float = 0.75) -> torch.Tensor:
    """The points ``(N, count, d)`` a point head trains on for coarse logits ``(N, K, *S)``: ``oversample·count``
    random points, the ``importance·count`` most uncertain of them (``uncertainty`` of the logits read there),
    then uniformly random points for the rest."""
    if count < 1 or oversample < 1 or not 0 <= importance <= 1:
        raise ValueError(f"`count` must be >= 1, `oversample` >= 1 and `importance` in [0, 1], got {count!r}, "
                         f"{oversample!r} and {importance!r}.")
    n, d = coarse.shape[0], coarse.ndim - 2
    candidates = torch.rand(n, int(count * oversample), d, device=coarse.device, dtype=coarse.dtype)
    chosen = int(importance * count)
    scores = uncertainty(point_sample(coarse, candidates))[:, 0]
    top = scores.topk(chosen, dim=1).indices
    uncertain = torch.gather(candidates, 1, top[..., None].expand(-1, -1, d))
    uniform = torch.rand(n, count - chosen, d, device=coarse.device, dtype=coarse.dtype)
    return torch.cat([uncertain, uniform], 1)


def most_uncertain_cells(uncertainty: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``count`` most uncertain cells of maps ``(N, 1, *S)``: their flat indices ``(N, c)`` and their centres
    as points ``(N, c, d)`` (``c = min(count, cells)``)."""
    shape = uncertainty.shape[2:]
    flat = uncertainty.flatten(1)
    indices = flat.topk(min(count, flat.shape[1]), dim=1).indices
    centres, rest = [], indices
    for size in reversed(shape):  # unravelled by hand: ONNX export traces the sizes as tensors
        centres.append(((rest % size).to(uncertainty.dtype) + 0.5) / size)
        rest = rest // size
    return indices, torch.stack(centres[::-1], -1)


def subdivide(logits: torch.Tensor, uncertainty: Callable[[torch.Tensor], torch.Tensor],
              predict: Callable[[torch.Tensor], torch.Tensor], steps: int, count: int) -> torch.Tensor:
    """PointRend's adaptive subdivision of logits ``(N, C, *S)``: ``steps`` times, up-sample ×2 (bilinear,
    trilinear) and replace the ``count`` most ``uncertain`` cells' logits by ``predict(points)`` ``(N, C, c)``.
    A step whose grid the next step would wholly refine anyway is skipped, as in the reference implementation.
    Returns ``(N, C, *S·2^steps)``."""
    d = logits.ndim - 2
    mode = "bilinear" if d == 2 else "trilinear"
    for step in range(steps):
        logits = F.interpolate(logits, scale_factor=2, mode=mode, align_corners=False)
        cells = math.prod(logits.shape[2:])
        if count >= 2 ** d * cells and step < steps - 1:
            continue
        indices, points = most_uncertain_cells(uncertainty(logits), count)
        refined = predict(points).to(logits.dtype)
        flat = logits.flatten(2).scatter(2, indices[:, None].expand(-1, logits.shape[1], -1), refined)
        logits = flat.view(logits.shape)
    return logits
