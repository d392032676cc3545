"""Coarse levels of a prediction store, written as its blocks finish, and a live view of them.

A prediction store (``out`` of :func:`segarch.predict`) holds the result at full resolution in array
``0``. For a result larger than a screen, the store also holds levels ``1``, ``2``, … each halving Y and
X of the one before (labels: the most frequent value of each 2×2 window; probabilities: the mean),
exactly as :func:`segarch.io.pyramid` computes them, and lists them in its OME ``multiscales``. So a
viewer draws an overview from a few small chunks, never reading all of level 0, both while the run
fills the store and when a finished result is reopened.

Each finished block updates every level right away, from the block's pixels in memory (a pixel whose
2×2 window straddles a neighbouring block is computed from what the store holds there, and recomputed
when that neighbour finishes, so the last write is exact). Coarse chunks are shared by several blocks,
so these writes must come from one writer, as in a local run. When the sink is sent to Dask workers
(``scheduler=``), they write level 0 only; the levels are marked stale and rebuilt from level 0 when the
run completes.

:class:`LevelView` reads a level while it is being written (zeros where nothing is written yet, or
before the store exists): a plain array-like, so a viewer slices it directly, with no Dask graph and no
cache that could keep blocks from before they were written.

Public API::

    level_shapes(shape, axes) -> [shape of level 0, 1, ...]
    create_levels(group, plan) / open_levels(group) / write_block(levels, plan, key, data) / flush(levels)
    mark_stale(levels) / finish(levels, plan)     # for runs whose blocks were written elsewhere
    live_levels(path, shape, axes, dtype) -> [LevelView, ...]
"""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from segarch.io.image import level_factor
from segarch.io.ome_zarr import add_level_metadata
from segarch.io.pyramid import mean_reduce, pyramid_shapes
from segarch.tiling.plan import BlockKey, Plan

__all__ = ["level_shapes", "create_levels", "open_levels", "write_block", "flush", "mark_stale", "finish",
           "Levels", "LevelView", "live_levels", "MIN_SIZE", "FLUSH_SECONDS"]

#: The coarsest level has Y and X of at most this size (a screenful; a viewer's overview reads it whole).
MIN_SIZE = 256
_MIN_CHUNK = 256    # coarse levels' chunks: at least this edge, so an overview is a few chunk reads
_STALE = "segarch-pyramid"  # level 1's attribute: "pending" while chunks wait in memory, "stale", "fresh"
# Coarse chunks are shared by many blocks: they are updated in memory and written at most this often (and
# when the run ends or is cancelled), not once per block (a rewrite per block doubled an I/O-bound run).
FLUSH_SECONDS = 1.0


def level_shapes(shape: Sequence[int], axes: str) -> list[tuple[int, ...]]:
    """The shapes of a result's levels (level 0 first) for its ``axes`` (e.g. ``"TYX"``, ``"CZYX"``).

    Y and X are halved (a trailing odd pixel dropped) until both fit in :data:`MIN_SIZE`; one level only
    when the result is that small already.
    """
    if not {"Y", "X"} <= set(axes) or len(axes) != len(shape):
        return [tuple(int(n) for n in shape)]
    return pyramid_shapes(shape, axes, downscale_axes="YX", min_size=MIN_SIZE)


def _axes(plan: Plan) -> str:
    return plan.layout.output_axes(plan.output)


