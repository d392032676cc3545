"""npe2 reader: Zarr / OME-Zarr (with its ``labels/``) and TIFF / OME-TIFF / pyramidal TIFF, opened lazily.

All the work is :func:`segarch.io.open_images`; this module only turns each
:class:`segarch.io.Image` into a napari layer data tuple (multiscale, scale, translate, axis
labels, units; channels split into one layer each; labels images as Labels layers, one per channel: a
panoptic ``.tif``'s classes, instances and panoptic ids). A GeoTIFF/COG that ``segarch`` wrote as labels
opens as Labels layers in map units, like the Image layer of its source scene.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from segarch.io import Image, format_of, open_images

__all__ = ["get_reader", "read", "image_to_layer_data", "split_label_channels"]

_FORMATS = ("zarr", "tiff")


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[tuple]] | None:
    """The reader for ``path`` if its name promises a format we read (``.zarr``, ``.tif``, ``.tiff``, ``.svs``).

    The probe looks at the name only (cheap); a file that is not what its extension says is claimed
    and answered by :func:`read` with a ``ValueError`` naming the file and what was expected.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or any(format_of(p) not in _FORMATS for p in paths):
        return None
    if any(not os.path.exists(p) for p in paths):
        return None
    return read


def read(path: str | list[str]) -> list[tuple]:
    """Layer data tuples for one path or several (image first, then its labels images)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers: list[tuple] = []
    for p in paths:
        for image in open_images(os.fspath(p)):
            layers.extend(image_to_layer_data(part) for part in split_label_channels(image))
    return layers


def split_label_channels(image: Image) -> list[Image]:
    """A labels image with several channels (a panoptic ``.tif``: classes, instances, panoptic) as one labels image
    per channel, named ``"<name> [<channel name>]"`` (an OME-TIFF's channel names, a GeoTIFF's band
    descriptions); any other image as it is."""
    import dataclasses

    channel = image.axes.index("C") if "C" in image.axes else None
    if not image.labels or channel is None or image.shape[channel] == 1:
        return [image]
    count = image.shape[channel]
    ome = image.metadata.get("channel_names") if isinstance(image.metadata, dict) else None  # read_tiff's
    names = (_named(ome, count) or _band_names(image, count)
             or [str(i) for i in range(count)])

    def without(values):
        return tuple(v for i, v in enumerate(values) if i != channel)

    parts = []
    for i, name in enumerate(names):
        index = tuple(i if k == channel else slice(None) for k in range(image.ndim))
        parts.append(dataclasses.replace(image, levels=[level[index] for level in image.levels],
                                         axes=image.axes.replace("C", ""), scale=without(image.scale),
                                         translate=without(image.translate), name=f"{image.name} [{name}]",
                                         level_scales=[without(s) for s in image.level_scales]))
    return parts


def _band_names(image: Image, count: int) -> list[str] | None:
    """A GeoTIFF's band descriptions (``band <n>`` where a band has none), when there is one per channel: from
    rasterio (``image.geo``), or from the GDAL metadata tifffile read when rasterio is missing."""
    gdal = image.metadata.get("gdal") if isinstance(image.metadata, dict) else None
    return _named(getattr(image.geo, "band_names", None) or (gdal or {}).get("band_names"), count)


def _named(names, count: int) -> list[str] | None:
    """``names`` when there is one, not empty, per channel."""
    names = list(names or [])
    return names if len(names) == count and all(names) else None


def image_to_layer_data(image: Image) -> tuple[Any, dict, str]:
    """One napari layer data tuple for an image (channels, if any, split by ``channel_axis``)."""
    levels = list(image.levels)
    axes, scale, translate = image.axes, list(image.scale), list(image.translate)
    kind = "labels" if image.labels else "image"
    meta: dict[str, Any] = {"name": image.name,
                            "metadata": {"axes": image.axes, "path": image.path, "source": image.metadata}}
    if image.geo is not None:  # the writer saves a GeoTIFF from a layer that carries it; results inherit it
        meta["metadata"]["geo"] = image.geo
    channel = axes.index("C") if "C" in axes else None
    if kind == "labels" and channel is not None and image.shape[channel] == 1:
        # A labels image with a single channel: drop the axis napari would show as a slider.
        index = tuple(0 if i == channel else slice(None) for i in range(image.ndim))
        levels = [level[index] for level in levels]
        axes = axes.replace("C", "")
        del scale[channel], translate[channel]
        channel = None
    if kind == "image" and image.rgb:
        meta["rgb"] = True
        spatial = axes[:-1]
        scale, translate = scale[:-1], translate[:-1]
    elif kind == "image" and channel is not None:
        n = image.shape[channel]
        meta["channel_axis"] = channel
        meta["name"] = [f"{image.name} [{c}]" for c in range(n)] if n > 1 else image.name
        meta.update(_omero_channels(image.metadata, n, image.name))
        spatial = axes.replace("C", "")
        del scale[channel], translate[channel]
    else:
        spatial = axes
    meta["scale"] = tuple(scale)
    meta["translate"] = tuple(translate)
    meta["axis_labels"] = tuple(a.lower() for a in spatial)
    if any(image.units.get(a) for a in spatial):
        meta["units"] = tuple(image.units.get(a) or "pixel" for a in spatial)
    meta["multiscale"] = len(levels) > 1
    if kind == "labels":
        features = _label_features(image.metadata)
        if features:
            meta["features"] = features
    data = levels if len(levels) > 1 else levels[0]
    return data, meta, kind


def _omero_channels(attrs: dict, n: int, name: str) -> dict[str, Any]:
    """Channel names and display windows from OME-Zarr ``omero`` metadata, where it fits the channels."""
    omero = attrs.get("omero") if isinstance(attrs, dict) else None
    channels = omero.get("channels") if isinstance(omero, dict) else None
    if not isinstance(channels, list) or len(channels) != n or not all(isinstance(c, dict) for c in channels):
        return {}
    out: dict[str, Any] = {}
    labels = [c.get("label") for c in channels]
    if all(isinstance(label, str) and label for label in labels):
        out["name"] = [f"{name} [{label}]" for label in labels] if n > 1 else f"{name} [{labels[0]}]"
    windows = [c.get("window") or {} for c in channels]
    if all(isinstance(w.get("start"), (int, float)) and isinstance(w.get("end"), (int, float))
           and w["end"] > w["start"] for w in windows):
        limits = [(float(w["start"]), float(w["end"])) for w in windows]
        out["contrast_limits"] = limits if n > 1 else limits[0]
    return out


def _label_features(attrs: dict) -> dict[str, list] | None:
    """OME-Zarr ``image-label`` properties as a napari features table (one row per label value)."""
    image_label = attrs.get("image-label") if isinstance(attrs, dict) else None
    props = image_label.get("properties") if isinstance(image_label, dict) else None
    if not props:
        return None
    keys = sorted({k for p in props for k in p if k != "label-value"})
    rows = sorted((p for p in props if "label-value" in p), key=lambda p: p["label-value"])
    table = {"index": [int(p["label-value"]) for p in rows]}
    for k in keys:
        table[k] = [p.get(k) for p in rows]
    return table

