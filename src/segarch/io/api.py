"""Open any supported image by its extension, after checking the file really is that format."""

from __future__ import annotations

import logging
import os

import dask.array as da
import numpy as np

from segarch.io.geo import geo_from_attrs
from segarch.io.geotiff import is_georeferenced_tiff, read_raster
from segarch.io.image import Image, check_axes, guess_axes, stem
from segarch.io.ome_zarr import list_labels, read_zarr
from segarch.io.slide import is_vendor_slide, read_slide
from segarch.io.tiff import read_tiff

logger = logging.getLogger(__name__)

__all__ = ["open_image", "open_images", "read_npy", "format_of", "EXTENSIONS"]

#: Extensions each reader claims (lower case; ``.ome.tif`` etc. end in these). Whole-slide formats are TIFFs.
EXTENSIONS = {".zarr": "zarr", ".tif": "tiff", ".tiff": "tiff", ".svs": "tiff", ".ndpi": "tiff", ".scn": "tiff",
              ".npy": "npy"}
_NPY_MAGIC = b"\x93NUMPY"


def format_of(path: str | os.PathLike) -> str | None:
    """The format an extension promises (``"zarr"``, ``"tiff"``, ``"npy"``), or ``None`` if not ours.

    Only the name is looked at (cheap); :func:`open_image` checks the content.
    """
    name = os.fspath(path).rstrip("/\\").lower()
    for ext, fmt in EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    return None


def read_npy(path: str | os.PathLike, *, axes: str | None = None, chunks="auto") -> Image:
    """Memory-map a ``.npy`` file as a Dask array (axes guessed from the shape unless given)."""
    path = str(path)
    if not os.path.isfile(path):
        raise ValueError(f"Cannot open {path!r}: no such file.")
    with open(path, "rb") as fh:
        head = fh.read(6)
    if head != _NPY_MAGIC:
        raise ValueError(f"{path!r} is not a NumPy .npy file: expected the header {_NPY_MAGIC!r}, found {head!r}.")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:
        raise ValueError(f"{path!r} is not a readable .npy file: {type(err).__name__}: {err}") from None
    given = axes
    axes = check_axes(axes, array.ndim) if axes is not None else guess_axes(array.shape)
    if chunks == "auto":
        chunks = tuple(1 if a in "TC" and not (a == "C" and i == array.ndim - 1) else "auto"
                       for i, a in enumerate(axes))
    return Image(levels=[da.from_array(array, chunks=chunks)], axes=axes, name=stem(path), path=path,
                 axes_guessed=given is None)


def open_image(path: str | os.PathLike, *, labels_name: str | None = None) -> Image:
    """Open an image lazily (Dask arrays) with its axes, scale and name.

    ``.zarr`` (Zarr v2/v3, OME-Zarr multiscale images; ``labels_name`` picks one of its labels),
    ``.tif``/``.tiff``/``.svs`` (BigTIFF, OME-TIFF, pyramidal whole-slide TIFF) and ``.npy``
    (memory-mapped). Nothing is read beyond metadata until the arrays are computed.

    Raises:
        ValueError: an unsupported extension, or a file that is not what its extension says.

    Examples::

        >>> image = open_image("cells.ome.zarr")
        >>> image.axes, image.scale, [level.shape for level in image.levels]
        ('CZYX', (1.0, 0.5, 0.2, 0.2), [(2, 40, 1024, 1024), (2, 40, 512, 512), ...])
        >>> tile = image.levels[0][0, 10, :256, :256].compute()   # reads one chunk
    """
    fmt = format_of(path)
    if fmt is None:
        raise ValueError(f"`path` {os.fspath(path)!r} has an unsupported extension; supported: "
                         f"{', '.join(EXTENSIONS)}.")
    if labels_name is not None and fmt != "zarr":
        raise ValueError(f"`labels_name` applies to OME-Zarr images only, got a {fmt} file {os.fspath(path)!r}.")
    reader = {"zarr": lambda: _with_geo(read_zarr(path, labels_name=labels_name)), "tiff": lambda: _read_any_tiff(path),
              "npy": lambda: read_npy(path)}[fmt]
    try:
        return reader()
    except ValueError as err:
        # Messages about the array (e.g. too many dimensions) gain the file they came from.
        if os.fspath(path) in str(err):
            raise
        raise ValueError(f"{os.fspath(path)!r}: {err}") from None


def _read_any_tiff(path) -> Image:
    """A TIFF through the reader that keeps what it carries: rasterio for a GeoTIFF, tiffslide for a
    vendor's whole slide, tifffile otherwise.

    The choice parses the first IFD only: GeoTIFF tags (or GDAL's nodata tag) send the file to rasterio
    (:func:`segarch.io.is_georeferenced_tiff`); an Aperio/Hamamatsu/Leica/Philips/Ventana description
    to tiffslide (:func:`segarch.io.is_vendor_slide`); plain, OME and ImageJ TIFFs carry neither.
    Without the optional reader the file still opens through tifffile, and the log says what is lost.
    """
    if is_georeferenced_tiff(path):
        try:
            return read_raster(path)
        except ImportError:
            logger.warning("%s is a GeoTIFF but rasterio is not installed: its pixels open without their "
                           'georeference (pip install "napari-segarch[geo]" keeps it).', os.fspath(path))
    elif is_vendor_slide(path):
        try:
            return read_slide(path)
        except ImportError:
            logger.warning("%s is a whole-slide image but tiffslide is not installed: it opens through tifffile, "
                           'which may miss its levels or pixel size (pip install "napari-segarch[slides]").',
                           os.fspath(path))
    return read_tiff(path)


def _with_geo(image: Image) -> Image:
    # A Zarr store written from a georeferenced source carries the georeference in its attributes.
    attrs = image.metadata if isinstance(image.metadata, dict) else {}
    if image.path and image.geo is None:
        try:
            import zarr

            attrs = {**attrs, **dict(zarr.open(image.path, mode="r").attrs)}
        except Exception:  # the reader already opened it; a failure here only means no georeference
            pass
    geo = geo_from_attrs(attrs, where=f"the attributes of {image.path!r}")
    if geo is not None:
        rows_cols = _rows_cols(image)
        image.geo = geo if tuple(geo.shape) == rows_cols else geo.for_shape(rows_cols)
    return image


def _rows_cols(image: Image) -> tuple[int, int]:
    return image.shape[image.axes.index("Y")], image.shape[image.axes.index("X")]


def open_images(path: str | os.PathLike) -> list[Image]:
    """The image at ``path`` followed by its OME-Zarr labels images (if any)."""
    image = open_image(path)
    out = [image]
    if format_of(path) == "zarr" and not image.labels and image.path:
        # image.path: where the image really is (a bioformats2raw root resolves to its series "0").
        out += [read_zarr(image.path, labels_name=name) for name in list_labels(image.path)]
    return out

