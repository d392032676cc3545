"""Several label images of one result store as the bands of one TIFF: a panoptic result (``classes``,
``instances`` and, with a label divisor, ``panoptic``) as one file.

One file with named bands (not sibling files) because the result is one thing: the CLI's OUTPUT stays one path
(``--resume`` finds it complete, a folder run's report names it, a GeoTIFF's georeference is written once), and
every viewer tells the bands apart by name: QGIS lists "Band 1: classes", "Band 2: instances" (band
descriptions) and styles each as paletted/unique values, Fiji's Bio-Formats and napari show the OME-TIFF's
channels by name. A georeferenced store becomes a Cloud-Optimized GeoTIFF (CRS, transform and nodata kept, mode
overviews), any other an OME-TIFF (pyramid by mode, pixel size kept). All bands share one integer type (GeoTIFF
and OME-TIFF have one per file): uint32, or uint64 for a GeoTIFF whose panoptic ids need it (an OME-TIFF, which
has no 64-bit integers, keeps uint32 when the ids fit).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["label_bands_to_tiff"]


def label_bands_to_tiff(store: str | os.PathLike, names: Sequence[str], target: str | os.PathLike, *,
                        settings: dict[str, Any] | None = None, overwrite: bool = False) -> Path:
    """Write the OME-Zarr label images ``<store>/<name>`` (one per ``names``, same shape) as the bands of ``target``.

    Args:
        store: a Zarr group holding the label images (e.g. a panoptic result), its georeference (if any) in the
            group's attributes.
        names: the label images, in band order; they name the bands (GeoTIFF descriptions, OME channel names).
        target: the ``.tif``/``.tiff`` to write.
        settings: the provenance to carry (a GDAL metadata item, or an OME MapAnnotation).
        overwrite: replace an existing ``target``.

    Returns:
        The path written (nothing appears there until the file is complete).
    """
    import dask.array as da

    from segarch.io.geotiff import read_georeference, write_geotiff
    from segarch.io.ome_zarr import read_zarr
    from segarch.io.tiff import write_tiff

    store, target = Path(store), Path(target)
    images = [read_zarr(str(store / name)) for name in names]
    first = images[0]
    if any(im.axes != first.axes or tuple(im.levels[0].shape) != tuple(first.levels[0].shape) for im in images):
        raise ValueError(f"The label images {list(names)} of {str(store)!r} differ in axes or shape: "
                         f"{[(im.axes, tuple(im.levels[0].shape)) for im in images]}.")
    dtype = np.result_type(*[im.levels[0].dtype for im in images], np.uint32)
    bands = da.stack([im.levels[0].astype(dtype) for im in images])
    axes = first.axes
    provenance = json.dumps(settings, default=str) if settings else None
    geo = read_georeference(store)
    if geo is not None:
        while len(axes) > 2 and bands.shape[1] == 1:  # a GeoTIFF holds bands of one plane: a T or Z of one goes
            bands, axes = bands[:, 0], axes[1:]
        if axes != "YX":
            raise ValueError(f"{str(store)!r} has axes {axes!r}; a GeoTIFF holds bands of one plane (YX).")
        if tuple(geo.shape) != tuple(bands.shape[-2:]):
            geo = geo.for_shape(tuple(bands.shape[-2:]))
        return write_geotiff(target, bands, geo, axes="CYX", labels=True, band_names=list(names),
                             tags={"segarch_provenance": provenance} if provenance else None, overwrite=overwrite)
    physical = any(float(s) != 1.0 for s in first.scale)
    return write_tiff(target, bands, axes="C" + axes, scale=(1.0, *first.scale) if physical else None,
                      units=dict(first.units) or None if physical else None, labels=True, name=target.stem,
                      levels=None, overwrite=overwrite, channel_names=list(names),
                      annotations={"segarch_provenance": provenance} if provenance else None)