def create_levels(group, plan: Plan) -> None:
    """Create the coarse levels ``1``, ``2``, … of a new store (empty) and list them in its multiscales."""
    level0 = group["0"]
    axes = _axes(plan)
    shapes = level_shapes(level0.shape, axes)
    if len(shapes) == 1:
        return
    for k, shape in enumerate(shapes[1:], start=1):
        chunks = tuple(min(n, max(-(-c // 2 ** k), _MIN_CHUNK)) if a in "YX" else c
                       for a, n, c in zip(axes, shape, level0.chunks))
        group.create_array(str(k), shape=shape, chunks=chunks, dtype=level0.dtype, fill_value=0,
                           dimension_names=[a.lower() for a in axes])
    attrs = dict(group.attrs)  # the levels' metadata: the io package's one OME builder extends level 0's
    factors = [[level_factor(n0, n) for n0, n in zip(level0.shape, shape)] for shape in shapes[1:]]
    if add_level_metadata(attrs, factors, labels=plan.output == "labels"):
        group.attrs.update(attrs)


class Levels(list):
    """Level 0 and the coarse levels of a store, with the coarse chunks updated since they were last written
    (``pending``: (level, chunk index) → the chunk's pixels)."""

    def __init__(self, arrays) -> None:
        super().__init__(arrays)
        self.pending: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}
        self.flushed = time.monotonic()


def open_levels(group) -> Levels:
    """Level 0 and the coarse levels of a store (just level 0 for a store written without them).

    A store whose last writer stopped with coarse chunks not yet written (a crash) is marked stale: its
    levels are rebuilt from level 0 when a run completes it.
    """
    levels = Levels([group["0"]])
    names = set(group.array_keys())
    while str(len(levels)) in names:
        levels.append(group[str(len(levels))])
    if len(levels) > 1 and levels[1].attrs.get(_STALE) == "pending" and not group.store.read_only:
        levels[1].attrs.update({_STALE: "stale"})
    return levels


def _chunk_box(array, chunk: tuple[int, ...]) -> list[tuple[int, int]]:
    return [(i * c, min((i + 1) * c, n)) for i, c, n in zip(chunk, array.chunks, array.shape)]


def _chunks_touching(array, box: list[tuple[int, int]]):
    return itertools.product(*[range(lo // c, -(-hi // c)) for (lo, hi), c in zip(box, array.chunks)])


def _put(levels: Levels, k: int, box: list[tuple[int, int]], data: np.ndarray) -> None:
    """Write ``data`` (covering ``box``, one (start, stop) per axis) into level ``k``'s chunks in memory."""
    array = levels[k]
    if not levels.pending and array.attrs.get(_STALE) != "pending":
        levels[1].attrs.update({_STALE: "pending"})  # a crash before the next flush leaves the levels stale
    for chunk in _chunks_touching(array, box):
        cbox = _chunk_box(array, chunk)
        part = [(max(a, c), min(b, d)) for (a, b), (c, d) in zip(box, cbox)]
        buffer = levels.pending.get((k, chunk))
        if buffer is None:
            whole = all(p == c for p, c in zip(part, cbox))
            buffer = (np.empty([d - c for c, d in cbox], array.dtype) if whole
                      else np.asarray(array[tuple(slice(c, d) for c, d in cbox)]))
            levels.pending[(k, chunk)] = buffer
        buffer[tuple(slice(a - c, b - c) for (a, b), (c, _) in zip(part, cbox))] = \
            data[tuple(slice(a - lo, b - lo) for (a, b), (lo, _) in zip(part, box))]


def _get(levels: Levels, k: int, box: list[tuple[int, int]]) -> np.ndarray:
    """Level ``k``'s pixels in ``box``: the store, with the chunks waiting in memory laid over it."""
    out = np.asarray(levels[k][tuple(slice(a, b) for a, b in box)])
    if k == 0:
        return out
    for chunk in _chunks_touching(levels[k], box):
        buffer = levels.pending.get((k, chunk))
        if buffer is not None:
            cbox = _chunk_box(levels[k], chunk)
            part = [(max(a, c), min(b, d)) for (a, b), (c, d) in zip(box, cbox)]
            out[tuple(slice(a - lo, b - lo) for (a, b), (lo, _) in zip(part, box))] = \
                buffer[tuple(slice(a - c, b - c) for (a, b), (c, _) in zip(part, cbox))]
    return out


def flush(levels: Levels, force: bool = True) -> None:
    """Write the coarse chunks waiting in memory (with ``force=False``: only if the last write is older than
    :data:`FLUSH_SECONDS`). The engine's sink calls this when a run ends, finished or cancelled."""
    if not isinstance(levels, Levels) or not levels.pending:
        return
    if not force and time.monotonic() - levels.flushed < FLUSH_SECONDS:
        return
    for (k, chunk), buffer in sorted(levels.pending.items()):
        levels[k][tuple(slice(c, d) for c, d in _chunk_box(levels[k], chunk))] = buffer
    levels.pending.clear()
    levels.flushed = time.monotonic()
    if levels[1].attrs.get(_STALE) == "pending":
        levels[1].attrs.update({_STALE: "fresh"})


def _reduce(block: np.ndarray, y: int, x: int, labels: bool) -> np.ndarray:
    """One halving of Y (axis ``y``) and X of ``block``, whose Y and X sizes are even."""
    if labels:
        return _mode_2x2(block, y, x)
    shape: list[int] = []
    for i, n in enumerate(block.shape):
        shape += [n // 2, 2] if i in (y, x) else [n, 1]
    return mean_reduce(block.reshape(shape), axis=tuple(range(1, 2 * block.ndim, 2)))


def _mode_2x2(block: np.ndarray, y: int, x: int) -> np.ndarray:
    """:func:`segarch.io.pyramid.mode_reduce` over 2×2 windows, ~15× faster: the most frequent of the
    window's values ``a b / c d``, ties going to the first in that order."""
    def part(dy: int, dx: int) -> np.ndarray:
        index = [slice(None)] * block.ndim
        index[y], index[x] = slice(dy, None, 2), slice(dx, None, 2)
        return block[tuple(index)]

    a, b, c, d = part(0, 0), part(0, 1), part(1, 0), part(1, 1)
    ab, ac, ad, bc, bd, cd = a == b, a == c, a == d, b == c, b == d, c == d
    counts = [ab.astype(np.uint8) + ac + ad, ab.astype(np.uint8) + bc + bd, ac.astype(np.uint8) + bc + cd,
              ad.astype(np.uint8) + bd + cd]
    out, best = d.copy(), counts[3]
    for value, count in ((c, counts[2]), (b, counts[1]), (a, counts[0])):  # backwards: the first wins ties
        wins = count >= best
        out = np.where(wins, value, out)
        best = np.maximum(best, count)
    return out


def write_block(levels: Levels, plan: Plan, key: BlockKey, data: np.ndarray) -> None:
    """Update every coarse level for the block ``key`` whose level-0 pixels ``data`` were just written (in
    memory; written to the store at most every :data:`FLUSH_SECONDS` and by :func:`flush`)."""
    if len(levels) < 2 or levels[1].attrs.get(_STALE) == "stale":
        return
    axes = _axes(plan)
    plane, block = key
    loop = dict(zip(plan.layout.loop, plane))
    spatial = dict(zip(plan.layout.spatial, plan.block_region(block)))
    kept = [a for a in axes if a not in loop]  # the axes of ``data``
    y, x = kept.index("Y"), kept.index("X")
    lo = {a: spatial[a][0] for a in "YX"}
    hi = {a: spatial[a][1] for a in "YX"}
    labels = plan.output == "labels"

    def box(start: dict, stop: dict) -> list[tuple[int, int]]:
        """The block's pixels at a level, one (start, stop) per axis of the level (Y and X from ``start``)."""
        out = []
        for a, n in zip(axes, levels[0].shape):
            if a in loop:
                out.append((loop[a], loop[a] + 1))
            elif a in start:
                out.append((start[a], stop[a]))
            else:
                out.append(spatial[a] if a in spatial else (0, n))  # Z of a 3D block; C
        return out

    looped = [i for i, a in enumerate(axes) if a in loop]  # axes of the store that ``data`` does not have

    for k in range(1, len(levels)):
        sizes = dict(zip(axes, levels[k].shape))
        new_lo = {a: lo[a] // 2 for a in "YX"}
        new_hi = {a: min(-(-hi[a] // 2), sizes[a]) for a in "YX"}
        if any(new_hi[a] <= new_lo[a] for a in "YX"):
            break  # the block lies in the trailing odd pixels a halving drops
        need_lo = {a: 2 * new_lo[a] for a in "YX"}
        need_hi = {a: 2 * new_hi[a] for a in "YX"}
        if all(need_lo[a] >= lo[a] and need_hi[a] <= hi[a] for a in "YX"):
            cut = [slice(None)] * data.ndim
            cut[y] = slice(need_lo["Y"] - lo["Y"], need_hi["Y"] - lo["Y"])
            cut[x] = slice(need_lo["X"] - lo["X"], need_hi["X"] - lo["X"])
            source = data[tuple(cut)]
        else:  # a 2×2 window straddles a neighbouring block: what the level holds there (zeros until written)
            source = np.squeeze(_get(levels, k - 1, box(need_lo, need_hi)), axis=tuple(looped))
        data = _reduce(source, y, x, labels)
        _put(levels, k, box(new_lo, new_hi), np.expand_dims(data, axis=tuple(looped)))
        lo, hi = new_lo, new_hi
    flush(levels, force=False)


def mark_stale(levels: list) -> None:
    """Say that level 0 is being written where the coarse levels are not updated (by Dask workers)."""
    if len(levels) > 1 and levels[1].attrs.get(_STALE) != "stale":
        levels[1].attrs.update({_STALE: "stale"})


def finish(levels: list, plan: Plan) -> None:
    """At the end of a complete run: write what waits in memory; rebuild the coarse levels from level 0 if
    they were marked stale (written by Dask workers, or left by a crash)."""
    flush(levels)
    if len(levels) < 2 or levels[1].attrs.get(_STALE) != "stale":
        return
    axes = _axes(plan)
    y, x = axes.index("Y"), axes.index("X")
    for k in range(1, len(levels)):
        target, source = levels[k], levels[k - 1]
        for chunk in np.ndindex(*(-(-n // c) for n, c in zip(target.shape, target.chunks))):
            out = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(chunk, target.chunks, target.shape))
            src = tuple(slice(2 * s.start, 2 * s.stop) if d in (y, x) else s for d, s in enumerate(out))
            target[out] = _reduce(np.asarray(source[src]), y, x, plan.output == "labels")
    levels[1].attrs.update({_STALE: "fresh"})


class LevelView:
    """One level of a prediction store, read while it is being written: a read-only array-like.

    ``view[index]`` reads the pixels at ``index`` from ``<path>/<level>``; zeros (of ``dtype``) while the
    store or the level does not exist yet. No Dask, so no cache can keep pixels from before they were
    written: every read is fresh (the store's writes replace whole chunk files, so a read sees a chunk
    before or after a write, never half of one).
    """

    def __init__(self, path: str | os.PathLike, level: int, shape: Sequence[int], dtype) -> None:
        self.path = Path(path)
        self.level = int(level)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self._array = None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LevelView({str(self.path)!r}, level={self.level}, shape={self.shape}, dtype={self.dtype})"

    def _open(self):
        if self._array is None:
            level = self.path / str(self.level)
            if not ((level / "zarr.json").is_file() or (level / ".zarray").is_file()):
                return None  # not created yet: the engine is still starting
            import zarr

            array = zarr.open_array(str(level), mode="r")
            if tuple(array.shape) != self.shape:
                raise ValueError(f"The store {str(self.path)!r} level {self.level} has shape {tuple(array.shape)}, "
                                 f"not the {self.shape} this view was made for.")
            self._array = array
        return self._array

    def __getitem__(self, index) -> np.ndarray:
        array = self._open()
        if array is None:
            return np.zeros(self.shape, self.dtype)[index]
        return np.asarray(array[index]).astype(self.dtype, copy=False)

    def __array__(self, dtype=None, copy=None):
        out = self[tuple(slice(None) for _ in self.shape)]
        return out if dtype is None else out.astype(dtype, copy=False)


def live_levels(path: str | os.PathLike, shape: Sequence[int], axes: str, dtype=np.uint8) -> list[LevelView]:
    """Views of every level the store at ``path`` will have for a result of ``shape`` and ``axes``."""
    return [LevelView(path, k, s, dtype) for k, s in enumerate(level_shapes(shape, axes))]
