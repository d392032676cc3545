"""npe2 writers: Labels and Image layers to OME-Zarr (``.zarr``, with a pyramid) or OME-TIFF (``.tif``).

A layer opened from a GeoTIFF (or a result computed from one in the Segment dock) carries its
georeference in ``layer.metadata["geo"]``: its ``.tif`` is a Cloud-Optimized GeoTIFF with the CRS and transform.

The layer's scale, translation, axis labels, units and name are kept; a Labels layer's features
(e.g. class names, one row per label value) become OME-Zarr ``image-label`` properties. The work is
done by :func:`segarch.io.write_ome_zarr` and :func:`segarch.io.write_tiff`.
"""

from __future__ import annotations

import os
from typing import Any

from segarch.io import AXES, format_of, guess_axes, write_ome_zarr, write_tiff

__all__ = ["write_labels", "write_image", "axes_from_meta"]


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Labels layer (napari's single-layer writer signature)."""
    return [_write(path, data, meta, labels=True)]


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    """Write an Image layer (napari's single-layer writer signature)."""
    return [_write(path, data, meta, labels=False)]


def axes_from_meta(meta: dict, ndim: int, *, rgb: bool = False) -> str:
    """Axes letters from the layer's ``axis_labels`` when they are ``TCZYX`` letters, else guessed."""
    labels = [str(a).upper() for a in meta.get("axis_labels") or ()]
    if rgb:
        labels = labels + ["C"] if len(labels) == ndim - 1 else labels
    if len(labels) == ndim and all(len(a) == 1 and a in AXES for a in labels) and len(set(labels)) == ndim \
            and {"Y", "X"} <= set(labels):
        return "".join(labels)
    shape = (1,) * (ndim - 1) + ((3,) if rgb else (1,))
    return guess_axes(shape, rgb=rgb)


def _write(path: str, data: Any, meta: dict, *, labels: bool) -> str:
    fmt = format_of(path)
    if fmt not in ("zarr", "tiff"):
        raise ValueError(f"`path` must end in .zarr, .tif or .tiff, got {path!r}.")
    multiscale = bool(meta.get("multiscale"))
    levels = [_lazy(level) for level in (list(data) if multiscale else [data])]
    ndim = levels[0].ndim
    rgb = bool(meta.get("rgb")) and not labels
    axes = axes_from_meta(meta, ndim, rgb=rgb)
    spatial_ndim = ndim - 1 if rgb else ndim
    scale = [float(s) for s in (meta.get("scale") if meta.get("scale") is not None else [1.0] * spatial_ndim)]
    given = meta.get("translate")
    translate = [float(t) for t in (given if given is not None else [0.0] * spatial_ndim)]
    units_seq = [str(u) for u in (meta.get("units") or ())]
    if rgb:
        scale, translate, units_seq = scale + [1.0], translate + [0.0], units_seq + ["pixel"]
    units = {a: u for a, u in zip(axes, units_seq)}
    name = meta.get("name") or os.path.basename(path)
    if fmt == "zarr":
        properties = _properties(meta.get("features")) if labels else None
        write_ome_zarr(path, levels if multiscale else levels[0], axes=axes, scale=scale, translate=translate,
                       units=units, labels=labels, name=name, overwrite=True, properties=properties)
    elif _write_geotiff(path, levels[0], axes, meta, labels=labels):
        pass  # a georeferenced layer (a raster, or a result computed from one): a COG with its CRS
    else:
        physical = any(s != 1.0 for s in scale) or any(u not in ("pixel", "") for u in units.values())
        write_tiff(path, levels[0], axes=axes, scale=scale if physical else None, units=units, name=name,
                   translate=translate if any(translate) else None, labels=labels, levels=None, overwrite=True)
    return path


def _write_geotiff(path: str, data, axes: str, meta: dict, *, labels: bool) -> bool:
    """Write ``data`` as a GeoTIFF when the layer carries a georeference that fits it; False otherwise."""
    metadata = meta.get("metadata") if isinstance(meta.get("metadata"), dict) else {}
    geo = metadata.get("geo")
    if geo is None or axes not in ("YX", "CYX", "YXC"):
        return False
    from segarch.io import GeoReference, write_geotiff

    if not isinstance(geo, GeoReference):
        return False
    rows, cols = (data.shape[-2:] if axes != "YXC" else data.shape[:2])
    if (rows, cols) != tuple(geo.shape):
        geo = geo.for_shape((rows, cols))
    nodata = geo.nodata if not labels else None  # a source's nodata (e.g. 65535) need not fit the labels
    write_geotiff(path, data, geo, axes=axes, labels=labels, nodata=nodata, overwrite=True)
    return True


def _lazy(level):
    """A NumPy or Dask array as it is; any other array-like (a Zarr array, a live store's level) as a Dask
    array over it, so it is written chunk by chunk, never loaded whole."""
    import dask.array as da
    import numpy as np

    if isinstance(level, (np.ndarray, da.Array)):
        return level
    chunks = getattr(level, "chunks", None)
    return da.from_array(level, chunks=chunks if isinstance(chunks, tuple) else 512, asarray=True)


def _properties(features) -> list[dict] | None:
    """A napari features table with an ``index`` column as NGFF ``image-label`` properties."""
    if features is None or len(features) == 0 or "index" not in getattr(features, "columns", ()):
        return None
    rows = []
    for record in features.to_dict("records"):
        row = {"label-value": int(record.pop("index"))}
        row.update({str(k): (v.item() if hasattr(v, "item") else v) for k, v in record.items()})
        rows.append(row)
    return rows
