"""Measure an extreme-point model on fresh generated objects: IoU and click-to-mask latency."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from segarch.prompts.points import extreme_points
from segarch.prompts.segment import resolve_prompt_model, segment_from_points
from segarch.prompts.synthetic import object_scene

__all__ = ["evaluate_prompts", "iou", "click_curve", "click_curve_on"]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def evaluate_prompts(model, *, scenes: int = 20, shape=(160, 160), seed: int = 5000, min_pixels: int = 12,
                     jitter: float = 0.0, max_objects: int | None = None) -> dict[str, Any]:
    """IoU and latency of ``model`` on every object of ``scenes`` generated scenes (seeds ``seed``, ``seed + 1``, ...).

    Each object is prompted with its exact extreme points (moved by up to ``jitter`` pixels, as clicks
    would be); the latency is the whole :func:`segment_from_points` call (crop, network, paste).

    Returns:
        ``{"objects", "mean_iou", "median_iou", "min_iou", "median_ms", "p90_ms", "ious", "extents", "by_extent"}``:
        ``extents`` is each object's largest extent (pixels), ``by_extent`` the mean IoU of objects up to
        10, 10 to 20 and over 20 pixels across (``[low, high, count, mean_iou]`` rows).
    """
    model = resolve_prompt_model(model)
    rng = np.random.default_rng(seed)
    ious, times, sizes = [], [], []
    for s in range(scenes):
        image, labels = object_scene(shape, seed=seed + s)
        for value in range(1, int(labels.max()) + 1):
            mask = labels == value
            if mask.sum() < min_pixels:
                continue
            pts = extreme_points(mask).astype(float)
            if jitter:
                pts = np.clip(pts + rng.uniform(-jitter, jitter, pts.shape), 0, np.asarray(mask.shape) - 1)
            t = time.perf_counter()
            pred = segment_from_points(model, image, pts)
            times.append(time.perf_counter() - t)
            ious.append(iou(pred, mask))
            sizes.append(float(np.ptp(np.argwhere(mask), axis=0).max()) + 1)
            if max_objects and len(ious) >= max_objects:
                break
        if max_objects and len(ious) >= max_objects:
            break
    ious_a = np.asarray(ious)
    extents = np.asarray(sizes)
    by_extent = []
    for low, high in ((0, 10), (10, 20), (20, np.inf)):
        inside = (extents > low) & (extents <= high)
        if inside.any():
            by_extent.append([low, None if np.isinf(high) else high, int(inside.sum()), float(ious_a[inside].mean())])
    return {"objects": len(ious), "mean_iou": float(ious_a.mean()), "median_iou": float(np.median(ious_a)),
            "min_iou": float(ious_a.min()), "median_ms": float(np.median(times) * 1000),
            "p90_ms": float(np.percentile(times, 90) * 1000), "ious": [round(float(v), 4) for v in ious],
            "extents": [int(v) for v in extents], "by_extent": by_extent}


def _first_reach(curve: list[float], threshold: float, clicks_before: int, cap: int) -> int:
    for corrections, value in enumerate(curve):
        if value >= threshold:
            return min(cap, clicks_before + corrections)
    return cap


def click_curve(model, *, scenes: int = 20, shape=(160, 160), seed: int = 5000, min_pixels: int = 12,
                max_clicks: int = 20, z_spacing: int = 1, max_objects: int | None = None,
                pixel_size=None) -> dict[str, Any]:
    """The clicks-to-IoU curve of a model trained with corrections, on every object of generated scenes.

    Each object gets its exact extreme points, then corrective clicks, each at the centre of the largest
    error region inside the points' crop (:func:`segarch.prompts.clicks.next_click`) with the last mask as
    ``previous``, until its IoU reaches 0.90 after at least 3 corrections, or ``max_clicks`` clicks in all.

    Args:
        shape: scene shape; in 3D with ``z_spacing`` > 1 the scenes have thick slices
            (:func:`segarch.prompts.synthetic.anisotropic_scene`).
        pixel_size: the scenes' voxel size for :func:`segment_from_points` (e.g. ``(z_spacing, 1, 1)``: each crop
            resampled to the model's training voxel size); ``None``: taken as they are.

    Returns:
        ``{"objects", "mean_iou"`` (after 0, 1, 2, 3 corrections), ``"noc85", "noc90"`` (mean clicks, the
        extreme points included, to reach IoU 0.85 / 0.90, capped at ``max_clicks``), ``"missed85", "missed90"``
        (objects that never reached it), ``"median_ms", "p90_ms"`` (per corrective click), ``"curves"}``.
    """
    from segarch.prompts.synthetic import anisotropic_scene

    def generated():
        for s in range(scenes):
            if z_spacing > 1:
                yield anisotropic_scene(shape, z_spacing=z_spacing, seed=seed + s)
            else:
                yield object_scene(shape, seed=seed + s)

    return click_curve_on(model, generated(), min_pixels=min_pixels, max_clicks=max_clicks, max_objects=max_objects,
                          pixel_size=pixel_size)


def click_curve_on(model, scenes, *, min_pixels: int = 12, max_clicks: int = 20, max_objects: int | None = None,
                   pixel_size=None) -> dict[str, Any]:
    """:func:`click_curve` on given ``scenes``: ``(image, instance labels)`` pairs (e.g. held-out scenes of your own
    style, to compare a model before and after fine-tuning); ``pixel_size`` goes to
    :func:`segment_from_points`. Returns what :func:`click_curve` returns."""
    from segarch.prompts.clicks import next_click
    from segarch.prompts.segment import settings_for
    from segarch.prompts.voxels import scaled_crop_box, voxel_scale

    model = resolve_prompt_model(model)
    settings = settings_for(model)
    scale = voxel_scale(pixel_size, model.pixel_size, model.spatial_dims)
    curves, times = [], []
    for image, labels in scenes:
        n_points = 2 * labels.ndim
        for value in range(1, int(labels.max()) + 1):
            mask = labels == value
            if mask.sum() < min_pixels:
                continue
            pts = extreme_points(mask)
            pred = segment_from_points(model, image, pts, pixel_size=pixel_size)
            start, stop = scaled_crop_box(pts, mask.shape, settings, scale)  # the crop clicks must fall in
            box = tuple(slice(a, b) for a, b in zip(start, stop))
            curve, positive, negative = [iou(pred, mask)], [], []
            while n_points + len(curve) - 1 < max_clicks and (len(curve) <= 3 or curve[-1] < 0.9):
                click = next_click(pred[box], mask[box])
                if click is None:
                    curve.append(1.0)
                    continue
                point, is_positive = click
                (positive if is_positive else negative).append(point + np.asarray(start))
                t = time.perf_counter()
                pred = segment_from_points(model, image, pts, positive=positive or None, negative=negative or None,
                                           previous=pred, pixel_size=pixel_size)
                times.append(time.perf_counter() - t)
                curve.append(iou(pred, mask))
            curves.append(curve)
            if max_objects and len(curves) >= max_objects:
                break
        if max_objects and len(curves) >= max_objects:
            break
    n_points = 2 * model.spatial_dims
    first = np.asarray([c[:4] + [c[-1]] * (4 - len(c[:4])) for c in curves])
    noc = {t: [_first_reach(c, t, n_points, max_clicks) for c in curves] for t in (0.85, 0.90)}
    missed = {t: sum(max(c) < t for c in curves) for t in (0.85, 0.90)}
    return {"objects": len(curves), "mean_iou": [float(v) for v in first.mean(axis=0)],
            "noc85": float(np.mean(noc[0.85])), "noc90": float(np.mean(noc[0.90])),
            "missed85": int(missed[0.85]), "missed90": int(missed[0.90]),
            "median_ms": float(np.median(times) * 1000) if times else float("nan"),
            "p90_ms": float(np.percentile(times, 90) * 1000) if times else float("nan"),
            "curves": [[round(float(v), 4) for v in c] for c in curves]}

