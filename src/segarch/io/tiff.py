"""TIFF: lazy reading through tifffile's Zarr interface, and OME-TIFF writing with a SubIFD pyramid.

Reading wraps the first image series (all its pyramid levels: OME-TIFF SubIFDs, whole-slide
SVS-style reduced pages) as a Zarr store and opens each level with Dask, so only the tiles or
strips a computation touches are ever read. The file stays open while the arrays are in use.

Writing produces tiled, zlib-compressed OME-TIFF (BigTIFF when large), with physical pixel sizes
when the scale is known, and computes the data band by band, so a Dask array larger than memory
can be written.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Iterator, Sequence

import dask.array as da
import numpy as np

from segarch.io.image import AXES, Image, check_axes, check_scale, guess_axes, ome_unit, stem, unit_name
from segarch.io.pyramid import pyramid

__all__ = ["read_tiff", "write_tiff", "read_annotations", "is_tiff", "LABELS_MARKER"]

_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
#: Written in the OME ``Description`` of labels images, so they re-open as labels.
LABELS_MARKER = "segarch:labels"


def is_tiff(path: str | os.PathLike) -> bool:
    """Cheap probe: the file starts with a TIFF or BigTIFF header."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) in _MAGIC
    except OSError:
        return False


def _axes_from_tifffile(axes: str) -> str:
    """tifffile's axes letters (``S`` samples, ``I``/``Q`` unknown, ...) mapped onto ``TCZYX``."""
    mapped = []
    for a in axes:
        if a in AXES and a not in mapped:
            mapped.append(a)
        elif a == "S" and "C" not in mapped and "C" not in axes:
            mapped.append("C")
        else:
            mapped.append("?")
    for i, a in enumerate(mapped):
        if a == "?":
            free = [c for c in "ZTC" if c not in mapped]
            if not free:
                raise ValueError(f"TIFF axes {axes!r} cannot be mapped onto {AXES!r}.")
            mapped[i] = free[0]
    return "".join(mapped)


def _ome_geometry(tif, axes: str) -> tuple[tuple[float, ...] | None, dict[str, str], str | None, str]:
    import tifffile

    meta = tifffile.xml2dict(tif.ome_metadata).get("OME", {})
    image = meta.get("Image", {})
    image = image[0] if isinstance(image, list) else image
    pixels = image.get("Pixels", {})
    scale, units = [], {}
    for a in axes:
        size = pixels.get(f"PhysicalSize{a}") if a in "ZYX" else (pixels.get("TimeIncrement") if a == "T" else None)
        scale.append(float(size) if size not in (None, "") and float(size) > 0 else 1.0)
        if size not in (None, ""):
            default = "µm" if a in "ZYX" else "s"
            unit = unit_name(pixels.get(f"PhysicalSize{a}Unit" if a != "T" else "TimeIncrementUnit", default))
            if unit:
                units[a] = unit
    return tuple(scale), units, image.get("Name"), str(image.get("Description") or "")


def _ome_channel_names(tif) -> list[str]:
    """The first image's OME ``Channel`` names, in order (``""`` for a channel without one; ``[]`` for none)."""
    import tifffile

    image = tifffile.xml2dict(tif.ome_metadata).get("OME", {}).get("Image", {})
    image = image[0] if isinstance(image, list) else image
    channels = image.get("Pixels", {}).get("Channel") or []
    return [str(c.get("Name") or "") if isinstance(c, dict) else ""
            for c in (channels if isinstance(channels, list) else [channels])]


def _ome_translate(tif, axes: str) -> tuple[float, ...]:
    """Z/Y/X origin from the OME planes' ``Position*`` (the first plane: Z of the first slice)."""
    import tifffile

    image = tifffile.xml2dict(tif.ome_metadata).get("OME", {}).get("Image", {})
    image = image[0] if isinstance(image, list) else image
    planes = image.get("Pixels", {}).get("Plane") or {}
    first = planes[0] if isinstance(planes, list) and planes else planes if isinstance(planes, dict) else {}
    out = []
    for a in axes:
        value = first.get(f"Position{a}") if a in "ZYX" else None
        try:
            out.append(float(value) if value not in (None, "") else 0.0)
        except (TypeError, ValueError):
            out.append(0.0)
    return tuple(out)


def _imagej_geometry(tif, page, axes: str) -> tuple[tuple[float, ...] | None, dict[str, str]]:
    meta = tif.imagej_metadata or {}
    scale, units = [1.0] * len(axes), {}
    unit = unit_name(meta.get("unit"))
    for a, tag in (("X", "XResolution"), ("Y", "YResolution")):
        if a in axes and tag in page.tags:
            num, den = page.tags[tag].value
            if num and den:
                scale[axes.index(a)] = den / num
                if unit:
                    units[a] = unit
    if "Z" in axes and meta.get("spacing"):
        scale[axes.index("Z")] = float(meta["spacing"])
        if unit:
            units["Z"] = unit
    return tuple(scale), units


