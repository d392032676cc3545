"""Zarr stores (v2 and v3) and OME-Zarr (NGFF 0.4 on Zarr v2, 0.5 on Zarr v3): lazy reading and writing.

Reading opens arrays with :func:`dask.array.from_zarr`, so nothing but metadata is read until a
chunk is computed. Writing goes to a temporary sibling folder that is renamed at the end, so an
interrupted write never leaves a half-written image under the requested name.

Spec: https://ngff.openmicroscopy.org/0.4/ and https://ngff.openmicroscopy.org/0.5/ (``multiscales``
with ``axes`` and per-level ``coordinateTransformations``; a labels image is a multiscales image
with ``image-label`` metadata, listed in the parent image's ``labels/`` group).
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Sequence

import dask.array as da
import numpy as np

from segarch.io.image import AXES, SPATIAL, Image, check_axes, check_scale, guess_axes, level_factor, stem, unit_name
from segarch.io.pyramid import pyramid, pyramid_shapes

__all__ = ["read_zarr", "read_zarr_node", "list_labels", "write_ome_zarr", "add_labels", "add_pyramid", "is_zarr_store",
           "ome_attrs", "add_level_metadata", "NGFF_VERSIONS"]

NGFF_VERSIONS = ("0.4", "0.5")
_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zattrs")
_AXIS_TYPES = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}


def is_zarr_store(path: str | os.PathLike) -> bool:
    """Cheap probe: a folder holding Zarr v2 or v3 metadata."""
    path = Path(path)
    return path.is_dir() and any((path / m).is_file() for m in _MARKERS)


def _open(path: str | os.PathLike):
    import zarr

    path = Path(path)
    if not path.exists():
        raise ValueError(f"Cannot open {str(path)!r}: no such file or folder.")
    if not is_zarr_store(path):
        raise ValueError(f"{str(path)!r} is not a Zarr store: expected a folder with Zarr metadata "
                         f"(zarr.json for Zarr v3, .zgroup/.zarray for Zarr v2).")
    try:
        return zarr.open(store=str(path), mode="r")
    except Exception as err:  # zarr raises many types for broken metadata; the user needs only one message.
        raise ValueError(f"{str(path)!r} is not a readable Zarr store: {type(err).__name__}: {err}") from None


def _ome_attrs(node) -> dict[str, Any]:
    attrs = dict(node.attrs)
    # NGFF 0.5 nests everything under "ome"; 0.4 and earlier keep it at the top level.
    if isinstance(attrs.get("ome"), dict):
        return dict(attrs["ome"])
    return attrs


def list_labels(path: str | os.PathLike) -> list[str]:
    """Names of the labels images of an OME-Zarr image (its ``labels/`` group); empty if none."""
    group = _open(path)
    if not hasattr(group, "group_keys") or "labels" not in set(group.group_keys()):
        return []
    names = _ome_attrs(group["labels"]).get("labels")
    if not isinstance(names, list):
        names = sorted(group["labels"].group_keys())
    return [str(n) for n in names if str(n) in set(group["labels"].group_keys())]


def read_zarr(path: str | os.PathLike, *, labels_name: str | None = None) -> Image:
    """Open a Zarr store lazily: an OME-Zarr multiscale image, a labels image in it, or a plain array.

    Args:
        path: the ``.zarr`` folder (Zarr v2 or v3).
        labels_name: open the OME-Zarr image's ``labels/<labels_name>`` instead of the image.

    Raises:
        ValueError: not a Zarr store, unreadable metadata, or no image array in it.
    """
    path = str(path)
    node = _open(path)
    if labels_name is not None:
        if labels_name not in list_labels(path):
            raise ValueError(f"`labels_name` {labels_name!r} is not a labels image of {path!r}; "
                             f"it has {list_labels(path) or 'none'}.")
        return read_zarr(os.path.join(path, "labels", labels_name))
    return read_zarr_node(node, path)


def read_zarr_node(node, path: str = "Zarr group") -> Image:
    """An open Zarr array or group (as :func:`read_zarr` reads a path): an OME-Zarr multiscale image, a
    bioformats2raw layout's first series, or a plain array (a group's first array). ``path`` names it in
    messages."""
    import zarr

    if isinstance(node, zarr.Array):
        return _plain_array(node, path)
    attrs = _ome_attrs(node)
    if "multiscales" in attrs:
        return _multiscale(node, attrs, path)
    if "bioformats2raw.layout" in attrs and "0" in set(node.group_keys()):
        # bioformats2raw output: the first series is the image at "0".
        return read_zarr_node(node["0"], os.path.join(path, "0"))
    if "plate" in attrs or "well" in attrs:
        kind = "plate" if "plate" in attrs else "well"
        raise ValueError(f"{path!r} is an OME-Zarr HCS {kind}, not an image: open one of its field images "
                         f"(e.g. {path!r}/<row>/<column>/<field>).")
    arrays = sorted(node.array_keys())
    if arrays:
        return _plain_array(node[arrays[0]], path)
    if "labels" in set(node.group_keys()) or "labels" in attrs:
        raise ValueError(f"{path!r} holds only a 'labels' group and no image; open one of its labels with "
                         f"`labels_name`.")
    raise ValueError(f"{path!r} is a Zarr group with no image: expected OME-Zarr 'multiscales' metadata "
                     f"or an array in it.")


def _plain_array(array, path: str) -> Image:
    names = getattr(array.metadata, "dimension_names", None) or array.attrs.get("_ARRAY_DIMENSIONS")
    axes = "".join(str(n).upper() for n in names) if names else ""
    guessed = False
    try:
        axes = check_axes(axes, array.ndim)
    except ValueError:
        axes, guessed = guess_axes(array.shape), True
    return Image(levels=[da.from_zarr(array)], axes=axes, name=stem(path), path=path,
                 metadata=dict(array.attrs), axes_guessed=guessed)


def _transforms(items: Sequence[dict] | None, ndim: int, path: str = "the image") -> tuple[np.ndarray, np.ndarray]:
    """Scale and translation of a list of NGFF ``coordinateTransformations``; malformed ones are refused."""
    scale, translate = np.ones(ndim), np.zeros(ndim)
    if items is None:
        return scale, translate
    if not isinstance(items, list):
        raise ValueError(f"{path!r} has malformed OME-Zarr 'coordinateTransformations': expected a list, got "
                         f"{items!r:.200}.")
    for t in items:
        kind = t.get("type") if isinstance(t, dict) else None
        key = {"scale": "scale", "translation": "translation"}.get(kind)
        if key is None or key not in t:
            if kind == "identity" or (kind in ("scale", "translation") and "path" in t):
                continue  # nothing to apply / values stored in an array: the image stays at unit scale
            raise ValueError(f"{path!r} has a malformed OME-Zarr coordinate transformation {t!r:.200}: expected "
                             f"{{'type': 'scale', 'scale': [...]}} or {{'type': 'translation', 'translation': [...]}}.")
        values = t[key]
        ok = isinstance(values, list) and len(values) == ndim and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in values)
        if not ok or (key == "scale" and any(v <= 0 for v in values)):
            raise ValueError(f"{path!r} has a malformed OME-Zarr {key} {values!r:.200}: expected {ndim} finite "
                             f"numbers{' > 0' if key == 'scale' else ''}, one per axis.")
        if key == "scale":
            scale = scale * np.asarray(values, float)
        else:
            translate = translate + np.asarray(values, float)
    return scale, translate


def _multiscale(group, attrs: dict, path: str) -> Image:
    ms = attrs["multiscales"][0] if isinstance(attrs["multiscales"], list) and attrs["multiscales"] else None
    if not isinstance(ms, dict) or not ms.get("datasets"):
        raise ValueError(f"{path!r} has malformed OME-Zarr 'multiscales' metadata: expected a list with "
                         f"'datasets', got {attrs['multiscales']!r:.200}.")
    try:
        levels = [da.from_zarr(group[d["path"]]) for d in ms["datasets"]]
    except Exception as err:
        raise ValueError(f"{path!r}: an OME-Zarr level listed in 'multiscales' cannot be opened: "
                         f"{type(err).__name__}: {err}") from None
    ndim = levels[0].ndim
    axes_meta = ms.get("axes")
    units: dict[str, str] = {}
    if axes_meta:
        letters = "".join((a["name"] if isinstance(a, dict) else str(a))[:1].upper() for a in axes_meta)
        for a in axes_meta:
            if isinstance(a, dict) and unit_name(a.get("unit")):
                units[a["name"][:1].upper()] = unit_name(a["unit"])
    else:  # NGFF 0.1/0.2 carry no axes: they are TCZYX by spec
        letters = AXES[-ndim:]
    guessed = False
    try:
        axes = check_axes(letters, ndim)
    except ValueError:
        axes, guessed = guess_axes(levels[0].shape), True
        units = {}
    global_scale, global_translate = _transforms(ms.get("coordinateTransformations"), ndim, path)
    level_scales, translate = [], None
    for d in ms["datasets"]:
        s, t = _transforms(d.get("coordinateTransformations"), ndim, path)
        level_scales.append(tuple(float(v) for v in s * global_scale))
        if translate is None:
            translate = t * global_scale + global_translate
    if any(not (v > 0) for v in level_scales[0]):
        level_scales = []
    is_labels = "image-label" in attrs
    name = ms.get("name") or stem(path)
    return Image(levels=levels, axes=axes, scale=level_scales[0] if level_scales else (), translate=tuple(translate),
                 name=str(name), units=units, labels=is_labels, metadata=attrs, path=path,
                 level_scales=level_scales, axes_guessed=guessed)


# ---------------------------------------------------------------------------------------------------- writing


def _prepare(data, axes: str | None) -> tuple[list[da.Array], str]:
    """Levels as Dask arrays and their axes in NGFF order (T, C, then Z, Y, X)."""
    levels = list(data) if isinstance(data, (list, tuple)) else [data]
    if not levels:
        raise ValueError("`data` must be an array or a non-empty list of pyramid levels, got an empty list.")
    levels = [lv if isinstance(lv, da.Array) else da.asarray(lv) for lv in levels]
    if levels[0].dtype == bool:
        levels = [lv.astype(np.uint8) for lv in levels]
    axes = check_axes(axes, levels[0].ndim) if axes is not None else guess_axes(levels[0].shape)
    # NGFF requires time, then channel, then space; transpose rather than write invalid metadata.
    order = sorted(range(len(axes)), key=lambda i: AXES.index(axes[i]))
    if order != list(range(len(axes))):
        levels = [lv.transpose(order) for lv in levels]
    return levels, "".join(axes[i] for i in order)


def _chunk_shape(shape: Sequence[int], axes: str, chunks) -> tuple[int, ...]:
    if chunks is None:
        default = {"T": 1, "C": 1, "Z": 32, "Y": 512, "X": 512}
        return tuple(max(1, min(n, default[a])) for n, a in zip(shape, axes))
    chunks = (chunks,) * len(shape) if isinstance(chunks, (int, np.integer)) else tuple(chunks)
    if len(chunks) != len(shape) or not all(isinstance(c, (int, np.integer)) and c > 0 for c in chunks):
        raise ValueError(f"`chunks` must be a positive integer or {len(shape)} of them (axes {axes!r}), got "
                         f"{chunks!r}.")
    return tuple(max(1, min(int(n), int(c))) for n, c in zip(shape, chunks))


def _replace_target(path: Path, overwrite: bool, *, dry_run: bool = False) -> None:
    if not path.exists():
        return
    if not overwrite:
        raise ValueError(f"{str(path)!r} already exists; pass `overwrite=True` to replace it.")
    if path.is_dir() and not is_zarr_store(path):
        raise ValueError(f"Refusing to overwrite {str(path)!r}: it exists and is not a Zarr store.")
    if path.is_file():
        raise ValueError(f"Refusing to overwrite {str(path)!r}: it is a file, not a Zarr store.")
    if not dry_run:
        shutil.rmtree(path)


def _multiscales_meta(axes: str, level_scales, translate, units, name, version, labels) -> dict:
    axes_meta = []
    for a in axes:
        entry = {"name": a.lower(), "type": _AXIS_TYPES[a]}
        if units.get(a):
            entry["unit"] = units[a]
        axes_meta.append(entry)
    datasets = []
    for i, s in enumerate(level_scales):
        transforms = [{"type": "scale", "scale": [float(v) for v in s]}]
        if any(translate):
            transforms.append({"type": "translation", "translation": [float(v) for v in translate]})
        datasets.append({"path": str(i), "coordinateTransformations": transforms})
    ms = {"name": name, "axes": axes_meta, "datasets": datasets,
          "type": "mode" if labels else "mean",
          "metadata": {"method": "segarch.io.pyramid." + ("mode_reduce" if labels else "mean_reduce"),
                       "version": _segarch_version()}}
    if version == "0.4":
        ms = {"version": "0.4", **ms}
    return ms


def ome_attrs(axes: str, scale: Sequence[float], *, name: str, labels: bool, version: str = "0.5",
              units: dict[str, str] | None = None, properties: list[dict] | None = None) -> dict[str, Any]:
    """The group attributes of a single-level OME-Zarr image (``"0"``) with ``axes`` in NGFF order.

    NGFF 0.5 (Zarr v3) nests them under ``"ome"``; 0.4 (Zarr v2) keeps them at the top level. A labels
    image gets ``image-label`` metadata (with ``properties``, e.g. class names, when given).
    """
    if version not in NGFF_VERSIONS:
        raise ValueError(f"`version` must be one of {NGFF_VERSIONS}, got {version!r}.")
    ms = _multiscales_meta(axes, [tuple(float(v) for v in scale)], (0.0,) * len(axes), units or {}, name, version,
                           labels)
    meta: dict[str, Any] = {"multiscales": [ms]}
    if labels:
        image_label: dict[str, Any] = {"version": "0.4"} if version == "0.4" else {}
        if properties:
            image_label["properties"] = list(properties)
        meta["image-label"] = image_label
    return meta if version == "0.4" else {"ome": {"version": "0.5", **meta}}


def add_level_metadata(attrs: dict[str, Any], factors: Sequence[Sequence[float]], *, labels: bool) -> bool:
    """List coarse levels ``1``, ``2``, … in the ``multiscales`` of group ``attrs`` (made by :func:`ome_attrs`).

    ``factors``: per coarse level, its pixel size ÷ level 0's per axis; each level's scale is level 0's times
    them (its translation is kept). ``attrs`` is changed in place (NGFF 0.5 nests the metadata under ``"ome"``,
    0.4 keeps it at the top level). Returns ``False`` when ``attrs`` holds no multiscales to extend.
    """
    holder = attrs["ome"] if isinstance(attrs.get("ome"), dict) and "multiscales" in attrs["ome"] else attrs
    multiscales = holder.get("multiscales")
    if not multiscales:
        return False
    datasets = multiscales[0]["datasets"]
    base = datasets[0].get("coordinateTransformations", [])
    del datasets[1:]
    for k, level_factors in enumerate(factors, start=1):
        transforms = [dict(t) for t in base]
        for t in transforms:
            if t.get("type") == "scale":
                t["scale"] = [float(v) * float(f) for v, f in zip(t["scale"], level_factors)]
        datasets.append({"path": str(k), "coordinateTransformations": transforms})
    multiscales[0]["type"] = "mode" if labels else "mean"
    return True


def _segarch_version() -> str:
    import segarch

    return segarch.__version__


def write_ome_zarr(path: str | os.PathLike, data, *, axes: str | None = None, scale: Sequence[float] | None = None,
                   translate: Sequence[float] | None = None, units: dict[str, str] | str | None = None,
                   labels: bool = False, name: str | None = None, chunks=None, levels: int | None = None,
                   downscale_axes: str = "YX", version: str = "0.4", overwrite: bool = False,
                   colors: dict[int, Sequence[float]] | None = None, properties: list[dict] | None = None) -> Path:
    """Write an image (or a labels image) as OME-Zarr with a multiscale pyramid.

    Args:
        path: the ``.zarr`` folder to create.
        data: a NumPy/Dask/Zarr array, or a list of pyramid levels (written as given).
        axes: letters from ``TCZYX`` for the dimensions of ``data`` (default: guessed from the shape).
            They are stored in NGFF order (T, C, Z, Y, X): data with other orders is transposed.
        scale: level-0 pixel size per axis of ``data`` (default ones).
        translate: position of the first pixel per axis of ``data`` (default zeros).
        units: NGFF unit names per axis letter (``{"Y": "micrometer", ...}``), or one name for all spatial axes.
        labels: a labels image: mode-downsampled pyramid and ``image-label`` metadata.
        name: the image name stored in the metadata (default: the file name).
        chunks: chunk shape, one size or one per axis of ``axes`` (default 1 for T/C, 32 for Z, 512 for Y/X).
        levels: number of pyramid levels (default: halve until Y and X fit in 256 pixels).
        downscale_axes: the axes halved at each level.
        version: NGFF version, ``"0.4"`` (Zarr v2) or ``"0.5"`` (Zarr v3).
        overwrite: replace an existing Zarr store at ``path``.
        colors: labels only: ``{label: (r, g, b, a)}`` in 0-1, stored as ``image-label`` colours.
        properties: labels only: per-label dicts with a ``"label-value"`` key (e.g. class names).

    Returns:
        The path written.
    """
    import zarr

    if version not in NGFF_VERSIONS:
        raise ValueError(f"`version` must be one of {NGFF_VERSIONS}, got {version!r}.")
    path = Path(path)
    first = data[0] if isinstance(data, (list, tuple)) and data else data
    raw_axes = check_axes(axes, np.ndim(first)) if axes is not None else guess_axes(np.shape(first))
    given, axes_out = _prepare(data, raw_axes)
    scale_in = check_scale(scale, raw_axes)
    translate_in = tuple(float(t) for t in translate) if translate is not None else (0.0,) * len(raw_axes)
    if len(translate_in) != len(raw_axes):
        raise ValueError(f"`translate` must have {len(raw_axes)} values (axes {raw_axes!r}), got {translate!r}.")
    order = [raw_axes.upper().index(a) for a in axes_out]
    scale0 = tuple(scale_in[i] for i in order)
    translate0 = tuple(translate_in[i] for i in order)
    if isinstance(units, str):
        units = {a: units for a in axes_out if a in SPATIAL}
    units = {k.upper(): unit_name(v) for k, v in (units or {}).items() if unit_name(v)}
    if isinstance(data, (list, tuple)) and len(given) > 1:
        all_levels = given
    else:
        all_levels = pyramid(given[0], axes_out, labels=labels, levels=levels, downscale_axes=downscale_axes)
    shape0 = all_levels[0].shape
    level_scales = [tuple(s * level_factor(n0, n) for s, n0, n in zip(scale0, shape0, lv.shape)) for lv in all_levels]
    if chunks is not None and not isinstance(chunks, (int, np.integer)):
        chunks = tuple(chunks)
        if len(chunks) != len(raw_axes):
            raise ValueError(f"`chunks` must be a positive integer or {len(raw_axes)} of them (axes {raw_axes!r}), "
                             f"got {chunks!r}.")
        chunks = tuple(chunks[i] for i in order)
    chunk_shape = _chunk_shape(shape0, axes_out, chunks)
    name = name or stem(path)
    _replace_target(path, overwrite, dry_run=True)  # fail before writing anything

    zarr_format = 2 if version == "0.4" else 3
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        group = zarr.open_group(store=str(tmp), mode="w", zarr_format=zarr_format)
        # Later levels are computed from the written previous level, so each pass reads level k-1 once.
        written = []
        for i, level in enumerate(all_levels):
            if i > 0 and not (isinstance(data, (list, tuple)) and len(given) > 1):
                level = pyramid(da.from_zarr(written[-1]), axes_out, labels=labels, levels=2,
                                downscale_axes=downscale_axes)[1]
            _write_level(group, i, level, axes_out, chunk_shape, zarr_format)
            written.append(group[str(i)])
        ms = _multiscales_meta(axes_out, level_scales, translate0, units, name, version, labels)
        meta: dict[str, Any] = {"multiscales": [ms]}
        if labels:
            image_label: dict[str, Any] = {}
            if version == "0.4":
                image_label["version"] = "0.4"
            if colors:
                image_label["colors"] = [{"label-value": int(k), "rgba": [int(round(255 * float(c))) for c in v]}
                                         for k, v in colors.items()]
            if properties:
                image_label["properties"] = list(properties)
            meta["image-label"] = image_label
        group.attrs.update(meta if version == "0.4" else {"ome": {"version": "0.5", **meta}})
        _replace_target(path, overwrite)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def _write_level(group, index: int | str, level: da.Array, axes: str, chunks: tuple[int, ...],
                 zarr_format: int) -> None:
    import numcodecs
    import zarr

    level_chunks = tuple(max(1, min(c, n)) for c, n in zip(chunks, level.shape))
    kwargs: dict[str, Any] = dict(name=str(index), shape=level.shape, dtype=level.dtype, chunks=level_chunks,
                                  fill_value=0)
    if zarr_format == 2:
        kwargs["compressors"] = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    else:
        kwargs["compressors"] = zarr.codecs.BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")
        kwargs["dimension_names"] = [a.lower() for a in axes]
    array = group.create_array(**kwargs)
    # The Dask chunks match the Zarr chunks, so parallel writes never share a Zarr chunk.
    da.store(level.rechunk(level_chunks), array, lock=False)


def add_labels(image_path: str | os.PathLike, name: str, data, *, overwrite: bool = False, **kwargs) -> Path:
    """Write ``data`` as the labels image ``labels/<name>`` of the OME-Zarr image at ``image_path``.

    The labels get the image's axes, scale and translation (unless given in ``kwargs``, which go to
    :func:`write_ome_zarr`) and are listed in ``labels/``'s metadata, as NGFF asks.
    """
    import zarr

    image = read_zarr(image_path)
    if image.labels:
        raise ValueError(f"`image_path` {str(image_path)!r} is itself a labels image; give the image it belongs to.")
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"`name` must be a plain folder name for the labels image, got {name!r}.")
    version = "0.5" if "ome" in zarr.open_group(str(image_path), mode="r").attrs else "0.4"
    axes, scale, translate = image.axes, list(image.scale), list(image.translate)
    if "C" in axes and np.ndim(data) == len(axes) - 1:
        # Labels usually have no channel axis: take the image's geometry without it.
        c = axes.index("C")
        axes, scale, translate = axes.replace("C", ""), scale[:c] + scale[c + 1:], translate[:c] + translate[c + 1:]
    kwargs.setdefault("axes", axes)
    kwargs.setdefault("scale", scale)
    kwargs.setdefault("translate", translate)
    kwargs.setdefault("units", image.units)
    out = Path(image_path) / "labels" / name
    write_ome_zarr(out, data, labels=True, name=name, version=version, overwrite=overwrite, **kwargs)
    labels_group = zarr.open_group(str(Path(image_path) / "labels"), mode="a",
                                   zarr_format=2 if version == "0.4" else 3)
    names = [n for n in list_labels(image_path) if n != name] + [name]
    if version == "0.4":
        labels_group.attrs.update({"labels": names})
    else:
        labels_group.attrs.update({"ome": {"version": "0.5", "labels": names}})
    source = {"image": "../../"}
    group = zarr.open_group(str(out), mode="a")
    attrs = dict(group.attrs)
    target = attrs["ome"] if version == "0.5" else attrs
    target["image-label"]["source"] = source
    group.attrs.update(attrs)
    return out



def add_pyramid(path: str | os.PathLike, *, levels: int | None = None, labels: bool | None = None,
                downscale_axes: str = "YX") -> Path:
    """Add down-sampled levels to an OME-Zarr image that has only level 0 (e.g. a streamed segmentation).

    Each new level is computed from the previous written one, chunk by chunk, with the same chunk
    shape, and listed in ``multiscales`` with its scale. ``labels`` (default: the image's
    ``image-label`` flag) picks mode rather than mean down-sampling.
    """
    import zarr

    image = read_zarr(path)
    if image.multiscale:
        raise ValueError(f"{str(path)!r} already has {len(image.levels)} levels; `add_pyramid` needs a single level.")
    labels = image.labels if labels is None else bool(labels)
    group = zarr.open_group(str(path), mode="r+")
    attrs = dict(group.attrs)
    version = "0.5" if isinstance(attrs.get("ome"), dict) else "0.4"
    target = attrs["ome"] if version == "0.5" else attrs
    ms = target["multiscales"][0]
    first = group[ms["datasets"][0]["path"]]
    zarr_format = first.metadata.zarr_format
    shapes = pyramid_shapes(first.shape, image.axes, levels=levels, downscale_axes=downscale_axes)
    previous = first
    for i in range(1, len(shapes)):
        level = pyramid(da.from_zarr(previous), image.axes, labels=labels, levels=2, downscale_axes=downscale_axes)[1]
        name = str(i)
        while name in set(group.array_keys()) or name in set(group.group_keys()):
            name += "_"
        _write_level(group, name, level, image.axes, first.chunks, zarr_format)
        previous = group[name]
        factors = [level_factor(n0, n) for n0, n in zip(first.shape, level.shape)]
        transforms = [dict(t) for t in ms["datasets"][0].get("coordinateTransformations", [])]
        for t in transforms:
            if t.get("type") == "scale":
                t["scale"] = [float(v) * f for v, f in zip(t["scale"], factors)]
        if not any(t.get("type") == "scale" for t in transforms):
            transforms.insert(0, {"type": "scale", "scale": factors})
        ms["datasets"].append({"path": name, "coordinateTransformations": transforms})
    ms["type"] = "mode" if labels else "mean"
    group.attrs.update(attrs)
    return Path(path)
