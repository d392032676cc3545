"""Whole-slide images through tiffslide, and where on a slide the tissue is.

:func:`read_slide` opens Aperio SVS, Hamamatsu NDPI, Leica SCN, Philips TIFF, Ventana BIF and
generic tiled pyramidal TIFFs lazily: every level is a Dask array over tiffslide's Zarr view of
the file, so a computation reads only the tiles it touches. The pixel size (µm) comes from the
vendor metadata or the TIFF resolution tags, or from ``pixel_size=`` when the file has none.

Why tiffslide rather than openslide-python + openslide-bin: it reads through tifffile and Zarr,
which segarch already uses for every other TIFF, so levels are Dask arrays with no copy, it needs
no native library beyond the codecs that tifffile uses, and it is thread-safe under Dask.
openslide's one advantage, the non-TIFF MIRAX (``.mrxs``) format, is not covered here.

:func:`tissue_mask` finds tissue on a low level (Otsu's threshold on brightness, then a little
morphology) and answers, for any region or tile grid of level 0, whether it holds tissue, so
tiles of bare glass need not be computed.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import dask.array as da
import numpy as np

from segarch.io.image import Image, stem

__all__ = ["read_slide", "is_vendor_slide", "require_tiffslide", "tissue_mask", "TissueMask", "SLIDE_EXTENSIONS"]

#: Whole-slide formats that are TIFF files underneath (tiffslide reads them; MIRAX .mrxs is not TIFF).
SLIDE_EXTENSIONS = (".svs", ".ndpi", ".scn", ".bif")


def require_tiffslide():
    """Import tiffslide, or say which extra installs it."""
    try:
        import tiffslide
    except ImportError:
        raise ImportError("Reading whole-slide images needs tiffslide, which is not installed: "
                          'pip install "napari-segarch[slides]" (or pip install tiffslide).') from None
    return tiffslide


def is_vendor_slide(path: str | os.PathLike) -> bool:
    """Cheap probe: an Aperio, Hamamatsu, Leica, Philips or Ventana slide (from the first IFD's tags)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return any(getattr(tif, f"is_{kind}", False) for kind in ("svs", "ndpi", "scn", "philips", "bif"))
    except Exception:
        return False


def _pixel_size(value, name: str) -> tuple[float, float] | None:
    if value is None:
        return None
    values = (value, value) if isinstance(value, (int, float)) else tuple(value)
    if len(values) != 2 or not all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in values):
        raise ValueError(f"`{name}` must be a positive number of µm per pixel or two of them (y, x), got {value!r}.")
    return float(values[0]), float(values[1])


def read_slide(path: str | os.PathLike, *, pixel_size: float | Sequence[float] | None = None) -> Image:
    """Open a whole-slide image lazily, with its pyramid levels and microns per pixel.

    Args:
        path: an SVS, NDPI, SCN, BIF, Philips or generic tiled pyramidal TIFF file.
        pixel_size: µm per level-0 pixel (one number or ``(y, x)``), for a file that does not record it;
            it overrides the file's value.

    Returns:
        An :class:`~segarch.io.Image` with axes ``YXC`` (RGB) or ``YX``, levels as Dask arrays, ``scale``
        in µm (``units`` micrometer) when the pixel size is known, ``level_scales`` from the file's own
        downsample factors, and ``metadata["slide"]``: vendor, objective power, ``mpp`` (``None`` when
        unknown) and the file's properties.

    Raises:
        ImportError: tiffslide is missing (names the extra to install).
        ValueError: the file is not a slide tiffslide can read (names the file).
    """
    tiffslide = require_tiffslide()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"Cannot open {path!r}: no such file.")
    given = _pixel_size(pixel_size, "pixel_size")
    try:
        slide = tiffslide.TiffSlide(path)
        group = slide.zarr_group
        levels = [da.from_zarr(group[str(i)]) for i in range(slide.level_count)]
        props = dict(slide.properties)
        dims = list(slide.level_dimensions)  # (width, height) per level
    except Exception as err:  # a truncated or foreign file raises anything from struct to KeyError
        raise ValueError(f"{path!r} is not a whole-slide image tiffslide can read: {type(err).__name__}: "
                         f"{err}") from None
    series_axes = str(props.get("tiffslide.series-axes") or ("YXS" if levels[0].ndim == 3 else "YX"))
    axes = series_axes.replace("S", "C")
    if len(axes) != levels[0].ndim or set(axes) - set("ZYXC"):
        raise ValueError(f"{path!r}: slide axes {series_axes!r} are not supported (expected 'YXS' or 'YX').")
    mpp_x, mpp_y = props.get("tiffslide.mpp-x"), props.get("tiffslide.mpp-y")
    found = (float(mpp_y or mpp_x), float(mpp_x or mpp_y)) if (mpp_x or mpp_y) else None
    mpp = given or found
    h0, w0 = dims[0][1], dims[0][0]
    factors = [(h0 / h, w0 / w) for w, h in dims]
    base = mpp or (1.0, 1.0)
    level_scales = [tuple({"Y": base[0] * fy, "X": base[1] * fx}.get(a, 1.0) for a in axes) for fy, fx in factors]
    units = {"Y": "micrometer", "X": "micrometer"} if mpp else {}
    metadata = {"slide": {"vendor": props.get("tiffslide.vendor"), "objective_power": props.get(
        "tiffslide.objective-power"), "mpp": mpp, "mpp_from": "pixel_size" if given else ("file" if found else None),
        "downsamples": [list(f) for f in factors],
        "properties": {k: v for k, v in props.items() if isinstance(v, (str, int, float, bool, type(None)))}}}
    return Image(levels=levels, axes=axes, scale=level_scales[0], name=stem(path), units=units, metadata=metadata,
                 path=path, level_scales=level_scales)


