"""Slice-to-slice propagation: an object drawn on one slice of a stack carried to the slices above and below.

For stacks a 3D model serves poorly (anisotropic voxels, few thick slices): the mask on slice z gives its
extreme points, which prompt the same 2D extreme-point model on slice z ± 1 (the crop is their box relaxed by
the model's margin); that slice's mask prompts the next, until the object ends. Each slice is segmented again
from its own mask's extreme points (``refine``); with several ``scales`` the previous points are also tried moved
towards and away from their centre, and the mask along the strongest image edge is kept. It ends where the
new mask is empty, shrinks below ``min_area`` of the previous slice's, overlaps it by less than ``min_overlap``
(the prompt landed on another object), or runs along no edge of the image (``min_edge``: a blob outlined on
background, or ``relative_edge``: a much weaker edge than on the first slice; :mod:`segarch.prompts.edges`).

Examples::

    >>> model = segarch.pretrained.load("dextr_light.objects2d")
    >>> obj = propagate(model, stack, 12, points=[[40, 12], [41, 80], [10, 45], [70, 50]])   # clicks on slice 12
    >>> obj.slices              # {z: (crop_mask, (y0, x0))}, slices 7..18
    >>> obj.stopped             # {"down": "no edge on slice 6 ...", "up": "empty on slice 19"}
    >>> volume = obj.volume(stack.shape)   # or obj.paint(label_store) for labels larger than memory
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from segarch.prompts.edges import MIN_EDGE, edge_around
from segarch.prompts.points import extreme_points
from segarch.prompts.segment import resolve_prompt_model, segment_from_points

__all__ = ["propagate", "propagation_steps", "PropagatedObject", "Step"]


@dataclass
class Step:
    """One step of :func:`propagation_steps`: ``kind`` ``"slice"`` (the object's ``mask`` crop on slice ``z``,
    starting at ``start``) or ``"stopped"`` (direction ``way`` ends: ``reason``); ``done`` of at most ``total``
    slices are segmented."""

    kind: str
    way: str
    z: int
    mask: np.ndarray | None = None
    start: tuple[int, int] | None = None
    done: int = 0
    total: int = 0
    reason: str = ""


@dataclass
class PropagatedObject:
    """One object over the slices of a stack: per slice ``z`` its mask crop and the crop's ``(y, x)`` start."""

    start: int
    slices: dict[int, tuple[np.ndarray, tuple[int, int]]] = field(default_factory=dict)
    stopped: dict[str, str] = field(default_factory=dict)

    @property
    def extent(self) -> tuple[int, int]:
        """First and last slice (inclusive)."""
        return min(self.slices), max(self.slices)

    def volume(self, shape: Sequence[int]) -> np.ndarray:
        """The object as a boolean ``(Z, Y, X)`` volume of ``shape``."""
        out = np.zeros(tuple(int(s) for s in shape), bool)
        for z, (crop, (y, x)) in self.slices.items():
            out[z, y:y + crop.shape[0], x:x + crop.shape[1]] |= crop
        return out

    def paint(self, store, *, overwrite: bool = False) -> int:
        """Paint every slice into a :class:`~segarch.prompts.label_store.LabelStore` under one new id; return it
        (0 when nothing was painted). Each slice is one edit of the store's history."""
        label = 0
        for z in sorted(self.slices, key=lambda k: (k != self.start, abs(k - self.start))):
            crop, (y, x) = self.slices[z]
            painted = store.paint(crop, (z, y, x), overwrite=overwrite, label=label or None)
            label = label or painted
        return label


def _stack_plane(stack, axes: str, z: int):
    """A lazy view of slice ``z`` (so that a Zarr stack is read only under the crop, never a whole plane)."""
    return _Plane(stack, axes.index("Z"), z)


class _Plane:
    """``stack`` with its Z axis fixed at ``z``: shape and slicing only; reads go to the stack."""

    def __init__(self, stack, axis: int, z: int) -> None:
        self.stack, self.axis, self.z = stack, axis, int(z)
        self.shape = tuple(int(s) for i, s in enumerate(stack.shape) if i != axis)
        self.ndim = len(self.shape)
        self.dtype = stack.dtype

    def __getitem__(self, index):
        index = tuple(index) if isinstance(index, tuple) else (index,)
        index = index + (slice(None),) * (self.ndim - len(index))
        return self.stack[index[:self.axis] + (self.z,) + index[self.axis:]]


