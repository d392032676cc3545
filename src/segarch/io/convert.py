"""A result store (``.zarr`` from ``segarch.predict``) to the files other tools read: GeoTIFF/COG, OME-TIFF, vectors.

``segarch convert labels.zarr labels.tif`` and the CLI's ``.tif`` outputs go through :func:`convert_store`:
a store whose attributes carry a georeference becomes a Cloud-Optimized GeoTIFF with overviews (same
CRS, transform, nodata); any other becomes a pyramidal OME-TIFF that keeps the pixel size.
:func:`store_vectors` traces the labels into polygons: GeoPackage/GeoJSON in map coordinates with the CRS
for a georeferenced result, QuPath GeoJSON in the slide's level-0 pixels for a whole-slide result.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

__all__ = ["convert_store", "store_vectors", "store_settings"]


def store_settings(store: str | os.PathLike) -> dict[str, Any]:
    """The provenance ``segarch.predict`` wrote into a result store (``{}`` for another store)."""
    import zarr

    try:
        attrs = dict(zarr.open_group(os.fspath(store), mode="r").attrs)
    except Exception:
        return {}
    return dict((attrs.get("segarch") or {}).get("settings") or {})


def convert_store(store: str | os.PathLike, target: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a result store as a (Geo)TIFF.

    Args:
        store: a ``.zarr`` result (labels or probabilities) or any OME-Zarr image.
        target: the ``.tif``/``.tiff`` to write.
        overwrite: replace an existing ``target``.

    Returns:
        The path written: a COG with the store's CRS, transform and nodata when the store carries a
        georeference, else an OME-TIFF with a pyramid and the store's pixel size. A panoptic result becomes
        one file whose bands are its label images, named: ``classes``, ``instances`` (and ``panoptic``), see
        :mod:`segarch.io.label_bands`.

    Raises:
        ValueError: ``target`` is not a .tif, or a panoptic result is unfinished (resume it first).
    """
    from segarch.io.api import open_image
    from segarch.io.geotiff import geotiff_from_zarr, read_georeference
    from segarch.io.tiff import write_tiff

    store, target = Path(store), Path(target)
    if target.suffix.lower() not in (".tif", ".tiff"):
        raise ValueError(f"The converted file {str(target)!r} must end in .tif or .tiff.")
    settings = store_settings(store)
    panoptic = _panoptic_labels(store)
    if panoptic is not None:  # classes, instances (and panoptic ids): the bands of one file
        from segarch.io.label_bands import label_bands_to_tiff

        return label_bands_to_tiff(store, panoptic, target, settings=settings, overwrite=overwrite)
    labels = settings.get("output", "labels") != "probabilities"
    if read_georeference(store) is not None:
        # The provenance (model, weights hash, settings, versions, the source's georeference) goes along as
        # one GDAL metadata item: `gdalinfo` and rasterio's `tags()` show it.
        tags = {"segarch_provenance": json.dumps(settings, default=str)} if settings else None
        return geotiff_from_zarr(store, target, overwrite=overwrite, labels=labels, tags=tags)
    image = open_image(store)
    physical = any(float(s) != 1.0 for s in image.scale)  # units: the store's, else µm (write_tiff's default)
    # The provenance goes along as an OME MapAnnotation (`segarch.io.tiff.read_annotations` reads it back).
    write_tiff(target, image.levels[0], axes=image.axes, scale=image.scale if physical else None,
               units=dict(image.units) or None if physical else None, labels=labels, name=target.stem, levels=None,
               overwrite=overwrite,
               annotations={"segarch_provenance": json.dumps(settings, default=str)} if settings else None)
    return target


def _panoptic_labels(store: Path) -> list[str] | None:
    """The label images of a finished panoptic result (``segarch.predict(output="panoptic", out=...)``), in band
    order, or ``None`` for another store."""
    import zarr

    try:
        attrs = dict(zarr.open_group(os.fspath(store), mode="r").attrs)
    except Exception:
        return None
    marks = attrs.get("segarch") or {}
    if marks.get("output") != "panoptic":
        return None
    if not marks.get("complete"):
        raise ValueError(f"{str(store)!r} is an unfinished panoptic result (an interrupted run): continue it with "
                         "`resume`=True (the same command with --resume) before converting it.")
    return list((attrs.get("ome") or {}).get("labels") or ["classes", "instances"])


def store_vectors(store: str | os.PathLike, target: str | os.PathLike, *, qupath: bool | None = None,
                  kind: str | None = None, overwrite: bool = False) -> Path:
    """Trace a labels store into polygons and write them, merged across block seams.

    Args:
        store: a ``.zarr`` labels result.
        target: ``.gpkg``, ``.geojson``, ``.fgb`` or ``.shp``.
        qupath: write QuPath's GeoJSON in the slide's level-0 pixels; default: for a result that has no
            georeference and ends in ``.geojson``.
        kind: ``"classes"`` (one polygon per region of a class) or ``"instances"``; default from the result (a
            panoptic result: its ``instances`` image, or with ``"classes"`` its ``classes`` image).
        overwrite: replace an existing ``target``.
    """
    from segarch.io.api import open_image
    from segarch.io.vectors import polygons, write_qupath_geojson, write_vectors

    store, target = Path(store), Path(target)
    settings = store_settings(store)
    if settings.get("output") == "probabilities":
        raise ValueError(f"{str(store)!r} holds probabilities; vectors are traced from labels (predict with "
                         "`output`='labels').")
    if _panoptic_labels(store) is not None:  # a panoptic result: the label image the kind names is traced
        import dataclasses

        from segarch.io.geotiff import read_georeference
        from segarch.io.ome_zarr import read_zarr

        kind = kind or "instances"
        if kind not in ("classes", "instances"):
            raise ValueError(f"`kind` must be 'classes' or 'instances' for a panoptic result, got {kind!r}.")
        image = dataclasses.replace(read_zarr(str(store / kind)), geo=read_georeference(store / kind))
    else:
        image = open_image(store)
    data, axes = image.levels[0], image.axes
    while len(axes) > 2 and data.shape[0] == 1:
        data, axes = data[0], axes[1:]
    if axes != "YX":
        raise ValueError(f"{str(store)!r} has axes {axes!r}; vectors are traced from one plane of labels (YX).")
    kind = kind or ("instances" if settings.get("output") == "instances" else "classes")
    names = settings.get("classes") or None
    geo = image.geo
    qupath = (geo is None and target.suffix.lower() == ".geojson") if qupath is None else qupath
    if qupath:
        shapes = polygons(data, kind=kind, class_names=names)
        to_level0 = settings.get("to_level0") or [1.0, 1.0]
        if any(not math.isclose(f, 1.0) for f in to_level0):
            from shapely import affinity  # QuPath places objects by level-0 pixels: undo the resampling

            shapes.geometries = [affinity.scale(g, xfact=to_level0[1], yfact=to_level0[0], origin=(0, 0))
                                 for g in shapes.geometries]
        return write_qupath_geojson(target, shapes, overwrite=overwrite)
    if geo is None:
        sizes = settings.get("source_pixel_size")
        shapes = polygons(data, kind=kind, class_names=names, pixel_size=tuple(sizes) if sizes else None)
    else:
        shapes = polygons(data, kind=kind, class_names=names, geo=geo, nodata=None)
    return write_vectors(target, shapes, overwrite=overwrite)
