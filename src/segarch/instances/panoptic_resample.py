"""Pixel sizes for panoptic prediction: the network's heads brought back to the image's grid.

``predict_panoptic`` compares pixel sizes and resamples the image for the network as ``predict_instances`` does
(:mod:`segarch.instances.resample`: :func:`~segarch.instances.resample.pixel_size_plan`, the image to the model's
pixel size, linear). The way back differs: the heads are not all probabilities.

* **Displacements** (Panoptic-DeepLab's ``offset``, DeeperLab's ``short_offset``, ``middle_offset`` and
  ``long_offset``: groups of one value per spatial axis, Z, Y, X) are lengths in the model's pixels: along axis
  ``a`` an offset becomes ``offset · model_px[a] / image_px[a]`` image pixels.
* **Lengths the decoders take in pixels** (Panoptic-DeepLab's ``nms_kernel``; DeeperLab's ``radius``,
  ``nms_radius``, ``max_distance``, ``nms_kernel``) are given as trained, in the model's pixels, and are scaled by
  the geometric mean of ``model_px / image_px`` over the axes: exact for an isotropic change, and for an
  anisotropic one it keeps the areas (volumes) the decoders divide by (DeeperLab's disk), as a scalar must.
* **Values** (semantic logits, centre heatmap, keypoint heatmaps) are interpolated linearly, as the instance path
  does with probabilities.
* **EfficientPS's fused channels** (each pixel's fused class one-hot, its objects as the 'boundary' decoder's
  classes) are taken nearest-neighbour: they are labels coded as channels, and averaging them would mix two
  objects' or two classes' codes into a value that is neither (a boundary half-erased between touching objects).

:class:`HeadsOnImageGrid` does it lazily, one window at a time (what :func:`~segarch.instances.decode_blocks`
and the classes pass read), so the way back needs no memory beyond a block, in memory or out of core.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import numpy as np

from segarch.arrays import compute_here

__all__ = ["OFFSET_HEADS", "PIXEL_OPTIONS", "HeadsOnImageGrid", "channel_factors", "scale_decoder_options",
           "heads_on_image_grid", "image_pixels_per_model_pixel"]

#: The heads holding displacements in pixels: one channel per spatial axis, repeated (Z, Y, X order).
OFFSET_HEADS = frozenset({"offset", "short_offset", "middle_offset", "long_offset"})
#: The decoder options that are lengths in pixels, per architecture: ``"odd"`` a window (odd int), else a length.
PIXEL_OPTIONS = {"panoptic_deeplab": {"nms_kernel": "odd"},
                 "deeperlab": {"radius": "length", "nms_radius": "length", "max_distance": "length",
                               "nms_kernel": "odd"}}


def image_pixels_per_model_pixel(model_px: Sequence[float], image_px: Sequence[float]) -> np.ndarray:
    """Per spatial axis, how many of the image's pixels one of the model's spans: ``model_px / image_px``."""
    return np.asarray(model_px, float) / np.asarray(image_px, float)


def channel_factors(heads: dict[str, tuple[int, int]], scale: np.ndarray) -> np.ndarray:
    """One multiplier per channel of the concatenated heads: ``scale[a]`` on an offset head's channel along axis
    ``a``, 1 elsewhere."""
    channels = max(hi for _, hi in heads.values())
    factors = np.ones(channels, np.float32)
    d = len(scale)
    for name, (lo, hi) in heads.items():
        if name in OFFSET_HEADS:
            factors[lo:hi] = np.tile(scale.astype(np.float32), (hi - lo) // d)
    return factors


def scale_decoder_options(arch: str, decoder, options: dict[str, Any], scale: np.ndarray) -> dict[str, Any]:
    """``options`` of ``decoder`` (a class) with its lengths in pixels (:data:`PIXEL_OPTIONS`, given as trained:
    the model's pixels; its defaults where not given) in the image's pixels."""
    mean = float(np.prod(scale) ** (1 / len(scale)))
    defaults = {k: p.default for k, p in inspect.signature(decoder).parameters.items()}
    scaled = dict(options)
    for name, kind in PIXEL_OPTIONS.get(arch, {}).items():
        value = options.get(name, defaults.get(name))
        if value is None:  # derived by the decoder from a scaled option (DeeperLab's nms_radius from radius)
            continue
        scaled[name] = max(1, 2 * int(round((value * mean - 1) / 2)) + 1) if kind == "odd" else float(value * mean)
    return scaled


class HeadsOnImageGrid:
    """The network's heads ``(*loops, C, *model grid)`` seen on the image's grid ``(*loops, C, *shape)``, read one
    window at a time (an array-like: ``shape``, ``dtype``, ``ndim``, ``[index]``; picklable for a cluster).

    Args:
        heads: the heads on the model's grid (NumPy, Zarr or Dask).
        loops: how many loop axes lead (T, or Z for a 2D model on a stack).
        shape: the image's spatial shape.
        factors: one multiplier per channel (:func:`channel_factors`), or ``None``.
        nearest: nearest-neighbour (labels coded as channels) instead of linear interpolation.
    """

    def __init__(self, heads, loops: int, shape: Sequence[int], factors: np.ndarray | None = None,
                 nearest: bool = False) -> None:
        self.heads, self.loops, self.nearest = heads, int(loops), bool(nearest)
        self.factors = None if factors is None else np.asarray(factors, np.float32)
        source = tuple(int(s) for s in heads.shape)
        self.model_shape = source[loops + 1:]
        self.shape = source[:loops + 1] + tuple(int(s) for s in shape)
        self.ndim, self.dtype = len(self.shape), np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def _axis(self, axis: int, start: int, stop: int):
        """Source pixels and weights of the image's pixels ``start:stop`` along spatial ``axis``: linear
        ``(low, high, weight of high)``, or nearest ``(index,)``; the pixel centres' mapping (``mode="edge"``)."""
        n_in, n_out = self.model_shape[axis], self.shape[self.loops + 1 + axis]
        centres = (np.arange(start, stop) + 0.5) * (n_in / n_out)
        if self.nearest:
            return (np.clip(np.floor(centres).astype(np.int64), 0, n_in - 1),)
        position = np.clip(centres - 0.5, 0, n_in - 1)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, (position - low).astype(np.float32)

    def __getitem__(self, index) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        if any(i is Ellipsis or i is None for i in index) or len(index) > self.ndim:
            raise IndexError(f"HeadsOnImageGrid takes integers and slices, one per axis at most; got {index!r}.")
        index = index + (slice(None),) * (self.ndim - len(index))
        lead, dropped = [], []
        for axis, i in enumerate(index[:self.loops + 1]):  # loops and channels: passed through (ints kept as axes)
            if isinstance(i, (int, np.integer)):
                i = int(i) + (self.shape[axis] if i < 0 else 0)
                lead.append(slice(i, i + 1))
                dropped.append(axis)
            else:
                lead.append(i)
        ranges = []
        for axis, i in enumerate(index[self.loops + 1:]):
            n = self.shape[self.loops + 1 + axis]
            if isinstance(i, (int, np.integer)):
                i = int(i) + (n if i < 0 else 0)
                start, stop, step = i, i + 1, 1
                dropped.append(self.loops + 1 + axis)
            else:
                start, stop, step = i.indices(n)
            if step != 1:
                raise IndexError(f"HeadsOnImageGrid reads contiguous windows (step 1), got {index!r}.")
            ranges.append(self._axis(axis, start, max(start, stop)))
        if any(r[0].size == 0 for r in ranges):  # an empty window
            lead_shape = [len(range(*s.indices(n))) for s, n in zip(lead, self.shape)]
            empty = np.zeros(lead_shape + [r[0].size for r in ranges], np.float32)
            return empty.squeeze(axis=tuple(dropped)) if dropped else empty
        window = tuple(slice(int(r[0].min()), int((r[1] if len(r) == 3 else r[0]).max()) + 1) for r in ranges)
        data = np.asarray(compute_here(self.heads[tuple(lead) + window]), np.float32)
        if self.factors is not None:
            factors = self.factors[lead[self.loops]]
            data = data * factors.reshape((-1,) + (1,) * len(ranges))
        for axis, (r, part) in enumerate(zip(ranges, window)):
            where = self.loops + 1 + axis
            if self.nearest:
                data = np.take(data, r[0] - part.start, axis=where)
            else:
                low, high, weight = r
                shape = [1] * data.ndim
                shape[where] = -1
                weight = weight.reshape(shape)
                data = (np.take(data, low - part.start, axis=where) * (1 - weight)
                        + np.take(data, high - part.start, axis=where) * weight)
        return data.squeeze(axis=tuple(dropped)) if dropped else data

    def __array__(self, dtype=None, copy=None):
        data = self[tuple(slice(None) for _ in self.shape)]
        return data if dtype is None else data.astype(dtype)


def heads_on_image_grid(raw, arch: str, heads: dict[str, tuple[int, int]], loops: int, image_shape: Sequence[int],
                        scale: np.ndarray) -> HeadsOnImageGrid:
    """The heads ``raw`` (``(*loops, C, *model grid)``) on the image's grid: offsets rescaled, values linear,
    EfficientPS's fused channels nearest (see the module's docstring)."""
    if arch == "efficientps":
        return HeadsOnImageGrid(raw, loops, image_shape, nearest=True)
    return HeadsOnImageGrid(raw, loops, image_shape, channel_factors(heads, scale))
