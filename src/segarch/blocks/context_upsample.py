"""Resampling a feature map or logits to a given spatial size, the same call in 2D and 3D.

Used by the context networks (DeepLab, PSPNet, DANet, ...) to bring head outputs and pooled
features back to a grid.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["upsample_to"]


def upsample_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """(Bi/tri)linear resampling of ``x`` (``(B, C, *spatial)``) to ``size``; ``x`` itself when already that size."""
    size = tuple(int(s) for s in size)
    if tuple(x.shape[2:]) == size:
        return x
    mode = "bilinear" if x.ndim == 4 else "trilinear"
    return F.interpolate(x, size=size, mode=mode, align_corners=False)
