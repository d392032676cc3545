"""Label images to polygons: class regions and instances as vectors, block by block, merged across seams.

:func:`polygons` reads a label image (NumPy, Zarr or Dask, any size) one block at a time, traces
each block's regions with GDAL's polygonizer (``rasterio.features.shapes``: exact pixel edges, holes
kept), and merges the pieces of a region that a block seam cut, so one field, building or cell is
one polygon whatever the block size. Coordinates are map units when a :class:`GeoReference` is
given, µm with ``pixel_size=``, else pixels (x = column, y = row: QuPath's convention).

:func:`write_vectors` writes them as GeoPackage or GeoJSON with the CRS through pyogrio (OGR, one
vectorised call rather than a Python loop per feature; it is also geopandas' default engine), and
:func:`write_qupath_geojson` as the GeoJSON QuPath imports (annotations for classes, detections for
instances, with their classification).

Needs the ``geo`` extra: ``pip install "napari-segarch[geo]"`` (rasterio, shapely, pyogrio).
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from segarch.io.geo import GeoReference

__all__ = ["Polygons", "polygons", "write_vectors", "write_qupath_geojson", "require_vectors"]

_DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".fgb": "FlatGeobuf", ".shp": "ESRI Shapefile"}


def require_vectors():
    """Import rasterio.features, shapely and pyogrio's writer, or say which extra installs them."""
    try:
        import rasterio.features  # noqa: F401
        import shapely
    except ImportError:
        raise ImportError('Turning labels into polygons needs rasterio and shapely: pip install "napari-segarch[geo]".'
                          ) from None
    return shapely


@dataclass
class Polygons:
    """Polygons traced from a label image, one per class region or per instance.

    Attributes:
        geometries: shapely ``Polygon`` (or ``MultiPolygon`` for an instance in several parts) objects.
        values: the label value of each geometry (class index or instance id).
        pixels: how many pixels of the label image each geometry covers.
        kind: ``"classes"`` (one polygon per connected region of a class) or ``"instances"`` (one per id).
        units: ``"map"`` (the CRS's units), ``"micrometer"`` or ``"pixel"``.
        crs: the CRS as WKT (map units only), else ``None``.
        class_names: names of the label values, where known.
    """

    geometries: list
    values: np.ndarray
    pixels: np.ndarray
    kind: str
    units: str
    crs: str | None = None
    class_names: Mapping[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.geometries)

    def names(self) -> list[str]:
        """The class name of each geometry (``"class 3"`` where no name is known; instances: ``"object"``)."""
        if self.kind == "instances" and not self.class_names:
            return ["object"] * len(self)
        return [str(self.class_names.get(int(v), f"class {int(v)}")) for v in self.values]

    def __repr__(self) -> str:
        return f"Polygons({len(self)} {self.kind}, units={self.units!r}, crs={'yes' if self.crs else 'none'})"