def _per_axis(values: Sequence[float], order: list[int]) -> list[float]:
    if len(values) != len(order):
        raise ValueError(f"`translate` must have one value per axis ({len(order)}), got {list(values)!r}.")
    return [values[i] for i in order]


def _plane_positions(shape, axes: str, rgb: bool, translate: list[float], scale: list[float], units: dict) -> dict:
    """OME ``Plane`` positions for every plane (T, C, Z, in file order): the origin, Z advancing per slice."""
    origin = dict(zip(axes, translate))
    step = dict(zip(axes, scale))
    plane_axes = [i for i, a in enumerate(axes) if a not in "YX" and not (rgb and a == "C")]
    planes: dict[str, list] = {f"Position{a}": [] for a in "ZYX" if a in axes}
    for index in np.ndindex(*[shape[i] for i in plane_axes]):
        where = dict(zip((axes[i] for i in plane_axes), index))
        for a in "ZYX":
            if a in axes:
                planes[f"Position{a}"].append(origin[a] + (where.get("Z", 0) * step["Z"] if a == "Z" else 0.0))
    for a in "ZYX":
        if a in axes:
            planes[f"Position{a}Unit"] = [ome_unit(units.get(a, "micrometer")) or "µm"] * len(planes[f"Position{a}"])
    return planes


def read_tiff(path: str | os.PathLike) -> Image:
    """Open a TIFF lazily: BigTIFF, OME-TIFF, ImageJ hyperstacks, pyramidal (SubIFD or SVS-style) files.

    Raises:
        ValueError: the file does not start with a TIFF header, or tifffile cannot parse it.
    """
    import tifffile
    import zarr

    path = str(path)
    if not os.path.isfile(path):
        raise ValueError(f"Cannot open {path!r}: no such file.")
    if not is_tiff(path):
        raise ValueError(f"{path!r} is not a TIFF file: expected a TIFF or BigTIFF header (b'II*\\0' or b'MM\\0*'), "
                         f"found {_head(path)!r}.")
    try:
        tif = tifffile.TiffFile(path)
        series = tif.series[0]
        store = series.aszarr(multiscales=True)
        group = zarr.open(store=store, mode="r")
        levels = [da.from_zarr(group[str(i)]) for i in range(len(series.levels))]
    except Exception as err:  # a truncated or foreign file raises anything from struct to KeyError
        raise ValueError(f"{path!r} is not a readable TIFF image: {type(err).__name__}: {err}") from None
    levels = [_sensible_chunks(level) for level in levels]
    axes = _axes_from_tifffile(series.axes)
    page = series.pages[0] if series.pages else tif.pages[0]
    scale: tuple[float, ...] | None = None
    units: dict[str, str] = {}
    translate: tuple[float, ...] = ()
    name, description, metadata = None, "", {"tifffile_axes": series.axes, "kind": series.kind}
    try:
        if tif.is_ome:
            scale, units, name, description = _ome_geometry(tif, axes)
            translate = _ome_translate(tif, axes)
            metadata["ome"] = tif.ome_metadata
            metadata["channel_names"] = _ome_channel_names(tif)
        elif tif.is_imagej:
            scale, units = _imagej_geometry(tif, page, axes)
            metadata["imagej"] = tif.imagej_metadata
        elif tif.is_svs:
            svs = tifffile.tifffile.svs_description_metadata(page.description)
            metadata["svs"] = svs
            if svs.get("MPP"):
                scale = tuple(float(svs["MPP"]) if a in "YX" else 1.0 for a in axes)
                units = {"Y": "micrometer", "X": "micrometer"}
    except (ValueError, TypeError, KeyError, AttributeError, ZeroDivisionError) as err:
        kind = "OME-XML" if tif.is_ome else "ImageJ" if tif.is_imagej else "SVS"
        raise ValueError(f"{path!r} has malformed {kind} metadata (pixel sizes or units): {type(err).__name__}: "
                         f"{err}.") from None
    gdal = _gdal_metadata(page)
    if gdal:
        metadata["gdal"] = gdal
    # tifffile says I/Q for pages or dimensions of unknown meaning: those axes are a guess.
    guessed = any(a not in AXES and a != "S" for a in series.axes)
    labels = LABELS_MARKER in description or gdal.get("items", {}).get("segarch_kind") == "labels"
    return Image(levels=levels, axes=axes, scale=scale or (), translate=translate, name=name or stem(path),
                 units=units, labels=labels, metadata=metadata, path=path, axes_guessed=guessed)


