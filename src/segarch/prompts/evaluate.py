"""Measure an extreme-point model on fresh generated objects: IoU and click-to-mask latency."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from segarch.prompts.points import extreme_points
from segarch.prompts.segment import resolve_prompt_model, segment_from_points
from segarch.prompts.synthetic import object_scene

__all__ = ["evaluate_prompts", "iou"]


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
