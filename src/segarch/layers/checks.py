"""Argument checks shared by the zoo's blocks, backbones and networks, and the padded-shape helper.

Each check raises a ``ValueError`` naming the argument, the value and what is allowed (and the
network, ``net``, whose argument it is), and returns the value in its checked form.

Examples::

    >>> check_features((16, 32, 64), None, "U-Net")
    (16, 32, 64)
    >>> padded_shape((250, 100), 16)
    (256, 112)
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["check_spatial_dims", "check_features", "check_choice", "check_positive_int", "check_positive_ints",
           "check_rate", "check_bool", "padded_shape"]


def check_spatial_dims(spatial_dims: int, allowed: Sequence[int], net: str) -> None:
    """Raise unless ``spatial_dims`` is one of ``allowed``."""
    if spatial_dims not in allowed:
        raise ValueError(f"`spatial_dims` must be one of {tuple(allowed)} for {net}, got {spatial_dims!r}.")


def check_features(features: Sequence[int], length: int | None, net: str, name: str = "features") -> tuple[int, ...]:
    """Validate a per-level channel list (``length`` entries, or at least 2 when ``None``); return it as a tuple."""
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
    """Raise unless ``value`` is one of ``allowed``."""
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


def check_rate(value, name: str, net: str) -> float:
    """Raise unless ``value`` is a number in [0, 1) (a dropout rate); return it as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"`{name}` must be a number in [0, 1) for {net}, got {value!r}.")
    return float(value)


def check_bool(value, name: str, net: str) -> bool:
    """Raise unless ``value`` is ``True`` or ``False``; return it."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False for {net}, got {value!r}.")
    return value


def padded_shape(shape: Sequence[int], divisor: int) -> tuple[int, ...]:
    """The smallest shape ≥ ``shape`` whose sizes are multiples of ``divisor``."""
    return tuple(-(-int(s) // divisor) * divisor for s in shape)
