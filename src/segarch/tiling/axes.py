"""Matching an image's axes to a model: which axes are spatial, which are looped over, where C is."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AXES", "Layout", "resolve_axes"]

AXES = "TCZYX"


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
        """Axes of a probabilities output: loop axes, then C, then the spatial axes."""
        return self.loop + "C" + self.spatial


def resolve_axes(shape: tuple[int, ...], axes: str | None, spatial_dims: int, in_channels: int, *,
                 grey: bool = False) -> Layout:
    """Validate ``axes`` for an image of ``shape`` (or infer them) for a model of ``spatial_dims``.

    ``grey``: the image's C axis holds RGB or RGBA (3 or 4) for a 1-channel model, converted to grey.

    Raises ``ValueError`` naming the parameter, the value and what is allowed.
    """
    model_spatial = "ZYX"[-spatial_dims:]
    if axes is None:
        axes = _infer(shape, spatial_dims, 3 if grey else in_channels)
    if not isinstance(axes, str):
        raise ValueError(f"`axes` must be a string such as 'YX', 'CZYX' or 'TCZYX', got {axes!r}.")
    axes = axes.upper()
    bad = sorted(set(axes) - set(AXES))
    if bad or len(set(axes)) != len(axes):
        raise ValueError(f"`axes`={axes!r} is not valid: use each of {', '.join(AXES)} at most once (e.g. 'CZYX').")
    if len(axes) != len(shape):
        raise ValueError(f"`axes`={axes!r} has {len(axes)} axes but the image has {len(shape)} (shape {tuple(shape)}).")
    missing = [a for a in model_spatial if a not in axes]
    if missing:
        raise ValueError(
            f"`axes`={axes!r} lacks {''.join(missing)}: a {spatial_dims}D model needs the spatial axes {model_spatial!r}."
        )
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
            f"{tuple(shape)}) {where}. Pass `axes` with a C axis of size {in_channels} or use a model for {channels} channel(s)."
        )
    spatial = "".join(a for a in axes if a in model_spatial)
    loop = "".join(a for a in axes if a not in model_spatial and a != "C")
    return Layout(axes, spatial, loop, channel, grey)


def _infer(shape: tuple[int, ...], spatial_dims: int, in_channels: int) -> str:
    spatial = "ZYX"[-spatial_dims:]
    ndim = len(shape)
    if ndim == spatial_dims:
        return spatial
    if ndim == spatial_dims + 1:
        if in_channels > 1 and shape[0] == in_channels:
            return "C" + spatial
        if in_channels > 1 and shape[-1] == in_channels and spatial_dims == 2:
            return spatial + "C"  # RGB(A) images store channels last
        if in_channels == 1 and spatial_dims == 2:
            return "ZYX"  # a stack of 2D images, segmented slice by slice
        if in_channels == 1 and spatial_dims == 3:
            return "TZYX"
    raise ValueError(
        f"`axes` cannot be inferred for an image of shape {tuple(shape)} and a {spatial_dims}D model with "
        f"{in_channels} input channel(s); pass `axes`, e.g. {('C' + spatial)!r} or {('TC' + spatial)!r}."
    )
