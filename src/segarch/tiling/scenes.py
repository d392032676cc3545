"""Satellite scenes and whole slides through ``segarch.predict``: bands, nodata, tissue, physical scale, georeference.

:func:`prepare` turns the opened image into what the model needs before anything is planned:

- **bands**: a multispectral raster's bands picked and ordered for the model (``bands=``, or by name from
  the bands the model records it was trained on);
- **physical scale**: a whole slide is read at the pyramid level nearest the model's training pixel size
  and resampled the rest of the way (:class:`Resampled`, seamless across tiles);
- **pixels to leave out**: nodata pixels (the raster's own nodata, or ``nodata=``) and, with ``tissue=True``,
  the glass around the tissue (Otsu on a low level, :func:`segarch.io.tissue_mask`).

Pixels left out travel through the pipeline as NaN after pre-processing (:func:`mark_invalid`).
:class:`segarch.tiling.skipping.TileSkipper` never shows a NaN to the network: a tile that is all NaN is not
computed, the others are computed with NaN set to 0, and the NaN is put back into the logits, so that after
blending a left-out pixel is 0 in labels and NaN in probabilities. Percentiles are measured on the other
pixels only.

:func:`annotate_store` records the georeference of the result in the output store (GeoZarr attributes,
turned back into a GeoTIFF by ``segarch convert``), and :func:`provenance` what the source was.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from segarch.arrays import compute_here

__all__ = ["prepare", "SourceExtras", "Resampled", "invalid_pixels", "mark_invalid", "on_glass",
           "annotate_store", "provenance", "FROM_FILE", "check_bands"]

log = logging.getLogger("segarch.tiling")

#: ``nodata``'s default: the nodata value the file records (none for arrays).
FROM_FILE = "file"


@dataclass
class SourceExtras:
    """What :func:`prepare` found and did, kept on the source (``source.extras``) for the pipeline and provenance.

    Attributes:
        nodata: the input value that marks pixels to leave out, or ``None``.
        tissue: a :class:`segarch.io.TissueMask` over level 0 of the slide, or ``None``.
        to_level0: ``(y, x)`` level-0 pixels per source pixel (the tissue mask's grid is over level 0).
        geo: the georeference of the (possibly resampled) source's rows and columns, or ``None``.
        bands: the band names fed to the model, in order (empty when not chosen).
        level: the pyramid level read, and ``zoom`` the resampling applied to it.
        pixel_size: ``(y, x)`` size of a source pixel in ``units``, when known.
    """

    nodata: float | int | None = None
    tissue: Any = None
    to_level0: tuple[float, float] = (1.0, 1.0)
    geo: Any = None
    bands: tuple[str, ...] = ()
    band_index: tuple[int, ...] | None = None
    level: int = 0
    zoom: tuple[float, float] = (1.0, 1.0)
    pixel_size: tuple[float, float] | None = None
    units: str | None = None

    @property
    def masks(self) -> bool:
        return self.nodata is not None or self.tissue is not None


# --------------------------------------------------------------------------------------------- preparing


def prepare(source, model, *, axes: str | None, bands: Sequence[str | int] | None = None, nodata: Any = FROM_FILE,
            pixel_size: float | Sequence[float] | None = None, tissue: bool = False):
    """The source the model reads: bands picked, slide level chosen and resampled, pixels to leave out noted.

    Returns the same ``source`` when nothing applies (a plain array, a microscopy file), else a new one
    carrying :class:`SourceExtras` as ``source.extras``.
    """
    from segarch.tiling.source import ImageSource

    image = getattr(source, "image", None)
    geo = getattr(image, "geo", None)
    extras = SourceExtras(geo=geo)
    array, src_axes, scale = source.array, axes or source.axes, source.scale

    # Bands first: they decide which channels are read, at every level.
    model_bands = tuple(getattr(model, "bands", None) or ())
    if bands is not None or model_bands:
        array, extras.bands, extras.band_index = _select_bands(source, array, src_axes, bands, model, model_bands,
                                                               geo)

    # Physical scale: a whole slide (or any image, when `pixel_size` is given) at the model's pixel size.
    slide = image is not None and _is_slide(image)
    if (slide or pixel_size is not None) and image is not None:
        array, scale, extras = _at_model_scale(image, array, model, pixel_size, extras, source)
    elif pixel_size is not None:
        raise ValueError("`pixel_size` applies to an image opened from a file (a whole slide, a raster): pass the "
                         "path, or resample the array to the model's pixel size yourself.")
    elif geo is not None:
        extras.pixel_size, extras.units = geo.pixel_size, geo.units

    # Pixels to leave out.
    if nodata == FROM_FILE:
        nodata = geo.nodata if geo is not None else None
    elif nodata is not None:
        from segarch.io.geo import check_nodata

        nodata = check_nodata(nodata, source.dtype, name="nodata")
    extras.nodata = nodata
    if tissue:
        if image is None:
            raise ValueError("`tissue`=True finds the tissue on a low level of a slide: pass the slide's path (an "
                             "SVS, NDPI or pyramidal TIFF), not an array.")
        from segarch.io import tissue_mask

        extras.tissue = tissue_mask(image)
        log.info("tissue covers %.0f%% of %s: the rest is not computed", 100 * extras.tissue.fraction,
                 source.description)

    if array is source.array and scale == source.scale:
        source.extras = extras
        return source
    new = ImageSource(array, source.description, axes=source.axes if axes is None else None, scale=scale)
    new.axes_guessed = source.axes_guessed
    new.image = image
    new.extras = extras
    return new


def _is_slide(image) -> bool:
    """A whole slide: read by the slide reader, or an RGB pyramid that is not a map (a generic pyramidal TIFF)."""
    if "slide" in (image.metadata or {}):
        return True
    return bool(image.rgb) and len(image.levels) > 1 and image.geo is None


def check_bands(bands, count: int, names: Sequence[str], in_channels: int) -> list[int]:
    """0-based band indices from ``bands`` (names, or band numbers counted from 1 as GDAL does), checked."""
    if isinstance(bands, (str, int)):
        bands = [bands]
    picked = []
    for band in bands:
        if isinstance(band, (int, np.integer)) and not isinstance(band, bool):
            if not 1 <= band <= count:
                raise ValueError(f"`bands` entry {band!r} is not a band of the image, which has {count} band(s) "
                                 f"(numbers 1 to {count}, or names {list(names)}).")
            picked.append(int(band) - 1)
        elif isinstance(band, str) and band.strip().isdigit():
            picked.extend(check_bands([int(band)], count, names, in_channels))
        elif isinstance(band, str):
            lower = [n.lower() for n in names]
            if band.lower() not in lower:
                raise ValueError(f"`bands` entry {band!r} is not a band of the image; its bands are {list(names)} "
                                 f"(or numbers 1 to {count}).")
            picked.append(lower.index(band.lower()))
        else:
            raise ValueError(f"`bands` must list band names or numbers (from 1), got {band!r}.")
    if len(picked) != in_channels:
        raise ValueError(f"`bands` must pick the model's {in_channels} input band(s), got {len(picked)}: "
                         f"{list(bands)}.")
    return picked


def _select_bands(source, array, axes, bands, model, model_bands, geo):
    import dask.array as da

    if axes is None or "C" not in axes:
        if bands is not None:
            raise ValueError(f"`bands` needs an image with bands (a C axis); this one has axes {axes!r} and shape "
                             f"{source.shape}: pass `axes` (e.g. 'CYX').")
        return array, (), None
    c = axes.index("C")
    count = source.shape[c]
    names = list(geo.band_names) if geo is not None and len(geo.band_names) == count else \
        [f"band {i + 1}" for i in range(count)]
    in_channels = int(getattr(model, "in_channels", count))
    if bands is None:
        lower = [n.lower() for n in names]
        if all(b.lower() in lower for b in model_bands) and len(model_bands) == in_channels:
            bands = list(model_bands)
        elif count == in_channels:
            log.info("the model was trained on bands %s; the image's %d bands %s are used in their order",
                     list(model_bands), count, names)
            return array, tuple(names), None
        else:
            raise ValueError(f"The model was trained on the {in_channels} bands {list(model_bands)}; the image has "
                             f"{count}: {names}. Pass `bands` (names or numbers from 1) to pick them in that order.")
    if count < in_channels:
        raise ValueError(f"The model takes {in_channels} bands but the image has only {count} ({names}); `bands` "
                         "cannot pick more bands than the image has.")
    picked = check_bands(bands, count, names, in_channels)
    if picked == list(range(count)):
        return array, tuple(names), None
    lazy = array if isinstance(array, da.Array) else da.from_array(array, chunks=_chunks(array), asarray=False)
    index = tuple(picked if i == c else slice(None) for i in range(lazy.ndim))
    return lazy[index], tuple(names[i] for i in picked), tuple(picked)


def _chunks(array):
    chunks = getattr(array, "chunks", None)
    if isinstance(chunks, tuple) and all(isinstance(v, (int, np.integer)) for v in chunks):
        return chunks
    return "auto"


def _at_model_scale(image, array, model, pixel_size, extras, source):
    from segarch.io import pick_level, pixel_size_of

    target = getattr(model, "pixel_size", None)
    if not target:
        if pixel_size is not None:
            raise ValueError(f"`pixel_size`={pixel_size!r} says the image's pixel size, but the model records no "
                             "training pixel size to match it to; train (or describe) the model with `pixel_size`.")
        return array, source.scale, extras  # a slide and a model of unknown scale: level 0, as before
    if len(target) != 2:
        raise ValueError(f"A whole slide needs a 2D model; the model's pixel size is {list(target)}.")
    base = pixel_size_of(image, pixel_size=pixel_size)  # a slide without one asks for `pixel_size=` here
    choice = pick_level(image, tuple(target), pixel_size=base)
    level_axes = image.axes
    level = image.levels[choice.level]
    if extras.band_index is not None and "C" in level_axes:  # the bands picked on level 0, on this level too
        c = level_axes.index("C")
        level = level[tuple(list(extras.band_index) if i == c else slice(None) for i in range(level.ndim))]
    iy, ix = level_axes.index("Y"), level_axes.index("X")
    rows, cols = level.shape[iy], level.shape[ix]
    out_rows = max(1, int(round(rows * choice.zoom[0])))
    out_cols = max(1, int(round(cols * choice.zoom[1])))
    data = level if choice.exact else Resampled(level, level_axes, (out_rows, out_cols))
    h0, w0 = image.levels[0].shape[iy], image.levels[0].shape[ix]
    extras.level, extras.zoom = choice.level, choice.zoom
    extras.to_level0 = (h0 / data.shape[iy], w0 / data.shape[ix])
    extras.pixel_size = (base[0] * extras.to_level0[0], base[1] * extras.to_level0[1])
    extras.units = "micrometer" if _is_slide(image) else (extras.geo.units if extras.geo else None)
    if extras.geo is not None:
        extras.geo = extras.geo.for_shape((data.shape[iy], data.shape[ix]))
    scale = tuple({"Y": extras.pixel_size[0], "X": extras.pixel_size[1]}.get(a, 1.0) for a in level_axes)
    log.info("%s: level %d (%.3g µm/px) resampled ×%.3g to the model's %s µm/px", source.description, choice.level,
             choice.pixel_size[0], choice.zoom[0], list(target))
    return data, scale, extras


class Resampled:
    """One level of an image resampled to ``shape`` (rows, columns), read region by region.

    Bilinear interpolation at each output pixel's centre, in the coordinates of the whole level, so tiles
    read separately join without seams (the level is the nearest to the wanted size, so the zoom left is
    small).
    Pickles with its level (a lazy array), so Dask workers resample their own regions.
    """

    def __init__(self, level, axes: str, shape: tuple[int, int]) -> None:
        self.level, self.axes = level, axes
        self.iy, self.ix = axes.index("Y"), axes.index("X")
        self.out = tuple(int(n) for n in shape)
        full = list(level.shape)
        full[self.iy], full[self.ix] = self.out
        self.shape = tuple(full)
        self.dtype = np.dtype(level.dtype)
        self.ndim = len(self.shape)

    def _coords(self, axis: int, lo: int, hi: int) -> np.ndarray:
        n_in = self.level.shape[axis]
        n_out = self.out[0 if axis == self.iy else 1]
        return (np.arange(lo, hi) + 0.5) * (n_in / n_out) - 0.5

    def __getitem__(self, key) -> np.ndarray:
        from scipy.ndimage import map_coordinates

        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        squeeze = [i for i, k in enumerate(key) if isinstance(k, (int, np.integer))]
        slices = [slice(int(k), int(k) + 1) if i in squeeze else k for i, k in enumerate(key)]
        coords, window = {}, {}
        for axis in (self.iy, self.ix):
            lo, hi, step = slices[axis].indices(self.shape[axis])
            if step != 1:
                raise IndexError("Resampled reads contiguous regions only")
            coords[axis] = c = self._coords(axis, lo, hi)
            n_in = self.level.shape[axis]
            window[axis] = (max(0, int(np.floor(c.min())) - 1), min(n_in, int(np.ceil(c.max())) + 2)) if c.size \
                else (0, 0)
        index = tuple(slice(*window[i]) if i in window else slices[i] for i in range(self.ndim))
        data = np.moveaxis(compute_here(self.level[index]).astype(np.float32), (self.iy, self.ix), (-2, -1))
        lead = data.shape[:-2]
        grid = np.meshgrid(coords[self.iy] - window[self.iy][0], coords[self.ix] - window[self.ix][0], indexing="ij")
        flat = data.reshape((-1,) + data.shape[-2:])
        planes = [map_coordinates(plane, grid, order=1, mode="nearest") for plane in flat]
        out = np.stack(planes).reshape(lead + grid[0].shape)
        out = np.moveaxis(out, (-2, -1), (self.iy, self.ix))
        if self.dtype.kind in "iu":
            info = np.iinfo(self.dtype)
            out = np.clip(np.rint(out), info.min, info.max)
        out = out.astype(self.dtype)
        return out[tuple(0 if i in squeeze else slice(None) for i in range(self.ndim))]

    def __repr__(self) -> str:
        return f"Resampled({self.level.shape} -> {self.shape}, axes {self.axes})"


# --------------------------------------------------------------------------------------- the pipeline


def invalid_pixels(source, spatial: str, region: dict[str, tuple[int, int]], data: np.ndarray) -> np.ndarray | None:
    """Pixels of a tile to leave out, ``(*spatial)`` booleans, or ``None`` when the source marks none.

    ``data`` is the tile as read, ``(C, *spatial)`` in the source's values; ``region`` its place in the
    source. A pixel is nodata when every band holds the nodata value (NaN counts as equal to a NaN nodata).
    """
    extras = getattr(source, "extras", None)
    if extras is None or not extras.masks:
        return None
    invalid = None
    if extras.nodata is not None:
        nodata = extras.nodata
        if isinstance(nodata, float) and math.isnan(nodata):
            invalid = np.isnan(data).all(0)
        else:
            invalid = (data == np.asarray(nodata, dtype=data.dtype)).all(0)
    if extras.tissue is not None and "Y" in spatial and "X" in spatial:
        mask = extras.tissue
        shape = data.shape[1:]
        iy, ix = spatial.index("Y"), spatial.index("X")
        rows = np.arange(region["Y"][0], region["Y"][0] + shape[iy])
        cols = np.arange(region["X"][0], region["X"][0] + shape[ix])
        my = np.clip(((rows + 0.5) * extras.to_level0[0] / mask.downsample[0]).astype(int), 0, mask.mask.shape[0] - 1)
        mx = np.clip(((cols + 0.5) * extras.to_level0[1] / mask.downsample[1]).astype(int), 0, mask.mask.shape[1] - 1)
        glass = ~mask.mask[np.ix_(my, mx)]
        if len(spatial) == 3:  # a Z axis: the same mask on every plane
            glass = np.expand_dims(glass, spatial.index("Z")) if "Z" in spatial else glass
            glass = np.broadcast_to(glass, shape)
        invalid = glass if invalid is None else (invalid | glass)
    return invalid


def on_glass(source, region: dict[str, tuple[int, int]], sizes: dict[str, int]) -> bool:
    """Whether a tile lies on glass alone (``tissue=True``): then it is neither read nor computed."""
    extras = getattr(source, "extras", None)
    if extras is None or extras.tissue is None or "Y" not in region or "X" not in region:
        return False
    (r0, r1), (c0, c1) = region["Y"], region["X"]
    r1, c1 = min(r1, sizes["Y"]), min(c1, sizes["X"])
    fy, fx = extras.to_level0
    return not extras.tissue.has_tissue((r0 * fy, r1 * fy), (c0 * fx, c1 * fx))


def mark_invalid(data: np.ndarray, invalid: np.ndarray | None) -> np.ndarray:
    """The pre-processed tile with the pixels to leave out set to NaN (float32)."""
    if invalid is None or not invalid.any():
        return data
    data = np.array(data, dtype=np.float32, copy=True)
    data[:, invalid] = np.nan
    return data


def drop_invalid(values: np.ndarray) -> np.ndarray:
    """``(C, n)`` sampled values without the pixels left out (NaN), for percentiles; never empty."""
    good = ~np.isnan(values).any(0)
    if good.all():
        return values
    if not good.any():
        return np.zeros((values.shape[0], 1), np.float32)
    return values[:, good]


# ------------------------------------------------------------------------------------------- the result


def output_geo(source, plan):
    """The georeference of the result's rows and columns (with the nodata it records), or ``None``."""
    from dataclasses import replace

    extras = getattr(source, "extras", None)
    geo = getattr(extras, "geo", None)
    if geo is None:
        return None
    sizes = dict(zip(plan.layout.axes, plan.image_shape))
    if "Y" not in sizes or "X" not in sizes:
        return None
    geo = geo.for_shape((sizes["Y"], sizes["X"])) if tuple(geo.shape) != (sizes["Y"], sizes["X"]) else geo
    masked = extras.masks
    # Left-out pixels are 0 in labels (recorded as nodata when the input had some) and NaN in probabilities.
    nodata = (float("nan") if plan.output in ("probabilities", "raw") else 0) if masked else None
    return replace(geo, nodata=nodata, band_names=())


def annotate_store(path, source, plan, class_names: Sequence[str] | None = None) -> None:
    """Record the result's georeference in the store's attributes (GeoZarr ``proj:``/``spatial:``)."""
    geo = output_geo(source, plan)
    if geo is None:
        return
    from dataclasses import replace

    from segarch.io import add_georeference

    if class_names and plan.output == "probabilities" and len(class_names) == plan.out_channels:
        geo = replace(geo, band_names=tuple(class_names))
    add_georeference(path, geo)


def provenance(source) -> dict[str, Any]:
    """The source's georeference, pixel size, bands, level and left-out pixels, for the result's provenance."""
    extras = getattr(source, "extras", None)
    if extras is None:
        return {}
    out: dict[str, Any] = {}
    if extras.geo is not None:
        geo = extras.geo
        out["source_georeference"] = {"crs": geo.crs_code or geo.crs, "transform": list(geo.transform),
                                      "shape": list(geo.shape), "nodata": _json_number(geo.nodata),
                                      "description": geo.describe()}
    if extras.pixel_size is not None:
        out["source_pixel_size"] = list(extras.pixel_size)
        out["source_units"] = extras.units
    if extras.bands:
        out["bands"] = list(extras.bands)
    if extras.level or extras.zoom != (1.0, 1.0):
        out["level"], out["zoom"] = extras.level, list(extras.zoom)
        out["to_level0"] = list(extras.to_level0)  # result pixels → the slide's level-0 pixels (QuPath)
    if extras.nodata is not None:
        out["nodata"] = _json_number(extras.nodata)
    if extras.tissue is not None:
        out["tissue_fraction"] = round(float(extras.tissue.fraction), 4)
    return out


def _json_number(value):
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    return value
