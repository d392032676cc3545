"""Extreme points of an object mask, and checks of user-given points.

DEXTR (Maninis et al. 2018, arXiv:1711.09081) prompts an object with its extreme points: in 2D the
left-most, right-most, top and bottom pixels; in 3D the two extremes along each of Z, Y and X.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["extreme_points", "check_points", "needed_points", "check_clicks"]


def needed_points(spatial_dims: int) -> int:
    """Extreme points per object: 4 in 2D, 6 in 3D."""
    return 2 * int(spatial_dims)


def _middle_of_ties(coords: np.ndarray) -> np.ndarray:
    # Ties (a flat edge) are broken by the middle of the tied pixels in row-major order, so the point
    # sits where a user would click on that edge, and the same mask always gives the same points.
    order = np.lexsort(coords.T[::-1])
    return coords[order[len(order) // 2]]


def extreme_points(mask) -> np.ndarray:
    """The extreme points of an object mask.

    Args:
        mask: a 2D ``(Y, X)`` or 3D ``(Z, Y, X)`` array; non-zero pixels are the object.

    Returns:
        An integer array of pixel coordinates in the mask's axis order: in 2D ``(4, 2)`` rows
        ``(y, x)`` for the left, right, top and bottom points; in 3D ``(6, 3)`` rows ``(z, y, x)`` for the
        first and last along Z, then along Y, then along X. Where several pixels share an extreme
        coordinate, the middle one of them (row-major order) is taken, so the result is deterministic.

    Raises:
        ValueError: the mask is not 2D or 3D, or it is empty.

    Examples::

        >>> m = np.zeros((5, 7), bool); m[1:4, 2:6] = True
        >>> extreme_points(m).tolist()
        [[2, 2], [2, 5], [1, 4], [3, 4]]
    """
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(f"`mask` must be 2D (Y, X) or 3D (Z, Y, X), got shape {mask.shape}.")
    coords = np.argwhere(mask != 0)
    if len(coords) == 0:
        raise ValueError(f"`mask` is empty (no non-zero pixel in shape {mask.shape}): "
                         "an object needs at least one pixel.")
    # 2D order of the paper's clicks: left, right (along X), top, bottom (along Y); 3D: Z, Y, X.
    axes = (1, 0) if mask.ndim == 2 else (0, 1, 2)
    points = []
    for axis in axes:
        for pick in (coords[:, axis].min(), coords[:, axis].max()):
            points.append(_middle_of_ties(coords[coords[:, axis] == pick]))
    return np.asarray(points, dtype=np.int64)


def check_points(points, spatial_shape: Sequence[int], *, minimum: int | None = None) -> np.ndarray:
    """Validate clicked points against an image; return them as a float array ``(N, spatial_dims)``.

    Args:
        points: ``(N, spatial_dims)`` pixel coordinates (e.g. a napari Points layer's ``data`` in the
            image's pixel space), in the image's spatial axis order.
        spatial_shape: the image's spatial shape.
        minimum: the least number of points (default: 2 per spatial axis).

    Raises:
        ValueError: wrong shape, non-finite values, too few points, a point outside the image, or all
            points equal (degenerate); the message says which point and what is allowed.
    """
    dims = len(spatial_shape)
    minimum = needed_points(dims) if minimum is None else int(minimum)
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"`points` must be numbers of shape (N, {dims}), got {points!r}.") from None
    if pts.ndim != 2 or pts.shape[1] != dims:
        raise ValueError(f"`points` must have shape (N, {dims}) (one row of {'ZYX'[-dims:]} coordinates per point) "
                         f"for a {dims}D image, got shape {pts.shape}.")
    if len(pts) < minimum:
        raise ValueError(f"`points`: {len(pts)} given, at least {minimum} are needed in {dims}D "
                         f"(the object's extreme points: {_names(dims)}).")
    if not np.isfinite(pts).all():
        raise ValueError("`points` hold NaN or infinite coordinates.")
    for i, p in enumerate(pts):
        # A point is inside when it rounds to a pixel of the image (napari's pixel centres are integers).
        if np.any(p < -0.5) or np.any(p >= np.asarray(spatial_shape) - 0.5):
            at, shape = tuple(round(float(v), 2) for v in p), tuple(int(s) for s in spatial_shape)
            raise ValueError(f"`points`[{i}] = {at} lies outside the image of shape {shape} "
                             "(allowed: -0.5 <= coordinate < size - 0.5).")
    if np.all(np.ptp(pts, axis=0) < 1):
        at = tuple(round(float(v), 2) for v in pts[0])
        raise ValueError(f"`points` are degenerate: all {len(pts)} are at {at}; click the object's {_names(dims)}.")
    return pts


def _names(dims: int) -> str:
    return "left, right, top and bottom points" if dims == 2 else "first and last points along Z, Y and X"


def check_clicks(clicks, name: str, start: Sequence[int], stop: Sequence[int], spatial_shape: Sequence[int]
                 ) -> np.ndarray:
    """Validate corrective clicks (``name``: ``"positive"`` or ``"negative"``) against the image and the current
    object's crop ``[start, stop)``; return them as a float array ``(N, spatial_dims)`` (``(0, dims)`` for none).

    Raises:
        ValueError: wrong shape, non-finite values, a click outside the image or outside the object's crop
            (a correction cannot move the crop: click the extreme points again for a larger object).
    """
    dims = len(spatial_shape)
    if clicks is None:
        return np.zeros((0, dims))
    try:
        pts = np.asarray(clicks, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be numbers of shape (N, {dims}), got {clicks!r}.") from None
    if pts.size == 0:
        return np.zeros((0, dims))
    if pts.ndim != 2 or pts.shape[1] != dims:
        raise ValueError(f"`{name}` clicks must have shape (N, {dims}) (one row of {'ZYX'[-dims:]} coordinates per "
                         f"click) for a {dims}D image, got shape {pts.shape}.")
    if not np.isfinite(pts).all():
        raise ValueError(f"`{name}` clicks hold NaN or infinite coordinates.")
    for i, p in enumerate(pts):
        at = tuple(round(float(v), 2) for v in p)
        if np.any(p < -0.5) or np.any(p >= np.asarray(spatial_shape) - 0.5):
            raise ValueError(f"`{name}`[{i}] = {at} lies outside the image of shape {tuple(spatial_shape)} "
                             "(allowed: -0.5 <= coordinate < size - 0.5).")
        if np.any(p < np.asarray(start) - 0.5) or np.any(p >= np.asarray(stop) - 0.5):
            raise ValueError(f"`{name}`[{i}] = {at} lies outside the current object's crop from {tuple(start)} to "
                             f"{tuple(int(v) - 1 for v in stop)} (the extreme points' box and margin); a correction "
                             "works inside it: click the object's extreme points again to enlarge it.")
    return pts
