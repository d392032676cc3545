"""A clear error when batch norm meets a single value per channel in training.

Batch norm estimates each channel's mean and variance over the batch and the positions of its map; in
training PyTorch refuses to do that from one value (``"Expected more than 1 value per channel when
training"``). A zoo network meets it with a batch of one image when its coarsest batch-normalised map has
one position (an input as small as the network's stride there), and whatever the input size when it
normalises globally pooled features (OSNet's and STDC's classifiers). :class:`ExplainsBatchStatistics`
turns PyTorch's message into one that names the input, its shape and what is allowed.

Examples::

    >>> single_value_error("LEDNet", (1, 3, 64, 64), norm_stride=64, size_divisor=8).args[0][:60]
    'LEDNet cannot train on `x` of shape (1, 3, 64, 64): its batch'
"""

from __future__ import annotations

import math
from typing import Sequence

from torch import nn

__all__ = ["ExplainsBatchStatistics", "single_value_error", "POOLED"]

#: ``norm_stride`` of a network that batch-normalises globally pooled features: a batch of 1 never trains.
POOLED = "pooled"
_TORCH_MESSAGE = "more than 1 value per channel"


def single_value_error(net: str, shape: Sequence[int], norm_stride: int | str, size_divisor: int = 1) -> ValueError:
    """The ``ValueError`` for ``net`` trained on an input of ``shape`` ``(B, C, *spatial)`` whose batch norm at
    1/``norm_stride`` (or on pooled features, ``norm_stride=POOLED``) would see one value per channel."""
    shape = tuple(int(s) for s in shape)
    batch, spatial = shape[0], shape[2:]
    if norm_stride == POOLED:
        return ValueError(
            f"{net} cannot train on `x` of shape {shape}: a batch of {batch} image. Its batch norm normalises the "
            "globally pooled features over the batch, and batch norm needs more than 1 value per channel in "
            "training, so a batch must hold at least 2 images (any size); call .eval() to predict a single image.")
    cells = tuple(math.ceil(s / norm_stride) for s in spatial)
    # The smallest size along the first axis giving a second position at 1/norm_stride, kept a multiple of the
    # network's size divisor.
    step = max(int(size_divisor), 1)
    longer = (norm_stride // step + 1) * step
    example = (max(longer, spatial[0]),) + spatial[1:] if spatial else ()
    return ValueError(
        f"{net} cannot train on `x` of shape {shape}: its batch-normalised map at 1/{norm_stride} of the input has "
        f"shape {cells} for a batch of {batch}, a single value per channel, and batch norm needs more than 1 value "
        f"per channel in training. Allowed: a batch of at least 2, or an input longer than {norm_stride} along one "
        f"axis, e.g. {example}; call .eval() to predict.")


class ExplainsBatchStatistics(nn.Module):
    """Base for zoo networks: PyTorch's single-value batch-norm error becomes :func:`single_value_error`.

    Subclasses may set ``norm_stride``, the stride of their coarsest batch-normalised map (default: their
    ``size_divisor``), or :data:`POOLED` when they batch-normalise pooled feature vectors, and ``net_name``, the
    name the message gives (default: the class name).
    """

    norm_stride: int | str | None = None

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        except ValueError as err:
            x = args[0] if args else None
            if not (self.training and _TORCH_MESSAGE in str(err) and hasattr(x, "shape")):
                raise
            stride = self.norm_stride or getattr(self, "size_divisor", 1)
            name = getattr(self, "net_name", None) or type(self).__name__.lstrip("_")
            raise single_value_error(name, tuple(x.shape), stride,
                                     getattr(self, "size_divisor", 1)) from err
