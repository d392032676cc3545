"""Multiscale pyramids: each level halves the chosen axes; images by mean, labels by mode.

A labels pyramid must hold only labels that exist at level 0 (a mean would invent new ones), so
labels use the most frequent value of each 2×2 (2×2×2) block, ties going to the first pixel.
"""

from __future__ import annotations

from typing import Sequence

import dask.array as da
import numpy as np

__all__ = ["downsample", "pyramid", "pyramid_shapes", "mode_reduce", "mean_reduce"]


def mean_reduce(block: np.ndarray, axis: tuple[int, ...] | None = None, dtype=None) -> np.ndarray:
    """Mean over ``axis`` (a ``dask.array.coarsen`` reduction), back in the input dtype."""
    if axis is None:  # Dask asks for its meta with no axis
        return block
    out = block.mean(axis=axis, dtype=np.float64)
    if np.issubdtype(block.dtype, np.integer):
        out = np.rint(out)
    elif block.dtype == bool:
        out = out >= 0.5
    return out.astype(block.dtype, copy=False)


def mode_reduce(block: np.ndarray, axis: tuple[int, ...] | None = None, dtype=None) -> np.ndarray:
    """Most frequent value over ``axis`` (a ``dask.array.coarsen`` reduction); ties: the first one."""
    if axis is None:
        return block
    axis = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    keep = [i for i in range(block.ndim) if i not in axis]
    moved = np.transpose(block, keep + list(axis))
    flat = moved.reshape(moved.shape[: len(keep)] + (-1,))
    # Count, for each candidate, how many values in the block equal it; the window is at most 8 long.
    counts = np.stack([(flat == flat[..., i: i + 1]).sum(-1) for i in range(flat.shape[-1])], axis=-1)
    return np.take_along_axis(flat, counts.argmax(-1)[..., None], axis=-1)[..., 0]


def downsample(data, axes: str, *, labels: bool, downscale_axes: str = "YX", factor: int = 2) -> da.Array:
    """One pyramid step: ``factor``× smaller along ``downscale_axes`` (a trailing odd pixel is dropped)."""
    arr = data if isinstance(data, da.Array) else da.asarray(data)
    factors = {i: (factor if a in downscale_axes and arr.shape[i] >= factor else 1) for i, a in enumerate(axes)}
    reduce = mode_reduce if labels else mean_reduce
    return da.coarsen(reduce, arr, factors, trim_excess=True, dtype=arr.dtype)


def pyramid_shapes(shape: Sequence[int], axes: str, *, levels: int | None = None, downscale_axes: str = "YX",
                   min_size: int = 256, max_levels: int = 8) -> list[tuple[int, ...]]:
    """The shapes of a pyramid; ``levels=None`` halves until every down-scaled axis fits in ``min_size``."""
    if levels is not None and (not isinstance(levels, (int, np.integer)) or levels < 1):
        raise ValueError(f"`levels` must be a positive integer or None, got {levels!r}.")
    shapes = [tuple(int(n) for n in shape)]
    idx = [i for i, a in enumerate(axes) if a in downscale_axes]
    while True:
        last = shapes[-1]
        if levels is not None and len(shapes) >= levels:
            break
        if levels is None and (len(shapes) >= max_levels or all(last[i] <= min_size for i in idx)):
            break
        if any(last[i] < 2 for i in idx):
            break
        shapes.append(tuple(n // 2 if i in idx else n for i, n in enumerate(last)))
    return shapes


def pyramid(data, axes: str, *, labels: bool, levels: int | None = None, downscale_axes: str = "YX") -> list[da.Array]:
    """Lazy levels, level 0 first (each computed from the previous one)."""
    arr = data if isinstance(data, da.Array) else da.asarray(data)
    out = [arr]
    for _ in pyramid_shapes(arr.shape, axes, levels=levels, downscale_axes=downscale_axes)[1:]:
        out.append(downsample(out[-1], axes, labels=labels, downscale_axes=downscale_axes))
    return out