def _overlap(a: np.ndarray, a0: Sequence[int], b: np.ndarray, b0: Sequence[int]) -> float:
    """IoU of two crop masks placed at their starts."""
    lo = np.minimum(a0, b0)
    hi = np.maximum(np.add(a0, a.shape), np.add(b0, b.shape))
    canvas = np.zeros((2,) + tuple(hi - lo), bool)
    canvas[(0,) + tuple(slice(s - l0, s - l0 + n) for s, l0, n in zip(a0, lo, a.shape))] = a
    canvas[(1,) + tuple(slice(s - l0, s - l0 + n) for s, l0, n in zip(b0, lo, b.shape))] = b
    union = (canvas[0] | canvas[1]).sum()
    return float((canvas[0] & canvas[1]).sum() / union) if union else 0.0


def _refined(model, plane, prompt, axes: str, refine: int):
    """The mask from ``prompt``, segmented again ``refine`` times from its own extreme points: the object moves
    and changes from slice to slice, so the previous slice's points only find it; the points of what was found
    fit this slice's object."""
    new, start = segment_from_points(model, plane, prompt, axes=axes, return_crop=True)
    for _ in range(refine):
        if not new.any() or np.all(np.ptp(np.argwhere(new), axis=0) < 1):
            break
        new, start = segment_from_points(model, plane, extreme_points(new) + np.asarray(start), axes=axes,
                                         return_crop=True)
    return new, start


def _best_mask(model, plane, prompt, axes: str, refine: int, scales: Sequence[float], grey: bool):
    """The previous slice's points, also moved towards and away from their centre by each of ``scales`` (the
    object shrinks or grows between slices): the candidate whose outline runs along the strongest image edge."""
    if not grey:
        scales = (1.0,)  # the edge test reads one channel: no choice to make on a colour stack
    best, best_edge = None, -1.0
    centre = prompt.mean(axis=0)
    high = np.asarray([plane.shape[axes.index(a)] for a in "YX"]) - 1
    for scale in scales:
        moved = np.clip(centre + (prompt - centre) * scale, 0, high)
        if scale != 1 and np.all(np.ptp(moved, axis=0) < 1):
            continue  # a tiny object: its points shrunk onto one pixel
        new, start = _refined(model, plane, moved, axes, refine)
        if len(scales) == 1:
            return new, start
        edge = edge_around(plane, new, start) if new.any() else 0.0
        if edge > best_edge:
            best, best_edge = (new, start), edge
    return best if best is not None else _refined(model, plane, prompt, axes, refine)


