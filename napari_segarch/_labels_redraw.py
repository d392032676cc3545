"""Redraw only the written region of a multiscale Labels layer (napari 0.9 has no partial refresh for one).

napari's ``Labels.data_setitem`` (write + partial redraw) takes a single-level layer only: its pixels index level
0, and the displayed slice is the whole plane. A multiscale layer shows one tile of one level (``data_level``,
``corner_pixels``); ``Labels.refresh()`` would read that whole tile again. Here the part of the tile under the
written box is read from the shown level, put into the slice napari holds (its raw ids and their colours), and
sent to the canvas as a ``labels_update`` event, the way ``data_setitem`` does for one level.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["redraw_region"]


def redraw_region(layer, box: Sequence[slice]) -> str:
    """Show what the store holds under ``box`` (slices of level 0, one per axis) in the multiscale ``layer``.

    Returns what was done: ``"region"`` (the tile's pixels under the box redrawn), ``"hidden"`` (the box is not
    on the shown plane or tile: nothing to draw), or ``"refresh"`` (a view this does not handle, e.g. 3D
    display or contours: the whole tile is read again by ``layer.refresh()``)."""
    shown = layer._slice
    if not layer.loaded or shown.empty:
        return "hidden"
    slice_input = shown.slice_input
    displayed = list(slice_input.displayed)
    order_shown = [d for d in slice_input.order if d in displayed]
    if not layer.multiscale or slice_input.ndisplay != 2 or layer.contour > 0 or order_shown != sorted(displayed):
        layer.refresh()
        return "refresh"
    level = layer.data_level
    data = layer.data[level]
    factors = np.asarray(layer.downsample_factors[level], float)
    index: list = [None] * len(box)
    for dim, point in layer._get_pt_not_disp().items():
        if not box[dim].start <= point < box[dim].stop:
            return "hidden"
        index[dim] = int(min(max(round(point / factors[dim]), 0), data.shape[dim] - 1))
    tile = shown.tile_to_data
    local = []
    for i, dim in enumerate(displayed):
        f = factors[dim]
        origin = int(round(tile.translate[dim] / tile.scale[dim]))
        size = shown.image.raw.shape[i]
        # the level's pixels whose level-0 pixel lies in the box (one more on each side: factors are shape ratios)
        lo = max(int(np.ceil(box[dim].start / f)) - 1, origin, 0)
        hi = min(int(np.ceil(box[dim].stop / f)) + 1, origin + size, data.shape[dim])
        if hi <= lo:
            return "hidden"
        index[dim] = slice(lo, hi)
        local.append(slice(lo - origin, hi - origin))
    local = tuple(local)
    shown.image.raw[local] = np.asarray(data[tuple(index)])
    colours = layer.colormap._data_to_texture(shown.image.raw[local])
    shown.image.view[local] = colours
    layer.events.labels_update(data=colours, offset=tuple(s.start for s in local))
    return "region"
