"""Where a raster lies on the Earth: its CRS, affine transform, nodata and bands, as plain values.

:class:`GeoReference` is what :func:`segarch.io.read_raster` finds in a GeoTIFF and what
:func:`segarch.io.write_geotiff` writes back. It holds no rasterio object (the CRS is WKT plus an
``"EPSG:32633"``-style code, the transform six numbers), so it pickles to Dask workers, compares
with ``==`` and needs no GDAL to be imported.

A Zarr array or group carries the same georeference in its attributes, after the GeoZarr
conventions ``proj:`` and ``spatial:`` (zarr-conventions/geo-proj and /spatial, v1)::

    "proj:code": "EPSG:32633",                  # when the CRS has an authority code
    "proj:wkt2": "PROJCRS[...]",                # always, when there is a CRS
    "spatial:dimensions": ["Y", "X"],           # the array's row and column axes
    "spatial:transform": [a, b, c, d, e, f],    # GDAL's order: x = a*col + b*row + c, y = d*col + e*row + f
    "spatial:shape": [rows, columns],
    "spatial:registration": "pixel",            # the transform maps the pixel's corner (area), as GDAL does
    "segarch:nodata": 0,                        # the value that marks no data (absent: none)
    "segarch:bands": ["red", "green", "blue", "nir"],
    "zarr_conventions": [{"name": "proj", ...}, {"name": "spatial", ...}]

:func:`geo_attrs` writes that dictionary and :func:`geo_from_attrs` reads it back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["GeoReference", "geo_attrs", "geo_from_attrs", "check_nodata", "crs_wkt", "GEO_CONVENTIONS"]

#: The ``zarr_conventions`` entries written next to the ``proj:``/``spatial:`` attributes.
GEO_CONVENTIONS = (
    {"name": "proj", "uuid": "f17cb550-5864-4468-aeb7-f3180cfb622f",
     "spec_url": "https://github.com/zarr-conventions/geo-proj/blob/v1/README.md",
     "description": "Coordinate reference system information for geospatial data"},
    {"name": "spatial", "uuid": "689b58e2-cf7b-45e0-9fff-9cfc0883d6b4",
     "spec_url": "https://github.com/zarr-conventions/spatial/blob/v1/README.md",
     "description": "Spatial coordinate information"},
)


@dataclass(frozen=True)
class GeoReference:
    """The georeference of a raster (level 0): CRS, affine transform, size, nodata and band names.

    Attributes:
        crs: the CRS as WKT, or ``None`` for a raster with no CRS (its transform may still place it).
        crs_code: ``"EPSG:32633"``-style authority code where the CRS has one.
        transform: ``(a, b, c, d, e, f)`` as GDAL and rasterio order it: the map position of a pixel
            corner ``(col, row)`` is ``x = a*col + b*row + c``, ``y = d*col + e*row + f``.
        shape: ``(rows, columns)`` of the raster the transform belongs to.
        nodata: the pixel value that means "no data", or ``None``.
        band_names: one name per band (the file's band descriptions, else ``"band 1"`` ...).
        units: the CRS's linear unit (``"metre"``, ``"degree"``...), or ``None`` when unknown.
    """

    crs: str | None
    transform: tuple[float, float, float, float, float, float]
    shape: tuple[int, int]
    crs_code: str | None = None
    nodata: float | int | None = None
    band_names: tuple[str, ...] = ()
    units: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self):
        transform = tuple(float(v) for v in self.transform)
        if len(transform) != 6 or not all(math.isfinite(v) for v in transform):
            raise ValueError(f"`transform` must be six finite numbers (a, b, c, d, e, f), got {self.transform!r}.")
        if transform[0] * transform[4] - transform[1] * transform[3] == 0:
            raise ValueError(f"`transform` {transform} is singular (it maps the raster onto a line).")
        object.__setattr__(self, "transform", transform)
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "band_names", tuple(str(b) for b in self.band_names))

    # ------------------------------------------------------------------------------------------- geometry

    @property
    def affine(self):
        """The transform as an :class:`affine.Affine` (the package rasterio installs)."""
        from affine import Affine

        return Affine(*self.transform)

    @property
    def rotated(self) -> bool:
        """The raster's rows and columns are not aligned with the map axes."""
        return self.transform[1] != 0 or self.transform[3] != 0

    @property
    def pixel_size(self) -> tuple[float, float]:
        """``(y, x)`` size of a pixel in map units (positive), e.g. ``(10.0, 10.0)`` for Sentinel-2."""
        a, b, _, d, e, _ = self.transform
        return math.hypot(b, e), math.hypot(a, d)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in map units: the outer edges of the corner pixels."""
        rows, cols = self.shape
        corners = [self.xy(r, c, centre=False) for r in (0, rows) for c in (0, cols)]
        xs, ys = [p[0] for p in corners], [p[1] for p in corners]
        return min(xs), min(ys), max(xs), max(ys)

    def xy(self, row: float, col: float, *, centre: bool = True) -> tuple[float, float]:
        """Map coordinates ``(x, y)`` of a pixel's centre (or its top-left corner with ``centre=False``)."""
        a, b, c, d, e, f = self.transform
        if centre:
            row, col = row + 0.5, col + 0.5
        return a * col + b * row + c, d * col + e * row + f

    def napari_scale_translate(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """``(scale, translate)`` for the Y and X axes of a layer that shows this raster in map units.

        napari's Y grows downwards with the rows, so for a north-up raster Y is minus the northing
        (``y = -northing``) and X the easting; the translate is the first pixel's centre. A rotated
        transform cannot be shown by scale and translate: the pixel size and the first centre are
        used, and :attr:`rotated` says so.
        """
        sy, sx = self.pixel_size
        x0, y0 = self.xy(0, 0)
        flip = -1.0 if self.transform[4] <= 0 else 1.0
        return (sy, sx), (flip * y0, x0)

    def for_shape(self, shape: Sequence[int]) -> "GeoReference":
        """The georeference of the same area at another resolution (a pyramid level or overview)."""
        rows, cols = (int(n) for n in shape[-2:])
        fy, fx = self.shape[0] / rows, self.shape[1] / cols
        a, b, c, d, e, f = self.transform
        return replace(self, transform=(a * fx, b * fy, c, d * fx, e * fy, f), shape=(rows, cols))

    def window(self, rows: slice | tuple[int, int], cols: slice | tuple[int, int]) -> "GeoReference":
        """The georeference of a window ``[rows, cols]`` of this raster (a tile keeps its place on the map)."""
        r0, r1 = (rows.start or 0, self.shape[0] if rows.stop is None else rows.stop) if isinstance(rows, slice) \
            else rows
        c0, c1 = (cols.start or 0, self.shape[1] if cols.stop is None else cols.stop) if isinstance(cols, slice) \
            else cols
        x, y = self.xy(r0, c0, centre=False)
        a, b, _, d, e, _ = self.transform
        return replace(self, transform=(a, b, x, d, e, y), shape=(int(r1) - int(r0), int(c1) - int(c0)))

    def describe(self) -> str:
        """One line for logs and error messages."""
        crs = self.crs_code or ("a custom CRS" if self.crs else "no CRS")
        sy, sx = self.pixel_size
        unit = f" {self.units}" if self.units else ""
        nodata = "" if self.nodata is None else f", nodata {self.nodata}"
        return f"{crs}, {sx:g}×{sy:g}{unit} pixels, {self.shape[0]}×{self.shape[1]}{nodata}"


def check_nodata(nodata, dtype, *, name: str = "nodata", where: str = "") -> float | int | None:
    """``nodata`` as a number that ``dtype`` can hold exactly, or a ``ValueError`` that says what can.

    ``None`` stays ``None``; NaN is allowed for floating-point data only.
    """
    if nodata is None:
        return None
    dtype = np.dtype(dtype)
    suffix = f" ({where})" if where else ""
    try:
        value = float(nodata)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number or None, got {nodata!r}{suffix}.") from None
    if np.issubdtype(dtype, np.floating):
        if math.isnan(value) or np.isinf(value):
            return value
        if abs(value) > np.finfo(dtype).max:
            raise ValueError(f"`{name}`={nodata!r} is outside the range of {dtype} data{suffix}.")
        return value
    if np.issubdtype(dtype, np.integer) or dtype.kind == "b":
        info = np.iinfo(np.uint8 if dtype.kind == "b" else dtype)
        if not math.isfinite(value) or value != int(value) or not info.min <= value <= info.max:
            raise ValueError(f"`{name}`={nodata!r} cannot be stored in {dtype} data{suffix}: it must be a whole "
                             f"number from {info.min} to {info.max}; pass another `{name}`, or `{name}=None` to "
                             "ignore it.")
        return int(value)
    raise ValueError(f"`{name}` applies to numeric data, got {dtype} data{suffix}.")


def geo_attrs(geo: GeoReference, *, dimensions: Sequence[str] = ("Y", "X")) -> dict[str, Any]:
    """The Zarr attributes (GeoZarr ``proj:``/``spatial:`` plus ``segarch:``) that carry ``geo``.

    Merge them into a group's or an array's attributes; :func:`geo_from_attrs` reads them back.
    """
    attrs: dict[str, Any] = {
        "spatial:dimensions": list(dimensions),
        "spatial:transform_type": "affine",
        "spatial:transform": list(geo.transform),
        "spatial:shape": list(geo.shape),
        "spatial:registration": "pixel",
        "zarr_conventions": [dict(c) for c in GEO_CONVENTIONS],
    }
    if geo.crs:
        attrs["proj:wkt2"] = geo.crs
    if geo.crs_code:
        attrs["proj:code"] = geo.crs_code
    if geo.nodata is not None:
        # JSON has no NaN: a NaN nodata is written as the string "NaN".
        attrs["segarch:nodata"] = "NaN" if isinstance(geo.nodata, float) and math.isnan(geo.nodata) else geo.nodata
    if geo.band_names:
        attrs["segarch:bands"] = list(geo.band_names)
    if geo.units:
        attrs["segarch:units"] = geo.units
    return attrs


def geo_from_attrs(attrs: Mapping[str, Any], *, where: str = "the attributes") -> GeoReference | None:
    """The :class:`GeoReference` that :func:`geo_attrs` wrote, or ``None`` if ``attrs`` carry none.

    Raises:
        ValueError: the attributes carry a georeference that is incomplete or malformed (naming ``where``).
    """
    if "spatial:transform" not in attrs and "proj:wkt2" not in attrs and "proj:code" not in attrs:
        return None
    transform = attrs.get("spatial:transform")
    shape = attrs.get("spatial:shape")
    if transform is None or shape is None or len(transform) != 6 or len(shape) != 2:
        raise ValueError(f"{where} carry a georeference without a six-number `spatial:transform` and a two-number "
                         f"`spatial:shape` (found {transform!r} and {shape!r}).")
    if attrs.get("spatial:registration", "pixel") != "pixel":
        raise ValueError(f"{where}: `spatial:registration` {attrs['spatial:registration']!r} is not supported; "
                         "only 'pixel' (corner) registration is.")
    nodata = attrs.get("segarch:nodata")
    if nodata == "NaN":
        nodata = float("nan")
    crs = attrs.get("proj:wkt2")
    code = attrs.get("proj:code")
    if crs is None and code is not None:
        crs = crs_wkt(code)
    return GeoReference(crs=crs, crs_code=code, transform=tuple(transform), shape=tuple(shape), nodata=nodata,
                        band_names=tuple(attrs.get("segarch:bands") or ()), units=attrs.get("segarch:units"))


def crs_wkt(code: str) -> str:
    """The WKT of a CRS given as ``"EPSG:32633"`` (GDAL's CRS database through rasterio; without it, the code)."""
    try:
        from rasterio.crs import CRS
    except ImportError:
        return code
    return CRS.from_user_input(code).to_wkt()
