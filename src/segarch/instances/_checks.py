"""Validation shared by the instance modules: label images and pixel sizes."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["check_labels", "check_spacing"]


def check_labels(labels, name: str = "labels") -> np.ndarray:
    """``labels`` as a non-negative integer array (2D or 3D), or a ValueError naming ``name``."""
    array = np.asarray(labels)
    if array.ndim not in (2, 3):
        raise ValueError(f"`{name}` must be a 2D (Y, X) or 3D (Z, Y, X) label image, got shape {array.shape}.")
    if array.dtype.kind == "b":
        array = array.astype(np.uint8)
    if array.dtype.kind not in "iu":
        if array.dtype.kind == "f" and np.isfinite(array).all() and (array == np.round(array)).all():
            array = array.astype(np.int64)
        else:
            raise ValueError(f"`{name}` must hold integer labels (0 background, 1..N objects), got dtype "
                             f"{array.dtype} with non-integer values.")
    if array.dtype.kind == "i" and array.size and array.min() < 0:
        raise ValueError(f"`{name}` must hold labels >= 0 (0 background), got a minimum of {int(array.min())}.")
    return array


def check_spacing(spacing: Sequence[float] | float | None, dims: int, name: str = "spacing") -> tuple[float, ...]:
    """A per-axis pixel size of ``dims`` positive finite values (``None``: all 1)."""
    if spacing is None:
        return (1.0,) * dims
    values = np.broadcast_to(np.asarray(spacing, dtype=float), (dims,)) if np.ndim(spacing) == 0 else \
        np.asarray(spacing, dtype=float)
    if values.shape != (dims,) or not np.isfinite(values).all() or (values <= 0).any():
        raise ValueError(f"`{name}` must be {dims} positive pixel sizes (one per spatial axis, "
                         f"{'Z, Y, X' if dims == 3 else 'Y, X'}), got {spacing!r}.")
    return tuple(float(v) for v in values)
