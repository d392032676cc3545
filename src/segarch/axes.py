"""Axes: one alphabet, one guesser and one rule for matching an image's axes to a model.

Axes are letters from ``TCZYX`` (time, channel, depth, rows, columns), each at most once, in the order
of the array's dimensions (``"YX"``, ``"ZYX"``, ``"CYX"``, ``"YXC"`` for RGB, ``"TCZYX"``). Every part of
segarch reads and guesses them here: the readers (:mod:`segarch.io`), ``segarch.predict``, training,
``segment_from_points`` and the napari widgets, so an array gets the same axes wherever it goes.

Examples::

    >>> guess_axes((512, 512, 3))                         # no model: how a file without axes is read
    'YXC'
    >>> guess_axes((40, 512, 512), spatial_dims=2, in_channels=1)   # a stack for a 2D grey model
    'ZYX'
    >>> resolve_axes((2, 40, 64, 64), "CZYX", spatial_dims=2, in_channels=2).loop
    'Z'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

__all__ = ["AXES", "SPATIAL", "check_axes", "guess_axes", "model_axes", "output_axes", "Layout", "resolve_axes"]

#: Every axis letter segarch knows, in OME-NGFF order (time, channel, space).
AXES = "TCZYX"
#: The spatial letters, outermost first.
SPATIAL = "ZYX"


def check_axes(axes: str, ndim: int, *, name: str = "axes") -> str:
    """Validate an axes string for an array of ``ndim`` dimensions; returns it upper-cased.

    Raises:
        ValueError: not a string, a letter outside ``TCZYX``, a letter twice, the wrong count, or no Y and X.
    """
    if not isinstance(axes, str):
        raise ValueError(f"`{name}` must be a string of letters from {AXES!r}, got {axes!r}.")
    upper = axes.upper()
    if len(upper) != ndim or len(set(upper)) != len(upper) or set(upper) - set(AXES) or not {"Y", "X"} <= set(upper):
        raise ValueError(
            f"`{name}` must name each of the {ndim} dimensions once with letters from {AXES!r} and include "
            f"'Y' and 'X', got {axes!r}.")
    return upper


def model_axes(spatial_dims: int) -> str:
    """The axes of one network input: ``"CYX"`` (2D) or ``"CZYX"`` (3D)."""
    return "C" + SPATIAL[-spatial_dims:]


def guess_axes(shape: Sequence[int], *, rgb: bool | None = None, spatial_dims: int | None = None,
               in_channels: int | None = None, stacks: bool = True) -> str:
    """Axes for an array whose axes nobody said.

    Without a model (``spatial_dims`` and ``in_channels`` not given), as the readers read a file that
    carries no axes: ``YX``, ``ZYX`` (``YXC`` for RGB(A): 3 or 4 values last, or ``rgb=True``), ``TZYX``,
    ``TCZYX``.

    For a model of ``spatial_dims`` (default 2) taking ``in_channels`` (default 1): its spatial axes last; a
    model of several channels needs a channel axis of that size, first (``CYX``, ``CZYX``) or last (``YXC``,
    ``ZYXC``); the leading axes of a single-channel model are stacks looped over (``ZYX`` for a 2D model,
    ``TZYX``). With ``stacks=False`` (one image for the model, as ``segment_from_points`` takes) an axis
    beyond the spatial ones is the channel axis: last when it has the model's channel count and the first
    has not, else first.

    Raises:
        ValueError: the shape does not say (too few or too many axes, or no axis of the model's channel
            count); the message asks for ``axes``.
    """
    shape = tuple(int(n) for n in shape)
    n = len(shape)
    if spatial_dims is None and in_channels is None:
        if n < 2 or n > 5:
            raise ValueError(f"Images must have 2 to 5 dimensions (axes from {AXES!r}), got shape {shape}.")
        if rgb is None:
            rgb = n == 3 and shape[-1] in (3, 4)
        if rgb and n >= 3:
            return {3: "", 4: "Z", 5: "TZ"}[n] + "YXC"
        return {2: "YX", 3: "ZYX", 4: "TZYX", 5: "TCZYX"}[n]
    dims = 2 if spatial_dims is None else int(spatial_dims)
    channels = 1 if in_channels is None else int(in_channels)
    spatial = SPATIAL[-dims:]
    if n == dims:
        return spatial
    if not stacks and n == dims + 1:
        return spatial + "C" if shape[-1] == channels and shape[0] != channels else "C" + spatial
    if stacks and dims < n <= 5:
        rest = "TZYX"[-(n - 1):]
        if channels > 1 and shape[0] == channels:
            return "C" + rest
        if channels > 1 and shape[-1] == channels:
            return rest + "C"  # colour samples last (RGB)
        if channels == 1 and n <= 4:
            return "TZYX"[-n:]  # stacks of 2D images (Z) or of volumes (T), looped over
    raise ValueError(
        f"`axes` cannot be inferred for an image of shape {shape} and a {dims}D model with {channels} input "
        f"channel(s); pass `axes`, e.g. {('C' + spatial)!r} or {('TC' + spatial)!r}.")


@dataclass(frozen=True)
class Layout:
    """How an image's axes map to a model's input.

    Attributes:
        axes: the image's axes, e.g. ``"TZYX"``.
        spatial: the axes the model consumes, e.g. ``"YX"`` (in image order).
        loop: the axes iterated over (T, and Z for a 2D model), in image order.
        channel: whether the image has a C axis.
        grey: the C axis holds RGB(A) that is converted to one grey channel for the model.
    """

    axes: str
    spatial: str
    loop: str
    channel: bool
    grey: bool = False

    def labels_axes(self) -> str:
        """Axes of a labels output: the image's, without C."""
        return self.axes.replace("C", "")

    def probabilities_axes(self) -> str:
        """Axes of a probabilities output: T, then C (the classes), then the other looped axes (Z of a 2D model)
        and the spatial axes: ``CYX``, ``CZYX``, ``TCZYX``, the order OME-NGFF requires (T, C, then space)."""
        time = "".join(a for a in self.loop if a == "T")
        return time + "C" + "".join(a for a in self.loop if a != "T") + self.spatial

    def output_axes(self, output: str) -> str:
        """The axes of ``segarch.predict``'s result: :meth:`labels_axes` or :meth:`probabilities_axes`."""
        return self.labels_axes() if output == "labels" else self.probabilities_axes()


