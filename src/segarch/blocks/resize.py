"""Resampling helpers: resize a feature map to a given spatial grid ((bi/tri)linear).

Networks that fuse branches at different strides resize to the exact target grid rather than by
a fixed factor, so branches computed with ceil-rounded strided convolutions still line up.
``resize`` and ``resize_to`` are the same function (both names are in use).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["interp_mode", "resize_to", "resize"]


def interp_mode(spatial_dims: int) -> str:
    """The linear interpolation mode of ``spatial_dims`` (``"bilinear"`` or ``"trilinear"``)."""
    return "bilinear" if spatial_dims == 2 else "trilinear"


def resize_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(Bi/tri)linear resampling of ``x`` (``align_corners=False``) to the spatial ``size``; ``x`` itself when it
    has it."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    return F.interpolate(x, size=size, mode=interp_mode(x.ndim - 2), align_corners=False)


resize = resize_to