def _check_fraction(name: str, value, low: float = 0.0, high: float = 1.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ValueError(f"`{name}` must be a number in [{low:g}, {high:g}], got {value!r}.")
    return float(value)


def propagate(model, stack, z: int, *, progress: Callable[[int, int], Any] | None = None,
              should_stop: Callable[[], bool] | None = None, **options) -> PropagatedObject:
    """Carry one object from slice ``z`` of a stack to the slices above and below with a 2D extreme-point model.

    Args:
        model, stack, z, options: as :func:`propagation_steps` (``points=`` or ``mask=``, ``axes``, ``min_area``,
            ``min_overlap``, ``min_edge``, ``relative_edge``, ``max_slices``, ``directions``, ``refine``, ``scales``).
        progress: called with ``(slices done, slices at most)`` after each slice.
        should_stop: called after each slice; ``True`` stops (the slices so far are kept).

    Returns:
        A :class:`PropagatedObject`: the mask crop of each slice the object was found on, and why each
        direction stopped.

    Raises:
        ValueError: as :func:`propagation_steps`.
    """
    result = PropagatedObject(int(z))
    steps = propagation_steps(model, stack, z, **options)
    total = 0
    for step in steps:
        total = step.total
        if step.kind == "slice":
            result.slices[step.z] = (step.mask, step.start)
        else:
            result.stopped[step.way] = step.reason
        if progress is not None and step.way != "start":
            progress(step.done, step.total)
        if should_stop is not None and should_stop():
            steps.close()
            for way in ("up", "down"):
                if options.get("directions", "both") in ("both", way):
                    result.stopped.setdefault(way, "stopped by the user")
            break
    if progress is not None:
        progress(total, total)
    return result


def propagation_steps(model, stack, z: int, *, points=None, mask=None, offset: Sequence[int] = (0, 0),
                      axes: str | None = None, min_area: float = 0.2, min_overlap: float = 0.2,
                      min_edge: float = MIN_EDGE, max_slices: int | None = None, directions: str = "both",
                      refine: int = 1, scales: Sequence[float] = (1.0,),
                      relative_edge: float = 0.5) -> Iterator[Step]:
    """:func:`propagate` one slice at a time: a generator of :class:`Step` (a viewer paints each slice as it
    comes and stops by closing the generator).

    Args:
        model: a 2D extreme-point model (a :class:`segarch.Model` or a reference, as
            :func:`segment_from_points` takes).
        stack: ``(Z, Y, X)`` (or with a channel axis, named in ``axes``): NumPy, Dask, Zarr...; only the crops
            under the object are read.
        z: the slice the object is given on.
        points: its extreme points on slice ``z``, ``(N, 2)`` ``(y, x)``; or
        mask: its mask on slice ``z``: the whole slice, or a crop whose first pixel is at ``offset``.
        axes: the stack's axes, e.g. ``"ZYX"`` (default), ``"ZCYX"``, ``"ZYXC"``.
        min_area: the object ends where its area falls below this fraction of the previous slice's.
        min_overlap: ... or where its IoU with the previous slice's mask falls below this.
        min_edge: ... or where the image's edge ratio along its outline falls below this (0 turns it off),
        relative_edge: ... or below this fraction of the edge ratio on slice ``z`` (an object's ends fade in thick
            slices; 0.5 lifted the mean IoU at z spacing 5 from 0.48 to 0.56 in benchmarks/propagation.py).
        max_slices: at most this many slices each way (default: to the stack's ends).
        directions: ``"both"``, ``"up"`` (increasing z) or ``"down"``.
        refine: times each slice is segmented again from its own mask's extreme points (0: only from the
            previous slice's).
        scales: the previous slice's points are tried moved towards (< 1) or away from (> 1) their centre by these
            factors; the mask along the strongest image edge is kept (a grey stack only). E.g.
            ``(0.85, 1, 1.15)``: better slices inside the object (per-slice IoU 0.67 → 0.74 at z spacing 3) but
            it stops later at the object's ends (overall IoU 0.616 → 0.598 in benchmarks/propagation.py without
            ``relative_edge``), 3× the time; the default is the points as they are.

    Yields:
        :class:`Step`: first the object on slice ``z`` (``way="start"``), then each slice it is found on, and one
        ``"stopped"`` step per direction with the reason.

    Raises:
        ValueError: a 2D image (propagation needs a stack), a 3D model, ``z`` outside the stack, neither or both
            of ``points``/``mask``, an empty mask, or a bad option.
    """
    model = resolve_prompt_model(model)
    shape = tuple(int(s) for s in stack.shape)
    ax = ("ZYX" if len(shape) == 3 else "") if axes is None else str(axes).upper()
    if len(shape) < 3 or len(ax) != len(shape) or "Z" not in ax or sorted(ax.replace("C", "")) != sorted("ZYX"):
        raise ValueError(f"Propagation needs a stack: `stack` of shape {shape} with axes {axes!r}; allowed: 3 axes "
                         "(Z, Y, X), or 4 with a channel axis named in `axes` (e.g. 'ZCYX'). For a 2D image use "
                         "segment_from_points.")
    if model.spatial_dims != 2:
        raise ValueError(f"Propagation carries a 2D mask from slice to slice: `model` must be a 2D extreme-point "
                         f"model, got a {model.spatial_dims}D one (use segment_from_points for 3D).")
    depth = shape[ax.index("Z")]
    if isinstance(z, bool) or not isinstance(z, (int, np.integer)) or not 0 <= z < depth:
        raise ValueError(f"`z` must be a slice index in [0, {depth - 1}], got {z!r}.")
    if (points is None) == (mask is None):
        raise ValueError("Give the object on slice `z` as either `points` (its extreme points) or `mask`, not "
                         f"{'both' if points is not None else 'neither'}.")
    min_area = _check_fraction("min_area", min_area)
    min_overlap = _check_fraction("min_overlap", min_overlap)
    min_edge = _check_fraction("min_edge", min_edge, 0.0, 10.0)
    relative_edge = _check_fraction("relative_edge", relative_edge)
    if isinstance(refine, bool) or not isinstance(refine, (int, np.integer)) or not 0 <= refine <= 5:
        raise ValueError(f"`refine` must be an integer in [0, 5], got {refine!r}.")
    try:
        scales = tuple(float(v) for v in scales)
    except (TypeError, ValueError):
        scales = ()
    if not scales or not all(0.3 <= v <= 3 for v in scales):
        raise ValueError(f"`scales` must be one or more numbers in [0.3, 3] (1: the previous slice's points as they "
                         f"are), got {scales!r}.")
    if directions not in ("both", "up", "down"):
        raise ValueError(f"`directions` must be 'both', 'up' or 'down', got {directions!r}.")
    if max_slices is not None and (isinstance(max_slices, bool) or not isinstance(max_slices, (int, np.integer))
                                   or max_slices < 0):
        raise ValueError(f"`max_slices` must be a non-negative integer or None, got {max_slices!r}.")
    plane_axes = ax.replace("Z", "")
    grey = "C" not in ax  # the edge test reads one channel: a grey stack only
    if points is not None:
        crop, start = segment_from_points(model, _stack_plane(stack, ax, z), points, axes=plane_axes,
                                          return_crop=True)
        if not crop.any():
            raise ValueError(f"No object found at the points on slice {z}; nothing to propagate.")
    else:
        crop, start = np.asarray(mask, bool), tuple(int(o) for o in offset)
        if not crop.any():
            raise ValueError(f"`mask` is empty: there is no object on slice {z} to propagate.")
    ways = {"up": 1, "down": -1}
    chosen = [w for w in ways if directions in ("both", w)]
    limits = {w: (depth - 1 - z if ways[w] > 0 else z) for w in chosen}
    if max_slices is not None:
        limits = {w: min(n, int(max_slices)) for w, n in limits.items()}
    total, done = sum(limits.values()), 0
    first_edge = None
    yield Step("slice", "start", int(z), crop, (int(start[0]), int(start[1])), 0, total)
    for way in chosen:
        previous, previous_start = crop, start
        for step in range(1, limits[way] + 1):
            k = int(z) + ways[way] * step
            prompt = extreme_points(previous) + np.asarray(previous_start)
            if np.all(np.ptp(prompt, axis=0) < 1):  # a one-pixel object cannot prompt the next slice
                yield Step("stopped", way, k, done=done, total=total,
                           reason=f"the object is a single pixel on slice {k - ways[way]}")
                break
            plane = _stack_plane(stack, ax, k)
            new, new_start = _best_mask(model, plane, prompt, plane_axes, refine, scales, grey)
            done += 1
            area, before = int(new.sum()), int(previous.sum())
            if area == 0:
                yield Step("stopped", way, k, done=done, total=total, reason=f"no object on slice {k}")
                break
            if area < min_area * before:
                yield Step("stopped", way, k, done=done, total=total,
                           reason=f"the object shrinks to {area / before:.0%} of its area on slice {k}")
                break
            overlap = _overlap(previous, previous_start, new, new_start)
            if overlap < min_overlap:
                yield Step("stopped", way, k, done=done, total=total,
                           reason=f"the mask on slice {k} overlaps the previous one by IoU {overlap:.2f}")
                break
            if (min_edge or relative_edge) and grey:
                edge = edge_around(plane, new, new_start)
                if first_edge is None:
                    first_edge = edge_around(_stack_plane(stack, ax, z), crop, start)
                floor = max(min_edge, relative_edge * first_edge)
                if edge < floor:
                    yield Step("stopped", way, k, done=done, total=total,
                               reason=f"no object edge on slice {k} (edge ratio {edge:.2f} < {floor:.2f})")
                    break
            yield Step("slice", way, k, new, (int(new_start[0]), int(new_start[1])), done, total)
            previous, previous_start = new, new_start
        else:
            yield Step("stopped", way, int(z) + ways[way] * limits[way], done=done, total=total,
                       reason="reached the end of the stack" if limits[way] == (depth - 1 - z if ways[way] > 0 else z)
                       else f"reached max_slices={max_slices}")