# ------------------------------------------------------------------------------------------------ tissue


@dataclass
class TissueMask:
    """Where the tissue is, on a low-resolution grid over level 0.

    Attributes:
        mask: ``(rows, cols)`` booleans, True where there is tissue.
        downsample: ``(y, x)`` level-0 pixels per mask pixel.
        level: the image level the mask was computed on.
        threshold: the brightness threshold used (0-1; darker than it is tissue in brightfield).
        fraction: the share of the slide covered by tissue.
        uniform: the level showed no contrast (all glass or all tissue): Otsu had nothing to separate.
    """

    mask: np.ndarray
    downsample: tuple[float, float]
    level: int
    threshold: float
    fraction: float
    uniform: bool = False

    def region_fraction(self, rows: slice | tuple[int, int], cols: slice | tuple[int, int]) -> float:
        """The share of a level-0 region ``[rows, cols]`` that holds tissue (0 to 1)."""
        (r0, r1), (c0, c1) = (_bounds(rows), _bounds(cols))
        fy, fx = self.downsample
        mr0, mr1 = int(r0 // fy), max(int(math.ceil(r1 / fy)), int(r0 // fy) + 1)
        mc0, mc1 = int(c0 // fx), max(int(math.ceil(c1 / fx)), int(c0 // fx) + 1)
        window = self.mask[mr0:mr1, mc0:mc1]
        return float(window.mean()) if window.size else 0.0

    def has_tissue(self, rows: slice | tuple[int, int], cols: slice | tuple[int, int], *,
                   min_fraction: float = 0.0) -> bool:
        """Whether a level-0 region holds tissue (more than ``min_fraction`` of it)."""
        fraction = self.region_fraction(rows, cols)
        return fraction > min_fraction if min_fraction > 0 else fraction > 0

    def tiles(self, tile: int | Sequence[int], *, min_fraction: float = 0.0) -> np.ndarray:
        """A boolean grid over level 0 in tiles of ``tile`` pixels: True for tiles to compute.

        Tiles are rows ``[i*tile, (i+1)*tile)`` and columns likewise; the last ones may be partial.
        """
        ty, tx = (tile, tile) if isinstance(tile, (int, np.integer)) else tuple(tile)
        height = self.mask.shape[0] * self.downsample[0]
        width = self.mask.shape[1] * self.downsample[1]
        grid = np.zeros((int(math.ceil(round(height) / ty)), int(math.ceil(round(width) / tx))), bool)
        for i, j in np.ndindex(*grid.shape):
            grid[i, j] = self.has_tissue((i * ty, (i + 1) * ty), (j * tx, (j + 1) * tx), min_fraction=min_fraction)
        return grid


def _bounds(s) -> tuple[float, float]:
    return (s.start or 0, s.stop) if isinstance(s, slice) else (s[0], s[1])


def _drop_small(mask: np.ndarray, min_pixels: int) -> np.ndarray:
    from scipy import ndimage

    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_pixels
    keep[0] = False
    return keep[labels]


def tissue_mask(image: Image, *, level: int | None = None, min_size: int = 512, max_size: int = 2048,
                threshold: float | None = None, glass: float = 0.8, min_contrast: float = 0.08,
                min_object: float = 1e-5) -> TissueMask:
    """Find the tissue on a low level of a slide: Otsu's threshold on brightness, then a little cleaning.

    Brightfield (RGB) slides show tissue darker than the glass; a single-channel (fluorescence) slide
    shows it brighter than the dark background.

    Args:
        image: an opened slide (``read_slide`` / ``open_image``), RGB brightfield or a single channel.
        level: the level to work on; default: the coarsest whose larger side is at least ``min_size``.
            A level larger than ``max_size`` is averaged down to it first (which reads that level once).
        min_size, max_size: see ``level``.
        threshold: a brightness threshold (0-1) instead of Otsu's.
        glass: (RGB) the brightness of bare glass or more: when even the brighter of Otsu's two classes
            is darker than this, the view holds no glass, so all of it is tissue.
        min_contrast: when Otsu's two classes differ by less than this brightness, the level is uniform:
            all glass if it is bright, all tissue otherwise (never skip what might be tissue).
        min_object: specks smaller than this share of the slide are dropped, and holes that small filled.

    Returns:
        A :class:`TissueMask`; ``mask.tiles(512)`` says which 512-pixel tiles of level 0 to compute.
    """
    from scipy import ndimage
    from skimage.color import rgb2gray
    from skimage.filters import threshold_otsu

    if level is None:
        large = [i for i, lv in enumerate(image.levels) if max(_yx(image, lv)) >= min_size]
        level = large[-1] if large else 0
    if not 0 <= level < len(image.levels):
        raise ValueError(f"`level` must be from 0 to {len(image.levels) - 1}, got {level!r}.")
    data = image.levels[level]
    data = data[tuple(0 if a in "TZ" else slice(None) for a in image.axes)]
    axes = "".join(a for a in image.axes if a not in "TZ")
    factor = max(1, int(math.ceil(max(_yx(image, data, axes)) / max_size)))
    if factor > 1:  # the level is too large to hold: average blocks of it (one pass over that level)
        step = {i: (factor if a in "YX" else 1) for i, a in enumerate(axes)}
        data = da.coarsen(np.mean, data.astype(np.float32), step, trim_excess=True)
    pixels = np.asarray(data)
    brightfield = "C" in axes
    if brightfield:
        pixels = np.moveaxis(pixels, axes.index("C"), -1)
        rgb = pixels[..., :3].astype(np.float32)
        grey = rgb2gray(rgb / (255.0 if image.dtype == np.uint8 else max(float(rgb.max()), 1.0)))
    else:
        lo, hi = float(pixels.min()), float(pixels.max())
        grey = 1.0 - (pixels.astype(np.float32) - lo) / max(hi - lo, 1e-12)  # tissue bright → dark, as brightfield
    uniform, everything = False, False
    if threshold is None:
        threshold = float(threshold_otsu(grey)) if grey.min() < grey.max() else float(grey.max())
        dark, bright = grey[grey < threshold], grey[grey >= threshold]
        if not dark.size or not bright.size or bright.mean() - dark.mean() < min_contrast:
            uniform, everything = True, bool(grey.mean() < glass) if brightfield else False
        elif brightfield and bright.mean() < glass:
            uniform, everything = True, True  # no glass anywhere in view: all tissue
    if uniform:
        mask = np.full(grey.shape, everything)
    else:
        mask = grey < threshold
        radius = max(1, round(min(grey.shape) / 256))
        disk = np.hypot(*np.mgrid[-radius:radius + 1, -radius:radius + 1]) <= radius
        mask = ndimage.binary_closing(mask, structure=disk, border_value=0) | mask
        min_pixels = max(4, int(min_object * mask.size))
        mask = _drop_small(mask, min_pixels)
        mask = ~_drop_small(~mask, min_pixels)
    h0, w0 = _yx(image, image.levels[0])
    downsample = (h0 / mask.shape[0], w0 / mask.shape[1])
    return TissueMask(mask=mask, downsample=downsample, level=level, threshold=float(threshold),
                      fraction=float(mask.mean()), uniform=uniform)


def _yx(image: Image, level, axes: str | None = None) -> tuple[int, int]:
    axes = axes or image.axes
    return level.shape[axes.index("Y")], level.shape[axes.index("X")]
