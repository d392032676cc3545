"""A model's pre-processing for training, with its percentiles frozen per image as ``predict`` freezes them.

``segarch.predict`` measures the percentile normalisation once on values from across the whole image
(a tile's own percentiles would give every tile its own contrast). Training must see the same
numbers: a region of pure background, normalised by its own percentiles, stretches noise to the full
[0, 1] range, which a prediction never shows the network. So each training image's percentiles are
measured once, on the whole image when it is small and on regions spread over it when it is large.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np

from segarch.arrays import compute_here
from segarch.preprocessing import Preprocessor, spread_indices
from segarch.training.data import Item, Source, check_finite

__all__ = ["frozen_preprocessing", "PerImagePreprocessing"]

#: Images holding up to this many values (over the up to 4 planes of a stack sampled) are read whole.
_WHOLE_IMAGE_VALUES = 1 << 22
#: Larger images: this many regions of ``region`` pixels, spread over the stack and the image.
_SAMPLE_REGIONS = 16


def _read(source: Source, index: tuple[int, ...], box: tuple[slice, ...]) -> np.ndarray:
    block = np.asarray(compute_here(source.image[index + (slice(None),) + box]), dtype=np.float32)
    where = f"region {tuple((b.start, b.stop) for b in box)}" + (f" of image {index}" if index else "")
    check_finite(block, source, where)
    return block.reshape(block.shape[0], -1)


def _sample(source: Source, region: Sequence[int]) -> np.ndarray:
    """Values ``(C, n)`` from across ``source``'s image: all of it when small, else spread regions."""
    stack = [tuple(int(i) for i in idx) for idx in itertools.product(*[range(n) for n in source.stack_shape])]
    planes = [stack[i] for i in spread_indices(len(stack), 4)]
    shape = source.spatial_shape
    channels = int(source.image.shape[source.n_stack])
    if channels * int(np.prod(shape)) * len(planes) <= _WHOLE_IMAGE_VALUES:
        whole = tuple(slice(0, n) for n in shape)
        return np.concatenate([_read(source, p, whole) for p in planes], axis=1)
    size = [min(int(r), n) for r, n in zip(region, shape)]
    # Regions start on chunk boundaries (Dask/Zarr): each one then reads as few chunks as it can.
    chunks = getattr(source.image, "chunksize", None)
    step = [int(c) for c in chunks[-len(shape):]] if chunks else [1] * len(shape)
    starts = [[int(v) // c * c for v in np.linspace(0, n - s, num=3).round()] for n, s, c in zip(shape, size, step)]
    boxes = [(p, tuple(slice(a, a + s) for a, s in zip(st, size)))
             for p in planes for st in itertools.product(*starts)]
    boxes = [boxes[i] for i in spread_indices(len(boxes), _SAMPLE_REGIONS)]
    return np.concatenate([_read(source, p, box) for p, box in boxes], axis=1)


def frozen_preprocessing(config: list[dict[str, Any]], source: Source, region: Sequence[int]) -> Preprocessor:
    """``config`` (a model's ``preprocessing``) with its percentile step measured on ``source``'s whole image.

    ``region``: the size per spatial axis of the regions read when the image is too large to read whole.
    """
    return Preprocessor.calibrate(config, _sample(source, region))


class PerImagePreprocessing:
    """Pre-processing of training regions: each region with its own image's frozen percentiles.

    Call it with the raw region ``(C, *spatial)`` and the :class:`Item` it was read from.
    """

    def __init__(self, config: list[dict[str, Any]], sources: Sequence[Source], region: Sequence[int]) -> None:
        self._by_source = {id(s): frozen_preprocessing(config, s, region) for s in sources}

    def __call__(self, image: np.ndarray, item: Item) -> np.ndarray:
        return self._by_source[id(item.source)](image)