def _gdal_metadata(page) -> dict[str, Any]:
    """A GDAL-written TIFF's metadata items and band descriptions (a GeoTIFF opened without rasterio keeps its
    ``segarch_kind=labels`` marker and band names); ``{}`` when the page has no parsable GDAL_METADATA tag."""
    import xml.etree.ElementTree as ElementTree

    tag = page.tags.get(42112)
    try:
        root = ElementTree.fromstring(tag.value) if tag is not None and isinstance(tag.value, str) else None
    except ElementTree.ParseError:
        return {}
    if root is None:
        return {}
    items = {e.get("name"): (e.text or "") for e in root.iter("Item") if e.get("name") and e.get("sample") is None}
    bands = {int(e.get("sample")): (e.text or "") for e in root.iter("Item")
             if e.get("role") == "description" and (e.get("sample") or "").isdigit()}
    names = [bands.get(i, "") for i in range(max(bands) + 1)] if bands else []
    return {"items": items, "band_names": names}


def read_annotations(path: str | os.PathLike) -> dict[str, str]:
    """The OME ``MapAnnotation`` key/value pairs of a TIFF (``{}`` when it has none, or no OME-XML)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        xml = tif.ome_metadata
    if not xml:
        return {}
    found = tifffile.xml2dict(xml)["OME"].get("StructuredAnnotations") or {}
    maps = found.get("MapAnnotation") or []
    pairs = {}
    for annotation in maps if isinstance(maps, list) else [maps]:
        items = (annotation.get("Value") or {}).get("M") or []
        for item in items if isinstance(items, list) else [items]:
            pairs[str(item["K"])] = str(item.get("value", ""))
    return pairs


def _head(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(8)


def _sensible_chunks(level: da.Array) -> da.Array:
    # Strip TIFFs can have one chunk per row: merge rows so the Dask graph stays small.
    if level.ndim >= 2:
        rows = level.chunks[-2] if len(level.chunks[-2]) else (0,)
        axis = -2
        if level.ndim >= 3 and level.shape[-1] in (3, 4) and level.chunks[-1] == (level.shape[-1],):
            axis, rows = -3, level.chunks[-3]
        if max(rows) < 128 and len(rows) > 1:
            step = max(rows) * max(1, 256 // max(rows))
            level = level.rechunk({level.ndim + axis: step})
    return level


# ---------------------------------------------------------------------------------------------------- writing


def _tiles(level: da.Array, tile: tuple[int, int], rgb: bool) -> Iterator[np.ndarray]:
    """Tiles in TIFF order (page by page, row by row), computing one band of rows at a time."""
    spatial = 3 if rgb else 2
    leading = level.shape[:-spatial]
    height, width = level.shape[-spatial], level.shape[-spatial + 1]
    for index in np.ndindex(*leading) if leading else [()]:
        plane = level[index]
        for y in range(0, height, tile[0]):
            band = np.asarray(plane[y: y + tile[0]])
            for x in range(0, width, tile[1]):
                yield band[:, x: x + tile[1]]


def write_tiff(path: str | os.PathLike, data, *, axes: str | None = None, scale: Sequence[float] | None = None,
               translate: Sequence[float] | None = None,
               units: dict[str, str] | str | None = None, name: str | None = None, labels: bool = False,
               levels: int | None = 1, tile: int | Sequence[int] = 256, compression: str = "zlib",
               bigtiff: bool | None = None, overwrite: bool = False,
               annotations: dict[str, str] | None = None, channel_names: Sequence[str] | None = None) -> Path:
    """Write an image or labels image as a tiled OME-TIFF, optionally with a SubIFD pyramid.

    Args:
        path: the ``.tif``/``.tiff`` file to write.
        data: a NumPy/Dask/Zarr array (or a list of pyramid levels, whose first one is used).
        axes: letters from ``TCZYX`` (default: guessed). Stored in OME order (T, C, Z, Y, X); channels
            last with 3 or 4 uint8 values are written as RGB(A) samples.
        scale: pixel size per axis; Z/Y/X go to OME ``PhysicalSize*``.
        translate: the image's origin per axis (physical units); Z/Y/X go to the OME planes' ``Position*``.
        units: NGFF unit names per axis letter, or one for all spatial axes (default micrometre when
            a scale is given).
        name: the OME image name (default: the file name).
        labels: marks the file as a labels image (re-opens as labels) and pyramids by mode.
        levels: pyramid levels including level 0 (``None``: halve until Y and X fit in 256 pixels).
        tile: tile size (Y, X), multiples of 16.
        compression: a tifffile compression name (``"zlib"``, ``"zstd"``, ``None``).
        bigtiff: force BigTIFF on/off (default: when the data may exceed 2 GiB).
        overwrite: replace an existing file.
        annotations: text key/value pairs (e.g. the provenance of a result) kept as the image's OME
            ``MapAnnotation``, which OME readers show; :func:`read_annotations` gives them back.
        channel_names: one OME ``Channel`` name per index of the ``C`` axis (Fiji and napari show them).

    Returns:
        The path written.
    """
    import tifffile

    path = Path(path)
    if isinstance(data, (list, tuple)):
        if not data:
            raise ValueError("`data` must be an array or a non-empty list of pyramid levels, got an empty list.")
        data = data[0]
    arr = data if isinstance(data, da.Array) else da.asarray(data)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.dtype == np.int64 or arr.dtype == np.uint64:
        # OME-TIFF has no 64-bit integer pixel type; labels rarely need more than 32 bits.
        if labels and arr.size and int(arr.max().compute()) < 2 ** 32 and int(arr.min().compute()) >= 0:
            arr = arr.astype(np.uint32)
        elif labels and arr.size and int(abs(arr).max().compute()) < 2 ** 31:
            arr = arr.astype(np.int32)
    axes = check_axes(axes, arr.ndim) if axes is not None else guess_axes(arr.shape)
    scale_in = check_scale(scale, axes)
    rgb = axes.endswith("C") and arr.shape[-1] in (3, 4) and arr.dtype == np.uint8 and not labels
    order = sorted(range(len(axes)), key=lambda i: AXES.index(axes[i]) + (10 if rgb and axes[i] == "C" else 0))
    arr = arr.transpose(order) if order != list(range(len(axes))) else arr
    axes = "".join(axes[i] for i in order)
    scale_out = [scale_in[i] for i in order]
    tile = (tile, tile) if isinstance(tile, (int, np.integer)) else tuple(tile)
    if len(tile) != 2 or any(t % 16 or t <= 0 for t in tile):
        raise ValueError(f"`tile` must be a positive multiple of 16 (or two of them), got {tile!r}.")
    if path.exists() and not overwrite:
        raise ValueError(f"{str(path)!r} already exists; pass `overwrite=True` to replace it.")

    if isinstance(units, str):
        units = {a: units for a in "ZYX"}
    units = {k.upper(): unit_name(v) for k, v in (units or {}).items() if unit_name(v)}
    metadata: dict[str, Any] = {"axes": axes[:-1] + "S" if rgb else axes, "Name": name or stem(path)}
    if labels:
        metadata["Description"] = LABELS_MARKER
    if channel_names is not None:
        if "C" not in axes or len(channel_names) != arr.shape[axes.index("C")]:
            raise ValueError(f"`channel_names` must name each index of the C axis, got {list(channel_names)!r} for "
                             f"axes {axes!r} of shape {tuple(arr.shape)}.")
        metadata["Channel"] = {"Name": [str(n) for n in channel_names]}
    if annotations:
        metadata["MapAnnotation"] = {str(k): str(v) for k, v in annotations.items()}
    for a, s in zip(axes, scale_out):
        if a in "ZYX" and (scale is not None):
            metadata[f"PhysicalSize{a}"] = s
            metadata[f"PhysicalSize{a}Unit"] = ome_unit(units.get(a, "micrometer")) or "µm"
    if translate is not None and any(translate):
        metadata["Plane"] = _plane_positions(arr.shape, axes, rgb, [float(t) for t in _per_axis(translate, order)],
                                             scale_out, units)
    level_arrays = pyramid(arr, axes, labels=labels, levels=levels, downscale_axes="YX")
    if bigtiff is None:
        bigtiff = sum(lv.nbytes for lv in level_arrays) > 2 ** 31 - 2 ** 26
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tifffile.TiffWriter(tmp, bigtiff=bigtiff, ome=True) as tw:
            for i, level in enumerate(level_arrays):
                kwargs: dict[str, Any] = dict(shape=level.shape, dtype=level.dtype, tile=tile,
                                              compression=compression, photometric="rgb" if rgb else "minisblack")
                if i == 0:
                    kwargs.update(metadata=metadata, subifds=len(level_arrays) - 1)
                    yx = [scale_out[axes.index(a)] for a in "YX"]
                    if scale is not None and units.get("Y", "micrometer") == "micrometer":
                        # Also as TIFF resolution tags (pixels per cm), for readers that ignore OME-XML.
                        kwargs.update(resolution=(1e4 / yx[1], 1e4 / yx[0]), resolutionunit="CENTIMETER")
                else:
                    kwargs.update(subfiletype=1, metadata=None)
                tw.write(_tiles(level, tile, rgb), **kwargs)
        if path.exists():
            path.unlink()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path

