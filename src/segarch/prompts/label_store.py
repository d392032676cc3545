"""Labels larger than memory: paint objects into a chunked Zarr store (or any array), undo, next free id.

Only the chunks under an object are read and written: a painted object is a box read from the store and
the changed pixels written back by their coordinates. The next free id lives in the Zarr array's attributes
(``segarch_next_label``), so a new object never needs a scan of the whole store.

A multiscale store (``multiscale=True``: an OME-Zarr labels pyramid, :mod:`~segarch.prompts.label_levels`) keeps
its coarse levels equal to level 0 under every write (paint and undo alike), so a viewer draws any level without
reading level 0 whole.

Examples::

    >>> store = LabelStore.create("cells_labels.zarr", shape=(20000, 20000))      # on disk, chunked, empty
    >>> store = LabelStore.create("slide_labels.zarr", shape=(20000, 20000), multiscale=True)  # + 7 levels
    >>> crop, offset = prompts.segment_from_points(model, lazy_image, points, return_crop=True)
    >>> label = store.paint(crop, offset)                                          # 1, then 2, ...
    >>> store.undo()                                                               # restores what it overwrote
    >>> store = LabelStore.open("cells_labels.zarr", shape=lazy_image.shape)       # checked against the image
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from segarch.prompts import label_levels

__all__ = ["LabelStore", "Edit", "check_labels", "NEXT_LABEL_ATTRIBUTE"]

#: The Zarr attribute holding the next free label id.
NEXT_LABEL_ATTRIBUTE = "segarch_next_label"
#: Default chunk side of a new store: 1024² (4 MiB of uint32) in 2D, 128³ (8 MiB) in 3D.
_CHUNK = {2: 1024, 3: 128}


@dataclass
class Edit:
    """One painted object: the coordinates it changed, their values before, and its id."""

    coords: tuple[np.ndarray, ...]
    before: np.ndarray
    label: int

    @property
    def box(self) -> tuple[slice, ...]:
        """The smallest box around the changed pixels (what a display must refresh)."""
        return tuple(slice(int(c.min()), int(c.max()) + 1) for c in self.coords)


def _is_zarr(array) -> bool:
    return type(array).__module__.startswith("zarr")


def _check_dtype(dtype, where: str) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui" or dtype == np.dtype(bool):
        raise ValueError(f"{where} must hold integer label ids (e.g. uint32), got dtype {dtype}.")
    return dtype


class LabelStore:
    """Instance labels in a chunked array (Zarr on disk, or NumPy) with object painting, undo and the next id.

    Args:
        array: a Zarr array (the next id is kept in its attributes) or a NumPy array (scanned once for it); or a
            list of them, level 0 first, each next level every 2nd pixel of the one before along Y and X (a
            multiscale store: see :mod:`~segarch.prompts.label_levels`).
        write: how changed pixels are written to level 0, ``write(coords, values)`` with one integer array per
            axis (default: straight into ``array``). A viewer passes its own (e.g. napari's
            ``Labels.data_setitem``) so that the display refreshes only that region.
        changed: called as ``changed(box)`` (one slice per axis of level 0) after each write, once every level
            holds it: a viewer of a multiscale store redraws that region.

    Raises:
        ValueError: a non-integer dtype, or levels that are not level 0 halved.
    """

    def __init__(self, array, *, write: Callable[[tuple, np.ndarray], Any] | None = None,
                 changed: Callable[[tuple], Any] | None = None) -> None:
        levels = list(array) if isinstance(array, (list, tuple)) else [array]
        _check_dtype(levels[0].dtype, "The labels store")
        label_levels.check_levels(levels)
        self.levels = levels
        self.array = levels[0]
        self.write = write or self._write
        self.changed = changed
        self.history: list[Edit] = []
        if _is_zarr(self.array) and NEXT_LABEL_ATTRIBUTE in self.array.attrs:
            self._next = int(self.array.attrs[NEXT_LABEL_ATTRIBUTE])
        else:
            self._next = self._scan_max() + 1
            self._save_next()

    # --- opening ------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, shape: Sequence[int], *, dtype="uint32",
               chunks: Sequence[int] | None = None, overwrite: bool = False, multiscale: bool = False,
               changed: Callable[[tuple], Any] | None = None) -> "LabelStore":
        """A new, empty Zarr labels store at ``path`` (nothing is written for empty chunks).

        ``multiscale=True``: an OME-Zarr labels group with level ``0`` at full resolution and levels ``1``, ``2``, …
        each every 2nd pixel of the one before along Y and X (until both fit in 256), kept up to date by every
        write (``store.levels``: the arrays, level 0 first). 2 to 4 axes (YX, ZYX, TZYX).

        Raises:
            ValueError: ``path`` exists (unless ``overwrite``), a bad ``shape`` or a non-integer ``dtype``.
        """
        import zarr

        shape = tuple(int(s) for s in shape)
        if len(shape) < 2 or min(shape) < 1:
            raise ValueError(f"`shape` must be 2 or more positive sizes, got {shape!r}.")
        dtype = _check_dtype(dtype, "`dtype`")
        if os.path.exists(path) and not overwrite:
            raise ValueError(f"`path` {str(path)!r} exists; open it with LabelStore.open, or pass overwrite=True.")
        if chunks is None:
            side = _CHUNK.get(len(shape), 256)
            chunks = tuple([1] * (len(shape) - 3) + [min(side, s) for s in shape[-3:]]) if len(shape) > 3 else \
                tuple(min(side, s) for s in shape)
        if multiscale:
            levels = label_levels.create_levels(path, shape, dtype, tuple(chunks), overwrite=overwrite)
        else:
            levels = [zarr.create_array(store=str(path), shape=shape, chunks=tuple(chunks), dtype=dtype,
                                        fill_value=0, overwrite=overwrite)]
        levels[0].attrs[NEXT_LABEL_ATTRIBUTE] = 1
        return cls(levels, changed=changed)

    @classmethod
    def open(cls, path: str | os.PathLike, *, shape: Sequence[int] | None = None, dtype=None,
             write: Callable | None = None, changed: Callable | None = None) -> "LabelStore":
        """An existing Zarr labels store, checked against the image it labels (nothing is written on a mismatch).

        Args:
            path: the store's folder (``.zarr``): a Zarr array, or a multiscale labels group (OME ``multiscales``).
            shape: the image's spatial shape the labels must have.
            dtype: the label dtype the store must have (default: any integer dtype).

        Raises:
            ValueError: no Zarr array or multiscale group at ``path``, another shape or dtype than asked, or
                levels that are not level 0 halved.
        """
        import zarr

        try:
            node = zarr.open(store=str(path), mode="r+")
        except Exception as err:  # zarr raises several kinds for "not an array here"
            raise ValueError(f"`path` {str(path)!r} is not a Zarr array ({type(err).__name__}: {err}).") from None
        levels = label_levels.open_levels(node, str(path))
        check_labels(levels[0], shape=shape, dtype=dtype, name=f"The labels store {str(path)!r}")
        return cls(levels, write=write, changed=changed)

    @property
    def multiscale(self) -> bool:
        """Whether the store has coarse levels (``levels[1:]``) kept with level 0."""
        return len(self.levels) > 1

    # --- state --------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def next_label(self) -> int:
        """The id the next painted object gets."""
        return self._next

    def _save_next(self) -> None:
        if _is_zarr(self.array):
            try:
                self.array.attrs[NEXT_LABEL_ATTRIBUTE] = int(self._next)
            except Exception:  # a read-only store: the id is still tracked in memory
                pass

    def _scan_max(self) -> int:
        # Once, for a store without the attribute: chunk-sized slabs along the first axis, never the whole.
        array = self.array
        if isinstance(array, np.ndarray):
            return int(array.max()) if array.size else 0
        step = int(getattr(array, "chunks", (64,))[0]) or 1
        return max([int(np.asarray(array[i:i + step]).max()) for i in range(0, array.shape[0], step)] + [0])

    def _write(self, coords: tuple, values: np.ndarray) -> None:
        if _is_zarr(self.array):
            self.array.vindex[coords] = values
        else:
            self.array[coords] = values

    # --- editing ------------------------------------------------------------------------------------
    def _apply(self, edit: Edit, values: np.ndarray, region: np.ndarray | None = None) -> None:
        # Level 0 at the edit's pixels, then the coarse levels inside its box (from ``region``, level 0's new content
        # over the box, when the caller has it), then whoever shows it.
        self.write(edit.coords, values)
        box = edit.box
        label_levels.update_levels(self.levels, box, region)
        if self.changed is not None:
            self.changed(box)

    def _box(self, mask: np.ndarray, offset: Sequence[int]) -> tuple:
        lead = len(self.shape) - mask.ndim
        if len(offset) != len(self.shape) or lead < 0:
            raise ValueError(f"`offset` must have one start per axis of the store {self.shape} and the mask at most "
                             f"as many axes, got offset {tuple(offset)} for a mask of shape {mask.shape}.")
        starts = [int(o) for o in offset]
        for axis, (o, n, size) in enumerate(zip(starts, (1,) * lead + mask.shape, self.shape)):
            if o < 0 or o + n > size:
                raise ValueError(f"The mask of shape {mask.shape} at offset {tuple(starts)} runs outside the store "
                                 f"{self.shape} (axis {axis}: {o}..{o + n}).")
        return tuple(starts[:lead]) + tuple(slice(o, o + n) for o, n in zip(starts[lead:], mask.shape))

    def paint(self, mask, offset: Sequence[int], *, overwrite: bool = False, label: int | None = None) -> int:
        """Paint the boolean ``mask`` whose first pixel sits at ``offset`` as one object; return its id.

        Only the box under the mask is read (the chunks under it), only the changed pixels are written.
        Existing labels are kept unless ``overwrite``; ``label`` paints into an existing id (e.g. one object
        continued on the next slice) instead of a new one. Returns 0 when nothing was painted (all the mask's
        pixels are already labelled and ``overwrite`` is off, or the mask is empty).
        """
        mask = np.asarray(mask, dtype=bool)
        index = self._box(mask, offset)
        region = np.asarray(self.array[index])
        where = mask if overwrite else mask & (region == 0)
        if label is None:
            label = self._next
        elif not (isinstance(label, (int, np.integer)) and 0 < int(label)):
            raise ValueError(f"`label` must be a positive integer id, got {label!r}.")
        where &= region != label
        if not where.any():
            return 0
        inside = np.nonzero(where)
        lead = len(self.shape) - mask.ndim
        n = len(inside[0])
        coords = tuple(np.full(n, v, np.int64) for v in index[:lead]) + tuple(
            c.astype(np.int64) + s.start for c, s in zip(inside, index[lead:]))
        edit = Edit(coords, region[where].copy(), int(label))
        after = None
        if self.multiscale:  # the box's new content, for the coarse levels (no second read of level 0)
            after = region.copy()
            after[where] = label
            after = after[(None,) * lead + tuple(slice(b.start - i.start, b.stop - i.start)
                                                 for b, i in zip(edit.box[lead:], index[lead:]))]
        self._apply(edit, np.full(n, label, dtype=region.dtype), after)
        self.history.append(edit)
        if int(label) >= self._next:
            self._next = int(label) + 1
            self._save_next()
        return int(label)

    def undo(self) -> Edit | None:
        """Undo the last paint: its pixels get their previous values back; the id is free again when it was the
        newest. Returns the undone :class:`Edit` (``None`` when there is nothing to undo)."""
        if not self.history:
            return None
        edit = self.history.pop()
        self._apply(edit, edit.before)
        if edit.label == self._next - 1 and not any(e.label == edit.label for e in self.history):
            self._next = edit.label
            self._save_next()
        return edit


def check_labels(array, *, shape: Sequence[int] | None = None, dtype=None, name: str = "The labels") -> None:
    """Raise a ValueError when ``array`` cannot hold labels of ``shape`` (and ``dtype``): it names both."""
    have = tuple(int(s) for s in array.shape)
    if shape is not None and have != tuple(int(s) for s in shape):
        raise ValueError(f"{name} has shape {have}, the image {tuple(int(s) for s in shape)}: labels must cover the "
                         "image's pixels one to one; nothing was written.")
    _check_dtype(array.dtype, name)
    if dtype is not None and np.dtype(array.dtype) != np.dtype(dtype):
        raise ValueError(f"{name} has dtype {np.dtype(array.dtype)}, expected {np.dtype(dtype)}; nothing was "
                         "written.")
