"""The coarse levels of a multiscale labels store: an OME-Zarr labels pyramid kept equal to level 0 box by box.

Level ``k`` holds every ``2**k``-th pixel of level 0 along Y and X (nearest, ``level0[..., ::2**k, ::2**k]`` cut to
the level's shape: label pyramids take pixels, they never average ids; a mode would make a level depend on
2×2 windows of the level above and a write's update reach further). Leading axes (Z, T) are kept: a stack's
levels are its slices, each halved. Y and X are halved (a trailing odd pixel dropped, as in
:func:`segarch.io.pyramid.pyramid_shapes`) until both fit in :data:`MIN_SIZE`. Because each coarse pixel is one
level-0 pixel, a write to a box of level 0 changes only the coarse pixels inside that box:
:func:`update_levels` reads the box once and writes those few pixels per level.

Public API::

    level_shapes(shape) -> [shape of level 0, 1, ...]
    create_levels(path, shape, dtype, chunks) -> [zarr array per level]    # an OME-Zarr labels group
    open_levels(node, path) -> [zarr array per level]                        # a group's levels, or [the array]
    check_levels(levels) / update_levels(levels, box)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from segarch.io.ome_zarr import add_level_metadata, ome_attrs
from segarch.io.pyramid import pyramid_shapes

__all__ = ["MIN_SIZE", "COARSE_CHUNK", "METHOD", "level_shapes", "create_levels", "open_levels", "check_levels",
           "update_levels"]

#: The coarsest level has Y and X of at most this size (an overview is a few chunks).
MIN_SIZE = 256
#: The Y and X chunk size of the coarse levels (level 0 keeps the store's): 256² uint32 is 256 KiB to rewrite.
COARSE_CHUNK = 256
#: How the levels are made, recorded in the store's ``multiscales`` metadata.
METHOD = "segarch.prompts.label_levels: every 2**k-th pixel of level 0 along Y and X (nearest)"


def _axes(shape: Sequence[int]) -> str:
    if not 2 <= len(shape) <= 4:
        raise ValueError(f"A multiscale labels store takes a `shape` of 2 to 4 axes (YX, ZYX, TZYX), got "
                         f"{tuple(shape)!r}.")
    return "TZYX"[-len(shape):]


def level_shapes(shape: Sequence[int]) -> list[tuple[int, ...]]:
    """The shapes of the levels of labels of ``shape`` (level 0 first); Y and X halved, leading axes kept."""
    shape = tuple(int(n) for n in shape)
    return pyramid_shapes(shape, _axes(shape), downscale_axes="YX", min_size=MIN_SIZE)


def create_levels(path, shape: Sequence[int], dtype, chunks: Sequence[int], *, overwrite: bool = False) -> list:
    """A new, empty OME-Zarr labels group at ``path`` with arrays ``0``, ``1``, … (nothing written for empty
    chunks) listed in its ``multiscales``; returns the arrays, level 0 first."""
    import zarr

    shapes = level_shapes(shape)
    axes = _axes(shapes[0])
    group = zarr.open_group(str(path), mode="w" if overwrite else "w-")
    # Coarse levels in smaller chunks (Y, X at most COARSE_CHUNK): a write rewrites one small chunk per level.
    coarse = tuple(chunks[:-2]) + tuple(min(c, COARSE_CHUNK) for c in chunks[-2:])
    levels = [group.create_array(str(k), shape=s, chunks=tuple(min(c, n) for c, n in zip(chunks if k == 0 else coarse,
                                                                                          s)),
                                 dtype=dtype, fill_value=0) for k, s in enumerate(shapes)]
    attrs = ome_attrs(axes, (1.0,) * len(axes), name=str(getattr(path, "name", path)), labels=True)
    add_level_metadata(attrs, [[2.0 ** k if a in "YX" else 1.0 for a in axes] for k in range(1, len(shapes))],
                       labels=True)
    multiscales = attrs["ome"]["multiscales"][0]
    multiscales["type"] = "nearest"
    multiscales["metadata"] = {"method": METHOD}
    group.attrs.update(attrs)
    return levels


def open_levels(node, path: str) -> list:
    """The arrays of an opened Zarr ``node``: ``[node]`` for an array, a group's ``multiscales`` levels otherwise.

    Raises:
        ValueError: a group without OME ``multiscales`` metadata, or one whose levels cannot be opened.
    """
    if not hasattr(node, "create_array"):  # an array
        return [node]
    attrs = dict(node.attrs)
    holder = attrs["ome"] if isinstance(attrs.get("ome"), dict) else attrs
    try:
        datasets = holder["multiscales"][0]["datasets"]
        return [node[d["path"]] for d in datasets]
    except (KeyError, IndexError, TypeError) as err:
        raise ValueError(f"`path` {path!r} is a Zarr group but not a multiscale labels image: its OME "
                         f"'multiscales' metadata is missing or names a level that is not there ({err!r}).") from None


def check_levels(levels: Sequence) -> None:
    """Raise a ValueError unless every level ``k`` has level 0's dtype and its shape halved ``k`` times along Y
    and X (floor or ceil: both hold ``level0[..., ::2**k, ::2**k]``), the leading axes kept."""
    base = tuple(int(n) for n in levels[0].shape)
    for k, level in enumerate(levels[1:], start=1):
        have = tuple(int(n) for n in level.shape)
        f = 2 ** k
        allowed = [(n,) if axis < len(base) - 2 else (n // f, -(-n // f)) for axis, n in enumerate(base)]
        if len(have) != len(base) or any(h not in ok for h, ok in zip(have, allowed)):
            expected = tuple(ok[0] for ok in allowed)
            raise ValueError(f"The labels' level {k} has shape {have}, expected {expected}: level k must take every "
                             f"2**k-th pixel of level 0 {base} along Y and X; nothing was written.")
        if np.dtype(level.dtype) != np.dtype(levels[0].dtype):
            raise ValueError(f"The labels' level {k} has dtype {np.dtype(level.dtype)}, level 0 "
                             f"{np.dtype(levels[0].dtype)}: all levels must hold the same ids; nothing was written.")


def update_levels(levels: Sequence, box: Sequence[slice], region: np.ndarray | None = None) -> None:
    """Make the coarse levels equal to level 0 again inside ``box`` (one slice per axis of level 0, just written).

    Level 0 is read once over the box (unless ``region``, its content there, is given); each level gets the pixels
    ``i`` with ``i * 2**k`` inside it, written as one block (only the chunks under the box are touched)."""
    if len(levels) < 2:
        return
    box = tuple(slice(int(b.start), int(b.stop)) for b in box)
    lead = len(box) - 2
    region = None
    for k, level in enumerate(levels[1:], start=1):
        f = 2 ** k
        inner = []
        for b, n in zip(box[lead:], level.shape[lead:]):
            lo, hi = -(-b.start // f), min(-(-b.stop // f), int(n))
            inner.append((lo, hi))
        if any(hi <= lo for lo, hi in inner):
            return  # no multiple of 2**k in the box: none of 2**(k+1) either
        if region is None:
            region = np.asarray(levels[0][box])
        take = tuple(slice(lo * f - b.start, (hi - 1) * f - b.start + 1, f) for (lo, hi), b in zip(inner, box[lead:]))
        level[box[:lead] + tuple(slice(lo, hi) for lo, hi in inner)] = region[(Ellipsis,) + take]
