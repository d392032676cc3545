"""The image every reader returns: pyramid levels as Dask arrays, named axes, physical scale.

Axes are letters from ``TCZYX`` (time, channel, depth, rows, columns), each at most once, in the
order of the array's dimensions (``"YX"``, ``"ZYX"``, ``"CYX"``, ``"YXC"`` for RGB, ``"TCZYX"``); the
alphabet and the guesser are :mod:`segarch.axes`'s (re-exported here).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from segarch.axes import AXES, SPATIAL, check_axes, guess_axes

__all__ = ["Image", "AXES", "SPATIAL", "check_axes", "guess_axes", "check_scale", "unit_name", "ome_unit", "stem",
           "level_factor"]


# NGFF units (UDUNITS-2 names) and the OME-XML symbols for the common ones.
_OME_TO_NGFF = {
    "Å": "angstrom", "nm": "nanometer", "µm": "micrometer", "um": "micrometer", "mm": "millimeter",
    "cm": "centimeter", "m": "meter", "km": "kilometer", "pm": "picometer",
    "s": "second", "ms": "millisecond", "µs": "microsecond", "ns": "nanosecond", "min": "minute", "h": "hour",
}
_NGFF_TO_OME = {v: k for k, v in _OME_TO_NGFF.items() if k != "um"}
_ALIASES = {"micron": "micrometer", "microns": "micrometer", "μm": "micrometer", "\\u00b5m": "micrometer"}


def unit_name(unit: Any) -> str | None:
    """An NGFF unit name (``"micrometer"``) for an OME symbol, a pint unit or a name; ``None`` if unknown/pixel."""
    if unit is None:
        return None
    text = str(unit).strip()
    if not text or text.lower() in ("pixel", "px", "none", "dimensionless"):
        return None
    text = _ALIASES.get(text, text)
    if text in _OME_TO_NGFF:
        return _OME_TO_NGFF[text]
    return text if text in _NGFF_TO_OME else None


def ome_unit(unit: str | None) -> str | None:
    """The OME-XML symbol (``"µm"``) for an NGFF unit name, or ``None``."""
    return _NGFF_TO_OME.get(unit) if unit else None


def check_scale(scale: Sequence[float] | None, axes: str, *, name: str = "scale") -> tuple[float, ...]:
    """Validate a per-axis scale (positive finite numbers, one per axis); ``None`` gives ones."""
    if scale is None:
        return (1.0,) * len(axes)
    values = tuple(float(s) for s in scale)
    if len(values) != len(axes) or not all(np.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"`{name}` must be {len(axes)} positive numbers (one per axis of {axes!r}), got {scale!r}.")
    return values


@dataclass
class Image:
    """A lazily opened image: level 0 and its down-sampled levels (Dask arrays), with its geometry.

    Attributes:
        levels: Dask arrays, full resolution first; a single level for a plain image.
        axes: one letter from ``TCZYX`` per dimension, e.g. ``"ZYX"``.
        scale: physical size of a level-0 pixel along each axis (1 where unknown).
        translate: physical position of the first pixel's centre along each axis.
        name: a display name (from the metadata, else the file name).
        units: NGFF unit name per axis letter where known, e.g. ``{"Y": "micrometer"}``.
        labels: whether the image holds labels (OME-Zarr ``image-label``, or our TIFF marker).
        metadata: the raw metadata the reader found (OME-Zarr attributes, OME-XML as a dict, ...).
        path: the file it came from.
        level_scales: each level's scale; by default level 0's scale times the shape ratio.
        axes_guessed: the axes were guessed from the shape (no metadata said them), e.g. a ``.npy`` file,
            a plain Zarr array or a stack of TIFF pages.
        geo: where a satellite or aerial raster lies on the map (a :class:`segarch.io.GeoReference`: CRS,
            transform, nodata, band names), or ``None`` for an image with no georeference.
    """

    levels: list
    axes: str
    scale: tuple[float, ...] = ()
    translate: tuple[float, ...] = ()
    name: str = "image"
    units: dict[str, str] = field(default_factory=dict)
    labels: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    level_scales: list[tuple[float, ...]] = field(default_factory=list)
    axes_guessed: bool = False
    geo: Any = None

    def __post_init__(self):
        if not self.levels:
            raise ValueError("`levels` must hold at least one array, got none.")
        self.axes = check_axes(self.axes, self.levels[0].ndim)
        self.scale = check_scale(self.scale or None, self.axes)
        self.translate = tuple(float(t) for t in self.translate) if self.translate else (0.0,) * len(self.axes)
        if not self.level_scales:
            shape0 = self.levels[0].shape
            self.level_scales = [
                tuple(s * level_factor(n0, n) for s, n0, n in zip(self.scale, shape0, level.shape))
                for level in self.levels]

    @property
    def data(self):
        """Level 0 (full resolution)."""
        return self.levels[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.levels[0].shape)

    @property
    def dtype(self) -> np.dtype:
        return self.levels[0].dtype

    @property
    def ndim(self) -> int:
        return self.levels[0].ndim

    @property
    def multiscale(self) -> bool:
        return len(self.levels) > 1

    @property
    def rgb(self) -> bool:
        """An RGB(A) colour image: channels last, 3 or 4 of them, 8-bit."""
        return self.axes.endswith("C") and self.shape[-1] in (3, 4) and self.dtype == np.uint8

    def __repr__(self) -> str:
        shapes = ", ".join(str(tuple(level.shape)) for level in self.levels)
        kind = "labels" if self.labels else "image"
        geo = f", geo=({self.geo.describe()})" if self.geo is not None else ""
        return (f"Image({self.name!r}, {kind}, axes={self.axes!r}, levels=[{shapes}], dtype={self.dtype}, "
                f"scale={self.scale}, path={self.path!r}{geo})")


def level_factor(n0: int, n: int) -> float:
    """How much coarser a level of size ``n`` is than level 0 (``n0``): a power of two when halving trimmed it."""
    if not n:
        return 1.0
    ratio = n0 / n
    power = 2.0 ** round(np.log2(ratio)) if ratio > 0 else 1.0
    # Halving drops a trailing odd pixel (401 → 200), so the true factor is the power of two.
    return power if n0 // power == n else ratio


def stem(path: str | os.PathLike) -> str:
    """A file's name without its image extensions (``a.ome.tif`` → ``a``)."""
    name = os.path.basename(os.fspath(path).rstrip("/\\"))
    for ext in (".ome.zarr", ".ome.tiff", ".ome.tif", ".zarr", ".tiff", ".tif", ".npy", ".svs", ".ndpi", ".scn"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name