def output_axes(axes: str, spatial_dims: int, output: str = "labels") -> str:
    """The axes of what ``segarch.predict`` returns (and stores) for an image of ``axes`` and a model of
    ``spatial_dims``: ``output="labels"``: the image's axes without C; ``"probabilities"``: T, the classes (C),
    then the other axes (``TZYX`` → ``TCZYX``; a 2D model over ``ZYX`` gives ``CZYX``).

    Examples::

        >>> output_axes("TCZYX", 2, "probabilities")
        'TCZYX'
        >>> output_axes("ZYXC", 2, "labels")
        'ZYX'
    """
    axes = check_axes(axes, len(axes))
    spatial = "".join(a for a in axes if a in SPATIAL[-spatial_dims:])
    loop = "".join(a for a in axes if a not in spatial and a != "C")
    return Layout(axes, spatial, loop, "C" in axes).output_axes(output)


def resolve_axes(shape: tuple[int, ...], axes: str | None, spatial_dims: int, in_channels: int, *,
                 grey: bool = False) -> Layout:
    """Validate ``axes`` for an image of ``shape`` (or guess them, :func:`guess_axes`) for a model of
    ``spatial_dims`` taking ``in_channels``.

    ``grey``: the image's C axis holds RGB or RGBA (3 or 4) for a 1-channel model, converted to grey.

    Raises ``ValueError`` naming the parameter, the value and what is allowed.
    """
    model_spatial = SPATIAL[-spatial_dims:]
    if axes is None:
        axes = guess_axes(shape, spatial_dims=spatial_dims, in_channels=3 if grey else in_channels)
    if not isinstance(axes, str):
        raise ValueError(f"`axes` must be a string such as 'YX', 'CZYX' or 'TCZYX', got {axes!r}.")
    axes = axes.upper()
    bad = sorted(set(axes) - set(AXES))
    if bad or len(set(axes)) != len(axes):
        raise ValueError(f"`axes`={axes!r} is not valid: use each of {', '.join(AXES)} at most once (e.g. 'CZYX').")
    if len(axes) != len(shape):
        raise ValueError(f"`axes`={axes!r} has {len(axes)} axes but the image has {len(shape)} "
                         f"(shape {tuple(shape)}).")
    missing = [a for a in model_spatial if a not in axes]
    if missing:
        raise ValueError(
            f"`axes`={axes!r} lacks {''.join(missing)}: a {spatial_dims}D model needs the spatial axes "
            f"{model_spatial!r}.")
    channel = "C" in axes
    channels = shape[axes.index("C")] if channel else 1
    if grey:
        if in_channels != 1 or channels not in (3, 4):
            raise ValueError(
                f"`grey`=True converts an RGB(A) image (a C axis of 3 or 4) for a 1-channel model; here the image "
                f"(axes {axes!r}, shape {tuple(shape)}) has {channels} channel(s) and the model takes {in_channels}.")
    elif channels != in_channels:
        where = f"its C axis has {channels}" if channel else "it has no C axis (1 channel)"
        raise ValueError(
            f"Channel mismatch: the model expects `in_channels`={in_channels} but the image (axes {axes!r}, shape "
            f"{tuple(shape)}) {where}. Pass `axes` with a C axis of size {in_channels} or use a model for "
            f"{channels} channel(s)."
        )
    spatial = "".join(a for a in axes if a in model_spatial)
    loop = "".join(a for a in axes if a not in model_spatial and a != "C")
    return Layout(axes, spatial, loop, channel, grey)
