"""Crops at the model's training voxel size: a stack whose voxels differ (thick slices: Z spacing 2-5x the Y/X
spacing) is resampled to it before the network, and the mask back (:func:`segarch.prompts.segment_from_points`
with ``pixel_size=``)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from segarch.prompts.recipe import PromptSettings, crop_box, resize

__all__ = ["resample", "voxel_scale", "scaled_crop_box"]


def voxel_scale(pixel_size, model_pixel_size: Sequence[float] | None, dims: int) -> np.ndarray | None:
    """How many model voxels one image voxel spans per axis (``pixel_size / model_pixel_size``), or ``None`` when
    the image's voxel size is unknown (``pixel_size`` None), the model records none, or they agree (within 1%).

    ``pixel_size``: one number (all axes) or one per spatial axis, positive."""
    if pixel_size is None or not model_pixel_size:
        return None
    values = np.atleast_1d(np.asarray(pixel_size, dtype=object))
    try:
        sizes = np.broadcast_to(values.astype(np.float64), (dims,)) if values.size in (1, dims) else None
    except (TypeError, ValueError):
        sizes = None
    if sizes is None or isinstance(pixel_size, (bool, str)) or not np.all(np.isfinite(sizes)) or np.any(sizes <= 0):
        raise ValueError(f"`pixel_size` must be one positive number or {dims} (one per spatial axis, "
                         f"{'ZYX'[-dims:]!r}), got {pixel_size!r}.")
    scale = sizes / np.asarray(model_pixel_size, np.float64)
    scale = scale / scale.min()  # only the shape of the voxels matters: each crop is resized to the input anyway
    return None if np.allclose(scale, 1.0, rtol=0.01) else scale


def resample(array: np.ndarray, shape: Sequence[int], *, nearest: bool = False) -> np.ndarray:
    """``array`` ``(*spatial)`` or ``(C, *spatial)`` (the last ``len(shape)`` axes) linearly resampled (nearest for
    masks) to ``shape``, pixel centres aligned; float32 (bool for ``nearest`` of a bool array)."""
    dims = len(shape)
    x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    lead = x.shape[:-dims]
    x = x.reshape((1, -1) + tuple(x.shape[-dims:]))
    out = resize(x, tuple(int(s) for s in shape), nearest=nearest).reshape(tuple(lead) + tuple(shape)).numpy()
    return out > 0.5 if nearest and np.asarray(array).dtype == bool else out


def scaled_crop_box(points: np.ndarray, spatial_shape: Sequence[int], settings: PromptSettings,
                    scale: np.ndarray | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """:func:`~segarch.prompts.recipe.crop_box` with its margin measured in the model's voxels (``scale`` from
    :func:`voxel_scale`; ``None``: the image's), as image pixel ``(start, stop)``."""
    if scale is None:
        return crop_box(points, spatial_shape, settings)
    start, stop = crop_box(np.asarray(points, np.float64) * scale, np.asarray(spatial_shape) * scale, settings)
    return (tuple(int(v) for v in np.floor(np.asarray(start) / scale)),
            tuple(int(v) for v in np.minimum(np.ceil(np.asarray(stop) / scale), spatial_shape)))
