"""Tiles of the image itself to calibrate int8 on (``segarch.predict(..., precision="int8")``)."""

from __future__ import annotations

import itertools

import numpy as np

from segarch.preprocessing import Preprocessor
from segarch.tiling.pipeline import read_tile
from segarch.tiling.plan import Plan
from segarch.tiling.skipping import constant_key
from segarch.tiling.source import ImageSource

__all__ = ["calibration_tiles", "CALIBRATION_TILES"]

#: Tiles calibrated on (and on which int8's labels are compared with fp32's): enough to cover an image's
#: range of contents, few enough that quantising costs a few batches.
CALIBRATION_TILES = 16


def calibration_tiles(plan: Plan, source: ImageSource, preprocess: Preprocessor,
                      count: int = CALIBRATION_TILES) -> np.ndarray:
    """Up to ``count`` tiles ``(N, C, *tile)`` spread evenly over the image (every plane, every axis), read and
    pre-processed as the engine feeds them; tiles the network never sees (constant, left out) are passed over.
    The same image and plan give the same tiles (the int8 graph's cache key holds them)."""
    per_axis = [len(g.starts) for g in plan.grids]
    planes = list(plan.planes())
    total = len(planes) * int(np.prod(per_axis))
    candidates = np.unique(np.linspace(0, total - 1, min(total, 4 * count)).round().astype(np.int64))
    # Interleave: the first `count` spread over the whole image, the rest fill in for passed-over tiles.
    order = list(itertools.chain(candidates[::4], *(candidates[k::4] for k in (2, 1, 3))))
    tiles = []
    for flat in order:
        plane_index, tile_index = divmod(int(flat), int(np.prod(per_axis)))
        tile = read_tile(plan, source, preprocess, (planes[plane_index], tuple(int(i) for i in np.unravel_index(tile_index, per_axis))))
        if np.isnan(tile).any() or constant_key(tile) is not None:
            continue
        tiles.append(tile)
        if len(tiles) == count:
            break
    return np.stack(tiles).astype(np.float32) if tiles else np.zeros((0, 1, *plan.tile_shape), np.float32)