def _traceable(block: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The block in a type GDAL's polygonizer takes exactly, and the values to map its output back to.

    8-32-bit integers go as they are. Wider ids (uint32 above 2**31, 64-bit) are renumbered within the
    block (GDAL would round them through float32), and the second item maps the numbers back.
    """
    if block.dtype in (np.uint8, np.uint16, np.int8, np.int16, np.int32):
        return block, None
    if block.dtype == bool:
        return block.astype(np.uint8), None
    if np.issubdtype(block.dtype, np.integer):
        if block.size == 0 or (int(block.max()) < 2 ** 31 and int(block.min()) >= -(2 ** 31)):
            return block.astype(np.int32), None
        values, inverse = np.unique(block, return_inverse=True)
        return inverse.reshape(block.shape).astype(np.int32), values
    raise ValueError(f"`labels` must hold integer (or boolean) labels, got {block.dtype}.")


def polygons(labels, *, geo: GeoReference | None = None, pixel_size: float | Sequence[float] | None = None,
             kind: str = "classes", block: int = 2048, background: int | None = 0, nodata: int | None = None,
             connectivity: int = 4, class_names: Mapping[int, str] | Sequence[str] | None = None,
             simplify: float = 0.0) -> Polygons:
    """Trace a 2-D label image into polygons, block by block, merging pieces cut by block seams.

    Args:
        labels: ``(rows, columns)`` integer labels: NumPy, Zarr or Dask (read one block at a time).
        geo: the raster's georeference: coordinates in map units, with its CRS (``geo.nodata`` is skipped).
        pixel_size: µm per pixel (one number or ``(y, x)``): coordinates in µm (slides); ignored with ``geo``.
        kind: ``"classes"``: one polygon per connected region of each class (a field, a building);
            ``"instances"``: one feature per label id (a cell, in several parts if the id is).
        block: block size in pixels; any size gives the same polygons.
        background: the label to leave out (``None`` keeps every value).
        nodata: another label to leave out (default ``geo.nodata``).
        connectivity: 4 or 8: which pixel neighbours make one region.
        class_names: names of the label values (a mapping, or a sequence indexed by value).
        simplify: Douglas-Peucker tolerance in pixels (0: exact pixel edges). Applied per polygon, so
            neighbouring polygons may no longer share their edges exactly.

    Returns:
        :class:`Polygons` (geometries, values, pixel counts, units and CRS).
    """
    shapely = require_vectors()
    from affine import Affine
    from rasterio.features import shapes
    from shapely import affinity
    from shapely.geometry import shape as to_shape

    if kind not in ("classes", "instances"):
        raise ValueError(f"`kind` must be 'classes' or 'instances', got {kind!r}.")
    if connectivity not in (4, 8):
        raise ValueError(f"`connectivity` must be 4 or 8, got {connectivity!r}.")
    if not isinstance(block, (int, np.integer)) or block < 16:
        raise ValueError(f"`block` must be an integer of at least 16 pixels, got {block!r}.")
    if getattr(labels, "ndim", None) != 2:
        raise ValueError(f"`labels` must be a 2-D (rows, columns) array, got shape {getattr(labels, 'shape', None)}; "
                         "trace one plane at a time.")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        raise ValueError(f"`labels` must hold integer (or boolean) labels, got {labels.dtype}; threshold or argmax "
                         "probabilities first.")
    rows, cols = (int(n) for n in labels.shape)
    if geo is not None and tuple(geo.shape) != (rows, cols):
        raise ValueError(f"`labels` is {rows}×{cols} but `geo` describes {geo.shape[0]}×{geo.shape[1]}; pass "
                         "geo.for_shape(...) or geo.window(...) so polygons land where the pixels are.")
    if nodata is None and geo is not None and geo.nodata is not None and not (
            isinstance(geo.nodata, float) and math.isnan(geo.nodata)):
        nodata = geo.nodata
    skip = [v for v in (background, nodata) if v is not None]
    names = dict(enumerate(class_names)) if isinstance(class_names, (list, tuple)) else dict(class_names or {})

    done: list[tuple[object, int, int]] = []                    # (geometry, value, pixels) final as traced
    pieces: dict[int, list] = defaultdict(list)                  # value -> pieces to merge
    for y0 in range(0, rows, block):
        y1 = min(y0 + block, rows)
        for x0 in range(0, cols, block):
            x1 = min(x0 + block, cols)
            raw = np.asarray(labels[y0:y1, x0:x1])
            mask = np.ones(raw.shape, bool)
            for v in skip:
                mask &= raw != v
            if not mask.any():
                continue
            data, lookup = _traceable(raw)
            for geom, value in shapes(data, mask=mask, connectivity=connectivity, transform=Affine.translation(x0, y0)):
                value = int(value) if lookup is None else int(lookup[int(value)])
                poly = to_shape(geom)
                if kind == "instances":
                    pieces[value].append(poly)
                    continue
                minx, miny, maxx, maxy = poly.bounds
                # A piece that reaches an inner seam may continue in the next block: merge it later.
                cut = (miny == y0 and y0 > 0) or (maxy == y1 and y1 < rows) or (minx == x0 and x0 > 0) \
                    or (maxx == x1 and x1 < cols)
                if cut:
                    pieces[value].append(poly)
                else:
                    done.append((poly, value, int(round(poly.area))))
    for value, parts in pieces.items():
        merged = shapely.union_all(parts) if len(parts) > 1 else parts[0]
        if kind == "instances":
            done.append((merged, value, int(round(merged.area))))
        else:
            for part in getattr(merged, "geoms", [merged]):
                done.append((part, value, int(round(part.area))))
    # A stable order: by value, then top to bottom, left to right.
    done.sort(key=lambda item: (item[1], item[0].bounds[1], item[0].bounds[0]))
    geometries = [g for g, _, _ in done]
    if simplify:
        geometries = [g.simplify(simplify, preserve_topology=True) for g in geometries]
    units, crs = "pixel", None
    if geo is not None:
        a, b, c, d, e, f = geo.transform
        geometries = [affinity.affine_transform(g, [a, b, d, e, c, f]) for g in geometries]
        units, crs = "map", geo.crs
    elif pixel_size is not None:
        sy, sx = (pixel_size, pixel_size) if isinstance(pixel_size, (int, float)) else tuple(pixel_size)
        if not (sy > 0 and sx > 0):
            raise ValueError(f"`pixel_size` must be positive, got {pixel_size!r}.")
        geometries = [affinity.affine_transform(g, [sx, 0, 0, sy, 0, 0]) for g in geometries]
        units = "micrometer"
    # Exteriors counter-clockwise, holes clockwise (GeoJSON's rule; a north-up transform flips them).
    geometries = [_orient(g) for g in geometries]
    values = np.array([v for _, v, _ in done], dtype=np.uint64 if done and max(v for _, v, _ in done) >= 2 ** 63
                      else np.int64)
    return Polygons(geometries=geometries, values=values, pixels=np.array([p for _, _, p in done], np.int64),
                    kind=kind, units=units, crs=crs, class_names=names)


def _orient(geometry):
    from shapely.geometry import MultiPolygon
    from shapely.geometry.polygon import orient

    if geometry.geom_type == "MultiPolygon":
        return MultiPolygon([orient(p, 1.0) for p in geometry.geoms])
    return orient(geometry, 1.0) if geometry.geom_type == "Polygon" else geometry


def _target(path: str | os.PathLike, overwrite: bool) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise ValueError(f"{str(path)!r} already exists; pass `overwrite=True` to replace it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_vectors(path: str | os.PathLike, shapes: Polygons, *, layer: str | None = None, driver: str | None = None,
                  rfc7946: bool = False, overwrite: bool = False) -> Path:
    """Write polygons as GeoPackage (``.gpkg``), GeoJSON (``.geojson``), FlatGeobuf or Shapefile, with the CRS.

    Each feature has ``value`` (the label), ``class`` (its name) and ``pixels`` (its area in pixels).

    Args:
        path: the file; its extension picks the format unless ``driver`` (an OGR driver name) is given.
        shapes: from :func:`polygons`.
        layer: the layer name (default: the file's stem).
        rfc7946: GeoJSON only: reproject to WGS 84 longitude/latitude as RFC 7946 requires (by default the
            source CRS is kept and named in the file, which GDAL, QGIS and geopandas read).
        overwrite: replace an existing file.
    """
    import shapely

    try:
        import pyogrio.raw
    except ImportError:
        raise ImportError('Writing GeoPackage/GeoJSON needs pyogrio: pip install "napari-segarch[geo]".') from None
    path = Path(path)
    driver = driver or _DRIVERS.get(path.suffix.lower())
    if driver is None:
        raise ValueError(f"`path` {str(path)!r}: cannot tell the format from {path.suffix!r}; use one of "
                         f"{', '.join(_DRIVERS)} or pass `driver=` (an OGR driver name).")
    if rfc7946 and driver != "GeoJSON":
        raise ValueError(f"`rfc7946` applies to GeoJSON only, not {driver}.")
    if rfc7946 and shapes.crs is None:
        raise ValueError("`rfc7946` reprojects to longitude/latitude, which needs polygons in map units with a CRS "
                         "(made with `geo=`).")
    path = _target(path, overwrite)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}{path.suffix}")
    multi = any(g.geom_type == "MultiPolygon" for g in shapes.geometries)
    geometry = shapely.to_wkb(np.array(shapes.geometries, dtype=object)) if len(shapes) else np.array([], object)
    fields = ["value", "class", "pixels"]
    field_data = [np.asarray(shapes.values), np.array(shapes.names(), dtype=object), shapes.pixels]
    try:
        pyogrio.raw.write(str(tmp), geometry, field_data, fields, layer=layer or path.stem, driver=driver,
                          geometry_type="MultiPolygon" if multi else "Polygon", crs=shapes.crs,
                          promote_to_multi=multi, layer_options={"RFC7946": "YES"} if rfc7946 else None)
        if path.exists():
            path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_qupath_geojson(path: str | os.PathLike, shapes: Polygons, *, object_type: str | None = None,
                         colors: Mapping[int, Sequence[int]] | None = None, overwrite: bool = False) -> Path:
    """Write polygons as the GeoJSON QuPath imports (File › Import objects, or drag onto the viewer).

    Args:
        path: the ``.geojson`` file.
        shapes: from :func:`polygons` in pixel coordinates (no ``geo``; QuPath places objects by level-0
            pixels) or in µm (``pixel_size=``, for tools that want physical units).
        object_type: ``"annotation"`` or ``"detection"``; default: annotations for classes, detections
            for instances (cells).
        colors: ``value -> (r, g, b)`` for the classifications (default: a fixed palette).
        overwrite: replace an existing file.
    """
    if shapes.units == "map":
        raise ValueError("QuPath places objects in slide pixels: make the polygons without `geo=` (pixel "
                         "coordinates) or with `pixel_size=` (µm), not in map units.")
    object_type = object_type or ("detection" if shapes.kind == "instances" else "annotation")
    if object_type not in ("annotation", "detection"):
        raise ValueError(f"`object_type` must be 'annotation' or 'detection', got {object_type!r}.")
    from shapely.geometry import mapping

    palette = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
               (70, 240, 240), (240, 50, 230)]
    features = []
    for geom, value, name, pixels in zip(shapes.geometries, shapes.values, shapes.names(), shapes.pixels):
        colour = list((colors or {}).get(int(value), palette[int(value) % len(palette)]))
        props = {"objectType": object_type, "isLocked": False,
                 "classification": {"name": name, "color": colour},
                 "measurements": {"label": int(value), "pixels": int(pixels)}}
        features.append({"type": "Feature", "id": str(uuid.uuid4()), "geometry": mapping(geom), "properties": props})
    path = _target(path, overwrite)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
