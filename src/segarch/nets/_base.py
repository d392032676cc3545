"""What every zoo network shares: argument checks and the input-shape contract."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["SegmentationNet", "check_spatial_dims", "check_features", "check_choice", "check_positive_int",
           "check_positive_ints", "padded_shape"]


def check_spatial_dims(spatial_dims: int, allowed: Sequence[int], net: str) -> None:
    if spatial_dims not in allowed:
        raise ValueError(f"`spatial_dims` must be one of {tuple(allowed)} for {net}, got {spatial_dims!r}.")


def check_features(features: Sequence[int], length: int | None, net: str, name: str = "features") -> tuple[int, ...]:
    """Validate a per-level channel list; return it as a tuple."""
    try:
        values = tuple(int(f) for f in features)
        ok = all(v > 0 and v == f for v, f in zip(values, features))
    except (TypeError, ValueError):
        ok, values = False, ()
    if not ok or (length is not None and len(values) != length) or len(values) < 2:
        want = f"{length} positive integers" if length is not None else "at least 2 positive integers"
        raise ValueError(f"`{name}` must be {want} for {net}, got {features!r}.")
    return values


def check_choice(value, allowed: Sequence, name: str, net: str) -> None:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {tuple(allowed)} for {net}, got {value!r}.")


def check_positive_int(value, name: str, net: str) -> int:
    """Raise unless ``value`` is an ``int`` (not a ``bool``) of at least 1; return it."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer for {net}, got {value!r}.")
    return value



def check_positive_ints(values: Sequence[int], name: str) -> tuple[int, ...]:
    """Raise unless ``values`` is a non-empty sequence of integers ≥ 1 (rates, bins); return it as a tuple."""
    try:
        ints = tuple(int(v) for v in values)
        ok = len(ints) >= 1 and all(i >= 1 and i == v for i, v in zip(ints, values))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"`{name}` must be a non-empty sequence of positive integers, got {values!r}.")
    return ints


def padded_shape(shape: Sequence[int], divisor: int) -> tuple[int, ...]:
    """The smallest shape ≥ ``shape`` whose sizes are multiples of ``divisor``."""
    return tuple(-(-int(s) // divisor) * divisor for s in shape)


class SegmentationNet(nn.Module):
    """Base of the zoo's dense-prediction networks.

    Subclasses set ``spatial_dims`` and ``size_divisor`` and call :meth:`check_input_shape` first
    in ``forward``, so a wrong input fails with a message that states the divisor and a padded shape.
    """

    spatial_dims: int = 2
    size_divisor: int = 1

    def check_input_shape(self, x: torch.Tensor) -> None:
        if x.ndim != self.spatial_dims + 2:
            raise ValueError(
                f"{type(self).__name__} ({self.spatial_dims}D) expects input of shape (B, C, "
                f"{', '.join('ZYX'[-self.spatial_dims:])}), got shape {tuple(x.shape)}."
            )
        spatial = tuple(x.shape[2:])
        if any(s % self.size_divisor for s in spatial):
            raise ValueError(
                f"{type(self).__name__} needs spatial sizes that are multiples of {self.size_divisor}, "
                f"got {spatial}; pad the input to {padded_shape(spatial, self.size_divisor)} "
                "(segarch.predict pads automatically)."
            )
