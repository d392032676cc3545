"""``stuff_area`` over a tiled panoptic result: stuff regions smaller than it become void, block by block.

The per-image panoptic decoders (:func:`~segarch.instances.panoptic.fuse_panoptic` for Panoptic-DeepLab and
DeeperLab, :class:`~segarch.instances.efficientps.EfficientPSFusion`) void the stuff of a class whose pixels in the
image (those of no object) number fewer than ``stuff_area``: in the COCO/Cityscapes panoptic format a stuff
segment is all of a class's stuff in the image, and the papers' reference code counts it so. On a tiled image
that is ``regions="class"``: per-block pixel counts per class, summed over the image (per plane of the loop axes,
each an image to the decoders), then the small classes voided block by block.

On a large image (a slide, a scene) a class's total is rarely small; what a user means there is a connected
region: ``regions="connected"`` counts each connected region of one stuff class (face-connected, over the whole
image) separately. Each block labels its regions (:func:`scipy.ndimage.label`), the regions touching across a
block seam (the same class on both sides) are joined with a union-find (scipy's connected components), sizes
summed, and each block voids its small regions, labelled again. Only per-region sizes and the blocks' seam faces
(kept on disk with ``scratch``) are held: memory does not grow with the image's pixels.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = ["check_stuff_area", "void_small_stuff", "STUFF_REGIONS"]

#: What a stuff region is: all of a class's stuff in the image (the decoders'), or each connected region.
STUFF_REGIONS = ("class", "connected")


def check_stuff_area(stuff_area, regions: str = "class") -> tuple[int, str]:
    """``(stuff_area, regions)`` checked: an integer >= 0 (pixels; 0 keeps all) and one of :data:`STUFF_REGIONS`."""
    if not isinstance(stuff_area, (int, np.integer)) or isinstance(stuff_area, bool) or stuff_area < 0:
        raise ValueError(f"`stuff_area` must be an integer >= 0 (stuff regions of fewer pixels become void; 0 keeps "
                         f"all), got {stuff_area!r}.")
    if regions not in STUFF_REGIONS:
        raise ValueError(f"`stuff_regions` must be one of {list(STUFF_REGIONS)} (a class's stuff in the whole image, "
                         f"as the per-image decoders count it, or each connected region), got {regions!r}.")
    return int(stuff_area), regions


def void_small_stuff(classes, instances, *, stuff_area: int, void: int, loops: int, chunks: Sequence[int],
                     regions: str = "class", scratch: str | Path | None = None,
                     cancel: threading.Event | None = None,
                     progress: Callable[[int, int], None] | None = None) -> dict[str, int]:
    """Set ``void`` on the stuff (``instances == 0``) of ``classes`` in regions of fewer than ``stuff_area`` pixels,
    in place, block by block.

    Args:
        classes, instances: label images of one shape (NumPy or Zarr; ``classes`` writable), ``loops`` leading
            loop axes (each plane an image of its own).
        stuff_area: pixels; 0 does nothing.
        void: the class value written.
        chunks: the spatial block size.
        regions: ``"class"`` or ``"connected"`` (see the module's docstring).
        scratch: a directory for the seam faces of ``"connected"`` (created, then removed); ``None``: memory.
        cancel, progress: a ``threading.Event`` checked between blocks; ``progress(done, total)``.

    Returns:
        ``{"voided_regions": n, "voided_pixels": n}``.
    """
    stuff_area, regions = check_stuff_area(stuff_area, regions)
    if stuff_area == 0:
        return {"voided_regions": 0, "voided_pixels": 0}
    from segarch.instances.blocks import BlockGrid

    shape = tuple(int(n) for n in classes.shape)
    spatial = shape[loops:]
    block = tuple(min(max(1, int(c)), n) for c, n in zip(chunks, spatial))
    grid = BlockGrid(shape[:loops], spatial, block, halo=(0,) * len(spatial), band=(0,) * len(spatial))  # no halo
    run = _by_class if regions == "class" else _by_region
    return run(classes, instances, grid, stuff_area, void, scratch, _Steps(2 * len(grid.keys()), cancel, progress))


class _Steps:
    def __init__(self, total: int, cancel, progress) -> None:
        self.total, self.done, self.cancel, self.progress = total, 0, cancel, progress

    def check(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            from segarch.instances.blocks import DecodingCancelled

            raise DecodingCancelled(f"stuff_area cancelled after {self.done} of {self.total} block steps")

    def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total)


def _stuff(classes, instances, grid, key) -> tuple[tuple, np.ndarray, np.ndarray]:
    plane, b = key
    index = tuple(plane) + tuple(slice(lo, hi) for lo, hi in grid.core(b))
    return index, np.asarray(classes[index]).astype(np.int64), np.asarray(instances[index]) == 0


def _by_class(classes, instances, grid, stuff_area, void, _scratch, steps) -> dict[str, int]:
    """A class's stuff in a plane is one region: counts per block, summed; then the small ones voided."""
    totals: dict[tuple, np.ndarray] = {}
    for key in grid.keys():
        steps.check()
        _, values, stuff = _stuff(classes, instances, grid, key)
        counts = np.bincount(values[stuff].ravel(), minlength=1)
        plane = totals.setdefault(key[0], np.zeros(0, np.int64))
        if counts.size > plane.size:
            plane = np.pad(plane, (0, counts.size - plane.size))
        plane[:counts.size] += counts
        totals[key[0]] = plane
        steps.step()
    small = {plane: np.flatnonzero((counts > 0) & (counts < stuff_area)) for plane, counts in totals.items()}
    voided = 0
    for key in grid.keys():
        steps.check()
        if small[key[0]].size:
            index, values, stuff = _stuff(classes, instances, grid, key)
            hit = stuff & np.isin(values, small[key[0]])
            if hit.any():
                values[hit] = void
                classes[index] = values.astype(classes.dtype)
                voided += int(hit.sum())
        steps.step()
    return {"voided_regions": int(sum(s.size for s in small.values())), "voided_pixels": voided}


def _label_block(values: np.ndarray, stuff: np.ndarray, void: int) -> tuple[np.ndarray, np.ndarray]:
    """``(local labels, the class of each label 1..n)``: face-connected regions of one class among the stuff."""
    from scipy import ndimage

    labels = np.zeros(values.shape, np.int64)
    region_classes = [0]
    for value in np.unique(values[stuff]):
        if value == void:
            continue
        found, count = ndimage.label(stuff & (values == value))
        labels[found > 0] = found[found > 0] + len(region_classes) - 1
        region_classes.extend([int(value)] * count)
    return labels, np.asarray(region_classes, np.int64)


def _by_region(classes, instances, grid, stuff_area, void, scratch, steps) -> dict[str, int]:
    """Each connected region of one class: labelled per block, joined across seams, small ones voided."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    faces = _Faces(scratch)
    first: dict = {}
    sizes, region_class = [np.zeros(1, np.int64)], [np.zeros(1, np.int64)]
    offset = 1  # global region ids: 0 none, then each block's in turn
    try:
        for key in grid.keys():
            steps.check()
            _, values, stuff = _stuff(classes, instances, grid, key)
            labels, kinds = _label_block(values, stuff, void)
            first[key] = offset
            glob = np.where(labels > 0, labels + offset - 1, 0)
            sizes.append(np.bincount(labels.ravel(), minlength=kinds.size)[1:])
            region_class.append(kinds[1:])
            offset += kinds.size - 1
            for axis in range(len(grid.shape)):
                faces.put(key, axis, "-", glob.take(0, axis=axis))
                faces.put(key, axis, "+", glob.take(-1, axis=axis))
            steps.step()
        sizes_all, class_all = np.concatenate(sizes), np.concatenate(region_class)
        pairs = []
        for key in grid.keys():
            plane, b = key
            for axis in range(len(grid.shape)):
                if b[axis] + 1 >= grid.counts[axis]:
                    continue
                neighbour = (plane, b[:axis] + (b[axis] + 1,) + b[axis + 1:])
                mine, theirs = faces.get(key, axis, "+"), faces.get(neighbour, axis, "-")
                both = (mine > 0) & (theirs > 0)
                both &= class_all[mine] == class_all[theirs]
                if both.any():
                    pairs.append(np.unique(np.stack([mine[both], theirs[both]], 1), axis=0))
        n = sizes_all.size
        pairs = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
        graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
        _, component = connected_components(graph, directed=False)
        total = np.bincount(component, weights=sizes_all).astype(np.int64)
        small = total[component] < stuff_area
        small[0] = False
        voided = 0
        for key in grid.keys():  # again: each block labelled as before (deterministic), its small regions voided
            steps.check()
            index, values, stuff = _stuff(classes, instances, grid, key)
            labels, _ = _label_block(values, stuff, void)
            hit = (labels > 0) & small[np.where(labels > 0, labels + first[key] - 1, 0)]
            if hit.any():
                values[hit] = void
                classes[index] = values.astype(classes.dtype)
                voided += int(hit.sum())
            steps.step()
        regions = int(np.unique(component[1:][small[1:]]).size)
    finally:
        faces.close()
    return {"voided_regions": regions, "voided_pixels": voided}


class _Faces:
    """Each block's first and last plane of region ids per axis: in memory, or ``.npy`` files in ``scratch``."""

    def __init__(self, scratch: str | Path | None) -> None:
        self.memory: dict = {}
        self.path = None if scratch is None else Path(scratch)
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path.mkdir(parents=True)

    def _file(self, key, axis: int, side: str) -> Path:
        plane, b = key
        name = "_".join(map(str, (*plane, "b", *b, axis, "plus" if side == "+" else "minus")))
        return self.path / f"{name}.npy"

    def put(self, key, axis: int, side: str, face: np.ndarray) -> None:
        if self.path is None:
            self.memory[key, axis, side] = face
        else:
            np.save(self._file(key, axis, side), face)

    def get(self, key, axis: int, side: str) -> np.ndarray:
        if self.path is None:
            return self.memory[key, axis, side]
        return np.load(self._file(key, axis, side), allow_pickle=False)

    def close(self) -> None:
        self.memory.clear()
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
