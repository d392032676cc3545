"""GeoTIFF / Cloud-Optimized GeoTIFF (and anything GDAL reads) through rasterio, window by window.

Reading (:func:`read_raster`) wraps each level of the file (level 0 and its overviews) in a
:class:`RasterWindows` array-like and hands it to Dask: computing a chunk reads only that window
of the file, so a scene larger than memory opens in milliseconds and a tile costs one window read.
The :class:`segarch.io.Image` it returns carries the georeference as ``image.geo``.

Writing (:func:`write_geotiff`) streams a NumPy, Zarr or Dask array into a tiled GeoTIFF block by
block (at most a few chunks in memory), then lets GDAL's COG driver reorganise it into a
Cloud-Optimized GeoTIFF with overviews (by mode for labels, by average otherwise), with the same
CRS, transform and nodata. :func:`geotiff_from_zarr` does the same for a Zarr store whose
attributes carry a georeference (:func:`add_georeference`; layout in :mod:`segarch.io.geo`).

rasterio is an optional dependency: ``pip install "napari-segarch[geo]"``. Without it
:func:`segarch.io.open_image` still opens GeoTIFFs through tifffile (pixels only, no georeference).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
import warnings
from pathlib import Path
from typing import Any, Sequence

import dask.array as da
import numpy as np

from segarch.io.geo import GeoReference, check_nodata, geo_attrs, geo_from_attrs
from segarch.io.image import Image, check_axes, stem

__all__ = ["read_raster", "write_geotiff", "geotiff_from_zarr", "add_georeference", "read_georeference",
           "is_georeferenced_tiff", "RasterWindows", "NoCRSWarning", "require_rasterio", "GEO_TIFF_TAGS"]

logger = logging.getLogger(__name__)

#: TIFF tags that only georeferenced (or GDAL-written) files carry: ModelPixelScale, ModelTiepoint,
#: ModelTransformation, GeoKeyDirectory, and GDAL's nodata tag.
GEO_TIFF_TAGS = (33550, 33922, 34264, 34735, 42113)

_RESAMPLING = {"labels": "MODE", "image": "AVERAGE"}


class NoCRSWarning(UserWarning):
    """A raster opened (or written) without a coordinate reference system: it cannot be placed on a map."""


def require_rasterio():
    """Import rasterio, or say which extra installs it."""
    try:
        import rasterio
    except ImportError:
        raise ImportError("Reading and writing GeoTIFFs needs rasterio, which is not installed: "
                          'pip install "napari-segarch[geo]" (or pip install rasterio).') from None
    return rasterio


def is_georeferenced_tiff(path: str | os.PathLike) -> bool:
    """Cheap probe: the first image of a TIFF carries GeoTIFF tags (or GDAL's nodata tag).

    Reads the header and the first IFD only (tifffile parses pages lazily), never pixel data.
    Plain and OME-TIFFs written by microscopes carry none of :data:`GEO_TIFF_TAGS`.
    """
    import tifffile

    try:
        with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
            tags = tif.pages.first.tags
            return any(code in tags for code in GEO_TIFF_TAGS)
    except Exception:  # not a TIFF, or a damaged one: the TIFF reader says what is wrong
        return False


class _quiet_tifffile:
    """tifffile logs a warning for a GDAL nodata tag that does not fit the data; we report it ourselves."""

    def __enter__(self):
        self.logger = logging.getLogger("tifffile")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


def _raw_gdal_nodata(path: str) -> str | None:
    # rasterio hides a nodata value that does not fit the data type (it reports None): read the tag's text.
    import tifffile

    try:
        with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
            tag = tif.pages.first.tags.get(42113)
            return None if tag is None else str(tag.value).strip("\x00 ")
    except Exception:
        return None


# ------------------------------------------------------------------------------------------------ reading


class RasterWindows:
    """One level of a raster file as an array-like: indexing reads only the window asked for.

    ``shape`` is ``(bands, rows, columns)``, ``(rows, columns)`` for a single band, or
    ``(rows, columns, bands)`` with ``channels_last``. Each thread keeps its own open dataset
    (GDAL handles are not thread-safe), and the object pickles as its path, so Dask workers
    on other machines read their own windows.
    """

    def __init__(self, path: str, *, overview: int | None, shape: tuple[int, ...], dtype, bands: Sequence[int],
                 channels_last: bool = False) -> None:
        self.path = path
        self.overview = overview
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)
        self.bands = tuple(int(b) for b in bands)
        self.channels_last = channels_last
        self._local = threading.local()

    def __getstate__(self):
        state = dict(self.__dict__)
        del state["_local"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._local = threading.local()

    def _dataset(self):
        ds = getattr(self._local, "dataset", None)
        if ds is None or ds.closed:
            import rasterio

            kwargs = {} if self.overview is None else {"overview_level": self.overview}
            ds = rasterio.open(self.path, sharing=False, **kwargs)
            self._local.dataset = ds
        return ds

    def _spatial(self) -> tuple[int, int]:
        return (0, 1) if self.ndim == 2 else ((0, 1) if self.channels_last else (1, 2))

    def __getitem__(self, key) -> np.ndarray:
        from rasterio.windows import Window

        key = _full_key(key, self.ndim)
        slices, picks = [], []
        for k, n in zip(key, self.shape):
            if isinstance(k, (int, np.integer)):
                k = int(k) + n if k < 0 else int(k)
                if not 0 <= k < n:
                    raise IndexError(f"index {k} is out of bounds for an axis of size {n}")
                slices.append(slice(k, k + 1, 1))
                picks.append(0)
            else:
                slices.append(slice(*k.indices(n)))
                picks.append(slice(None))
        iy, ix = self._spatial()
        rows, cols = slices[iy], slices[ix]
        band_slice = None if self.ndim == 2 else slices[2 if self.channels_last else 0]
        # Read the bounding window of the rows and columns asked for, then take steps and picks in memory.
        r0, r1 = (rows.start, rows.stop) if rows.step > 0 else (rows.stop + 1, rows.start + 1)
        c0, c1 = (cols.start, cols.stop) if cols.step > 0 else (cols.stop + 1, cols.start + 1)
        bands = list(self.bands) if band_slice is None else list(self.bands)[band_slice]
        if r1 <= r0 or c1 <= c0 or not bands:
            out = np.empty((len(bands), max(0, r1 - r0), max(0, c1 - c0)), self.dtype)
        else:
            out = self._dataset().read(bands, window=Window(c0, r0, c1 - c0, r1 - r0), out_dtype=self.dtype)
        out = out[:, :: 1 if rows.step > 0 else -1, :: 1 if cols.step > 0 else -1]
        out = out[:, :: abs(rows.step), :: abs(cols.step)]
        if self.ndim == 2:
            out = out[0]
        elif self.channels_last:
            out = np.moveaxis(out, 0, -1)
        return out[tuple(picks)]

    def __repr__(self) -> str:
        level = "level 0" if self.overview is None else f"overview {self.overview}"
        return f"RasterWindows({self.path!r}, {level}, shape={self.shape}, dtype={self.dtype})"


def _full_key(key, ndim: int) -> tuple:
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1:]
    key = key + (slice(None),) * (ndim - len(key))
    if len(key) != ndim or not all(isinstance(k, (slice, int, np.integer)) for k in key):
        raise IndexError(f"RasterWindows takes integers and slices, one per axis ({ndim}), got {key!r}")
    return key


def _chunk_sizes(block: tuple[int, int], shape: tuple[int, int], target: int) -> tuple[int, int]:
    # Whole blocks of the file (never a block split between chunks), about `target` pixels a side.
    rows, cols = max(1, block[0]), max(1, block[1])
    if cols >= shape[1]:  # strips: whole rows, about target² pixels per chunk
        per = max(rows, (target * target // max(shape[1], 1)) // rows * rows)
        return min(per, shape[0]), shape[1]
    return min(shape[0], rows * max(1, round(target / rows))), min(shape[1], cols * max(1, round(target / cols)))


def _units(crs) -> str | None:
    try:
        unit = crs.linear_units if crs.is_projected else "degree"
    except Exception:
        return None
    return None if unit in (None, "", "unknown") else unit


_FILE = object()


def read_raster(path: str | os.PathLike, *, nodata: Any = _FILE, chunks: int = 1024) -> Image:
    """Open a GeoTIFF, COG or any raster GDAL reads, lazily, with its georeference.

    Args:
        path: the file (or a GDAL path such as ``/vsicurl/...``).
        nodata: the value that marks missing pixels; by default the file's own. ``None`` ignores it.
        chunks: about how many pixels a side each Dask chunk spans (whole blocks of the file).

    Returns:
        An :class:`~segarch.io.Image` whose ``levels`` are level 0 and the file's overviews as Dask
        arrays (axes ``YX`` for one band, ``YXC`` for an 8-bit RGB(A) photo, else ``CYX``), with
        ``scale``/``translate`` in map units (Y is minus the northing, see
        :meth:`GeoReference.napari_scale_translate`) and ``geo`` the :class:`GeoReference`. A file
        :func:`write_geotiff` wrote as labels (GDAL metadata ``segarch_kind=labels``) has ``labels`` set:
        its bands (e.g. a panoptic result's ``classes``, ``instances``) are named by ``geo.band_names``.

    A raster with no CRS opens (its ``geo.crs`` is ``None``) with a :class:`NoCRSWarning`.

    Raises:
        ImportError: rasterio is missing (names the extra to install).
        ValueError: GDAL cannot read the file, or the file's nodata does not fit its data type
            (pass ``nodata=`` to override).
    """
    rasterio = require_rasterio()
    from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

    path = os.fspath(path)
    if "://" not in path and not path.startswith("/vsi") and not os.path.exists(path):
        raise ValueError(f"Cannot open {path!r}: no such file.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                info = _describe(ds)
                overviews = []
                for i, _factor in enumerate(ds.overviews(1) if ds.count else []):
                    with rasterio.open(path, overview_level=i) as ov:
                        overviews.append((ov.height, ov.width))
    except RasterioIOError as err:
        raise ValueError(f"{path!r} is not a raster GDAL can read: {err}") from None
    if info["count"] == 0:
        raise ValueError(f"{path!r} holds no raster bands (is it a vector file or a container of subdatasets?).")
    where = f"the nodata of {path!r}"
    file_nodata = info["nodata"]
    if file_nodata is None and os.path.isfile(path):
        raw = _raw_gdal_nodata(path)
        if raw:
            try:
                file_nodata = float(raw)
            except ValueError:
                raise ValueError(f"{path!r} has a nodata tag {raw!r} that is not a number; pass `nodata=` (a value, or "
                                 "None to ignore it).") from None
    nodata = check_nodata(file_nodata if nodata is _FILE else nodata, info["dtype"], where=where)

    count, dtype = info["count"], info["dtype"]
    # write_geotiff marks labels (class or instance ids) so they re-open as labels, never as an RGB photo.
    labels = info["tags"].get("segarch_kind") == "labels"
    rgb = (not labels and dtype == np.uint8 and count in (3, 4)
           and info["colorinterp"][:3] == ["red", "green", "blue"])
    axes = "YX" if count == 1 else ("YXC" if rgb else "CYX")
    level_shapes = [(info["height"], info["width"])] + overviews
    levels = []
    token = _token(path)
    for i, (rows, cols) in enumerate(level_shapes):
        shape = {"YX": (rows, cols), "YXC": (rows, cols, count), "CYX": (count, rows, cols)}[axes]
        windows = RasterWindows(path, overview=None if i == 0 else i - 1, shape=shape, dtype=dtype,
                                bands=range(1, count + 1), channels_last=axes == "YXC")
        block = info["block"] if i == 0 else (min(info["block"][0], rows), min(info["block"][1], cols))
        cy, cx = _chunk_sizes(block, (rows, cols), chunks)
        chunk = {"YX": (cy, cx), "YXC": (cy, cx, count), "CYX": (count, cy, cx)}[axes]
        levels.append(da.from_array(windows, chunks=chunk, name=f"raster-{token}-{i}", asarray=False,
                                    meta=np.empty((0,) * len(shape), dtype), lock=False))

    geo = GeoReference(crs=info["crs"], crs_code=info["crs_code"], transform=info["transform"],
                       shape=level_shapes[0], nodata=nodata, band_names=info["band_names"], units=info["units"],
                       metadata={"file_nodata": file_nodata})
    georeferenced = geo.crs is not None or geo.transform != (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
    if geo.crs is None:
        warnings.warn(f"{path!r} has no CRS: its pixels are read, but it (and what is computed from it) cannot be "
                      "placed on a map; `image.geo.crs` is None.", NoCRSWarning, stacklevel=2)
    scale = translate = None
    units: dict[str, str] = {}
    level_scales: list = []
    if georeferenced:
        (sy, sx), (ty, tx) = geo.napari_scale_translate()
        spatial = {"Y": (sy, ty), "X": (sx, tx)}
        scale = tuple(spatial.get(a, (1.0, 0.0))[0] for a in axes)
        translate = tuple(spatial.get(a, (1.0, 0.0))[1] for a in axes)
        unit = {"metre": "meter", "meter": "meter", "metres": "meter", "foot": "foot", "US survey foot": "foot",
                "degree": "degree"}.get(geo.units or "")
        units = {"Y": unit, "X": unit} if unit else {}
        for rows, cols in level_shapes:
            lsy, lsx = geo.for_shape((rows, cols)).pixel_size
            level_scales.append(tuple({"Y": lsy, "X": lsx}.get(a, 1.0) for a in axes))
    metadata = {"rasterio": {k: info[k] for k in ("driver", "count", "dtypes", "block", "colorinterp", "tags")},
                "overviews": [list(s) for s in overviews]}
    return Image(levels=levels, axes=axes, scale=scale or (), translate=translate or (), name=stem(path),
                 units=units, labels=labels, metadata=metadata, path=path, level_scales=level_scales, geo=geo)


def _describe(ds) -> dict[str, Any]:
    dtypes = list(ds.dtypes)
    dtype = np.result_type(*[np.dtype(d) for d in dtypes]) if dtypes else np.dtype(np.uint8)
    crs = ds.crs
    code = None
    if crs is not None:
        epsg = crs.to_epsg()
        code = f"EPSG:{epsg}" if epsg else None
        if code is None:
            auth = crs.to_authority()
            code = f"{auth[0]}:{auth[1]}" if auth else None
    nodatas = [v for v in ds.nodatavals if v is not None]
    names = [d or f"band {i + 1}" for i, d in enumerate(ds.descriptions)]
    return {
        "driver": ds.driver, "count": ds.count, "dtypes": dtypes, "dtype": dtype, "height": ds.height,
        "width": ds.width, "crs": crs.to_wkt() if crs is not None else None, "crs_code": code,
        "transform": tuple(ds.transform)[:6], "nodata": nodatas[0] if nodatas else None, "band_names": names,
        "units": _units(crs) if crs is not None else None,
        "block": tuple(ds.block_shapes[0]) if ds.count else (256, 256),
        "colorinterp": [c.name for c in ds.colorinterp], "tags": dict(ds.tags()),
    }


def _token(path: str) -> str:
    from dask.base import tokenize

    try:
        st = os.stat(path)
        return tokenize(os.path.abspath(path), st.st_mtime_ns, st.st_size)
    except OSError:
        return tokenize(path)


# ------------------------------------------------------------------------------------------------ writing


class _WindowWriter:
    """A ``da.store`` target: each assigned block is written to its window of the open dataset."""

    def __init__(self, ds, channels_first: bool) -> None:
        self.ds = ds
        self.channels_first = channels_first

    def __setitem__(self, key, block: np.ndarray) -> None:
        from rasterio.windows import Window

        rows, cols = key[-2:] if self.channels_first else key[:2]
        band = block if block.ndim == 3 else block[None]
        self.ds.write(band, window=Window(cols.start, rows.start, cols.stop - cols.start, rows.stop - rows.start))


def _writable(arr: da.Array, labels: bool) -> da.Array:
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if arr.dtype in (np.float16,):
        return arr.astype(np.float32)
    return arr


def write_geotiff(path: str | os.PathLike, data, geo: GeoReference | None, *, axes: str | None = None,
                  labels: bool | None = None, nodata: Any = _FILE, band_names: Sequence[str] | None = None,
                  cog: bool = True, tile: int = 512, compression: str = "deflate", tags: dict | None = None,
                  overwrite: bool = False) -> Path:
    """Write a raster as a tiled (Cloud-Optimized) GeoTIFF with overviews, block by block.

    Args:
        path: the ``.tif`` file to write.
        data: a NumPy, Zarr or Dask array: ``(rows, columns)`` or bands and rows and columns.
        geo: where the raster lies (the source's ``image.geo``, or :meth:`GeoReference.window` of it for a
            crop); its ``shape`` must equal the data's rows and columns so every pixel keeps its place.
            ``None`` writes a plain tiled TIFF (with a :class:`NoCRSWarning`).
        axes: ``"YX"``, ``"CYX"`` (default for 3-D data) or ``"YXC"``.
        labels: integer class or instance labels: overviews by mode (never a value that is not in the
            data). Default: any integer data is labels; floats (probabilities) average.
        nodata: the nodata value to record (default ``geo.nodata``; ``None`` records none). It must fit the
            data type.
        band_names: one description per band (default ``geo.band_names`` when the band count matches).
        cog: write a Cloud-Optimized GeoTIFF (GDAL's COG driver); ``False`` writes a tiled GeoTIFF with
            overviews built in place.
        tile: block size in pixels (a multiple of 16).
        compression: a GDAL compression (``"deflate"``, ``"lzw"``, ``"zstd"``, ``"none"``).
        tags: extra GDAL metadata items (e.g. provenance), written as strings.
        overwrite: replace an existing file.

    Returns:
        The path written. Nothing appears under ``path`` until the file is complete.
    """
    rasterio = require_rasterio()
    from rasterio.shutil import copy as rio_copy

    path = Path(path)
    if isinstance(data, (list, tuple)):
        data = data[0]
    arr = data if isinstance(data, da.Array) else da.from_array(data, chunks=_native_chunks(data), asarray=False,
                                                                  lock=False)
    axes = check_axes(axes or ("YX" if arr.ndim == 2 else "CYX"), arr.ndim)
    if axes not in ("YX", "CYX", "YXC"):
        raise ValueError(f"`axes` of a GeoTIFF must be 'YX', 'CYX' or 'YXC' (bands and one image plane), got "
                         f"{axes!r}; pick one plane first (e.g. data[t] for a time series).")
    if axes == "YX":
        arr = arr[None]
    elif axes == "YXC":
        arr = arr.transpose(2, 0, 1)
    arr = _writable(arr, bool(labels))
    count, rows, cols = arr.shape
    if labels is None:
        labels = bool(np.issubdtype(arr.dtype, np.integer))
    if geo is not None and tuple(geo.shape) != (rows, cols):
        raise ValueError(f"`data` is {rows}×{cols} pixels but `geo` describes a {geo.shape[0]}×{geo.shape[1]} raster: "
                         "pass geo.for_shape(data.shape) for a resampled result or geo.window(rows, cols) for a crop, "
                         "so pixels stay aligned with the source.")
    if not isinstance(tile, (int, np.integer)) or tile <= 0 or tile % 16:
        raise ValueError(f"`tile` must be a positive multiple of 16, got {tile!r}.")
    nodata = check_nodata((geo.nodata if geo is not None else None) if nodata is _FILE else nodata, arr.dtype,
                          where=f"writing {str(path)!r}")
    if band_names is None and geo is not None and len(geo.band_names) == count:
        band_names = geo.band_names
    if band_names is not None and len(band_names) != count:
        raise ValueError(f"`band_names` must name each of the {count} bands, got {len(band_names)}: "
                         f"{list(band_names)!r}.")
    if path.exists() and not overwrite:
        raise ValueError(f"{str(path)!r} already exists; pass `overwrite=True` to replace it.")
    if geo is None or geo.crs is None:
        warnings.warn(f"{str(path)!r} is written without a CRS: it cannot be placed on a map.", NoCRSWarning,
                      stacklevel=2)

    arr = _tile_aligned(arr, tile)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp.tif")
    staged = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.cog.tif")
    profile = dict(driver="GTiff", width=cols, height=rows, count=count, dtype=arr.dtype.name,
                   crs=geo.crs if geo is not None and geo.crs else None,
                   transform=geo.affine if geo is not None else None, nodata=nodata, tiled=True,
                   blockxsize=tile, blockysize=tile, compress=compression, BIGTIFF="IF_SAFER",
                   interleave="pixel" if count <= 4 else "band")
    items = {"segarch_kind": "labels" if labels else "image", **{str(k): str(v) for k, v in (tags or {}).items()}}
    resampling = _RESAMPLING["labels" if labels else "image"]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
                with rasterio.open(tmp, "w", **{k: v for k, v in profile.items() if v is not None}) as ds:
                    if band_names is not None:
                        ds.descriptions = tuple(str(b) for b in band_names)
                    ds.update_tags(**items)
                    da.store(arr, _WindowWriter(ds, channels_first=True), lock=threading.Lock())
                    if not cog:
                        factors = _overview_factors((rows, cols), tile)
                        if factors:
                            ds.build_overviews(factors, getattr(rasterio.enums.Resampling, resampling.lower()))
                            ds.update_tags(ns="rio_overview", resampling=resampling.lower())
                if cog:
                    rio_copy(str(tmp), str(staged), driver="COG", COMPRESS=compression.upper(), BLOCKSIZE=tile,
                             OVERVIEW_RESAMPLING=resampling, RESAMPLING="NEAREST", BIGTIFF="IF_SAFER",
                             OVERVIEWS="IGNORE_EXISTING")
                    os.replace(staged, path)
                else:
                    os.replace(tmp, path)
    finally:
        for leftover in (tmp, staged):
            if leftover.exists():
                leftover.unlink()
    logger.info("wrote %s (%s, %d band(s), %s)", path, "COG" if cog else "GeoTIFF", count,
                geo.describe() if geo is not None else "no georeference")
    return path


def _tile_aligned(arr: da.Array, tile: int, budget: int = 2 ** 22) -> da.Array:
    """Chunks of whole tiles (about ``budget`` bytes), so GDAL never rewrites a compressed block two chunks share.

    Chunks that already are whole tiles and fit the budget are kept: no rechunking copy.
    """
    count = arr.shape[0]
    limit = budget // max(1, count * arr.dtype.itemsize)

    def aligned(chunks) -> bool:
        return all(c % tile == 0 for c in chunks[:-1])

    if len(arr.chunks[0]) == 1 and aligned(arr.chunks[1]) and aligned(arr.chunks[2]) \
            and max(arr.chunks[1]) * max(arr.chunks[2]) <= max(limit, tile * tile):
        return arr
    step = tile * max(1, int(np.sqrt(limit)) // tile)
    return arr.rechunk((count, step, step))


def _native_chunks(data) -> Any:
    chunks = getattr(data, "chunks", None)
    if isinstance(chunks, tuple) and len(chunks) == data.ndim and all(isinstance(c, (int, np.integer)) for c in chunks):
        return chunks
    return "auto"


def _overview_factors(shape: tuple[int, int], tile: int) -> list[int]:
    factors, f = [], 2
    while max(shape) / f >= tile / 2 and min(shape) // f >= 1:
        factors.append(f)
        f *= 2
    return factors


# --------------------------------------------------------------------------------------- Zarr ↔ GeoTIFF


def add_georeference(store: str | os.PathLike, geo: GeoReference, *, array: str | None = None,
                     dimensions: Sequence[str] = ("Y", "X")) -> None:
    """Record ``geo`` in the attributes of a Zarr group (or of its ``array``), for :func:`geotiff_from_zarr`."""
    import zarr

    node = zarr.open_group(os.fspath(store), mode="r+")
    if array is not None:
        node = node[array]
    node.attrs.update(geo_attrs(geo, dimensions=dimensions))


def read_georeference(store: str | os.PathLike, *, array: str | None = None) -> GeoReference | None:
    """The georeference a Zarr store's attributes carry (the array's own first, then its group's), or ``None``."""
    import zarr

    node = zarr.open(os.fspath(store), mode="r")
    where = f"the attributes of {os.fspath(store)!r}"
    if isinstance(node, zarr.Group) and array is not None:
        geo = geo_from_attrs(dict(node[array].attrs), where=where)
        if geo is not None:
            return geo
    return geo_from_attrs(dict(node.attrs), where=where)


def geotiff_from_zarr(store: str | os.PathLike, path: str | os.PathLike, *, level: int = 0,
                      geo: GeoReference | None = None, **kwargs) -> Path:
    """Turn a Zarr/OME-Zarr store that carries a georeference into a (Cloud-Optimized) GeoTIFF.

    Args:
        store: a Zarr array or OME-Zarr image (e.g. a prediction store) with ``proj:``/``spatial:``
            attributes (see :mod:`segarch.io.geo`).
        path: the GeoTIFF to write.
        level: which pyramid level of the store (the georeference is scaled to it).
        geo: a georeference to use instead of the store's (for a store written without one).
        **kwargs: passed to :func:`write_geotiff` (``nodata``, ``cog``, ``compression``, ``overwrite``...).

    The store is read chunk by chunk; labels images (OME ``image-label``) get overviews by mode.

    Raises:
        ValueError: the store carries no georeference and none is given, or its axes hold more than bands
            and one plane.
    """
    from segarch.io.ome_zarr import read_zarr

    store = os.fspath(store)
    image = read_zarr(store)
    if geo is None:
        geo = read_georeference(store, array=str(level))
    if geo is None:
        raise ValueError(f"{store!r} carries no georeference (no `proj:`/`spatial:` attributes); pass `geo=` "
                         "(e.g. the source image's `image.geo`).")
    if not 0 <= level < len(image.levels):
        raise ValueError(f"`level` must be from 0 to {len(image.levels) - 1} for {store!r}, got {level!r}.")
    data = image.levels[level]
    axes = image.axes
    # Drop leading axes of size one (a prediction store of one plane may keep T or Z).
    while len(axes) > 2 and axes[0] in "TZ" and data.shape[0] == 1:
        data, axes = data[0], axes[1:]
    if axes not in ("YX", "CYX", "YXC"):
        raise ValueError(f"{store!r} has axes {axes!r} with shape {tuple(data.shape)}; a GeoTIFF holds bands and one "
                         "plane ('YX', 'CYX' or 'YXC'). Write one plane at a time.")
    rows, cols = data.shape[-2:] if axes != "YXC" else data.shape[:2]
    if tuple(geo.shape) != (rows, cols):
        geo = geo.for_shape((rows, cols))
    kwargs.setdefault("labels", image.labels or None)
    return write_geotiff(path, data, geo, axes=axes, **kwargs)
