"""Image inputs read lazily, region by region: NumPy, Dask, Zarr (arrays, OME-Zarr groups) and paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from segarch.arrays import compute_here

__all__ = ["ImageSource", "open_source", "content_identity"]

_WHOLE_IMAGE_HASH_BYTES = 64 * 2 ** 20  # smaller images are hashed whole
_SAMPLES = 16
_SAMPLE_EDGE = 64


class ImageSource:
    """A read-only view of an image that hands out regions as NumPy arrays.

    Only the regions asked for are read: a Zarr/TIFF/Dask image is never loaded whole.
    The object pickles cheaply (paths and Zarr arrays, not pixels) so Dask workers can read too.
    """

    #: whether ``axes`` were guessed from the shape (a plain array, a TIFF page stack) rather than read from
    #: the file's metadata; set by :func:`open_source`.
    axes_guessed = False
    #: the :class:`segarch.io.Image` opened from a path (its georeference, levels, slide metadata), else None.
    image = None
    #: what :func:`segarch.tiling.scenes.prepare` found (bands, nodata, tissue, georeference), else None.
    extras = None

    def __init__(self, array: Any, description: str, axes: str | None = None,
                 scale: tuple[float, ...] | None = None) -> None:
        self.array = array
        self.description = description
        self.axes = axes      # from the file's metadata (or segarch.io's guess), when opened from a path
        self.scale = scale
        self.shape = tuple(int(s) for s in array.shape)
        self.dtype = np.dtype(array.dtype)

    @property
    def in_memory(self) -> bool:
        return isinstance(self.array, np.ndarray) and not isinstance(self.array, np.memmap)

    def read(self, index: tuple) -> np.ndarray:
        """The pixels at ``index`` (a tuple of ints and slices) as a NumPy array, read in this thread.

        Safe to call while other threads compute Dask arrays (napari slicing its layers on the GUI
        thread): see :func:`compute_here`.
        """
        return compute_here(self.array[index])


def open_source(image: Any) -> ImageSource:
    """Wrap ``image`` (array-like or path) as an :class:`ImageSource`, validating what can be checked cheaply."""
    if isinstance(image, (str, os.PathLike)):
        source = _open_path(Path(image))
    elif _is_zarr_group(image):
        from segarch.io.ome_zarr import read_zarr_node

        opened = read_zarr_node(image, "the Zarr group passed as `image`")  # level 0 of an OME-Zarr pyramid
        source = ImageSource(opened.levels[0], "Zarr group", axes=opened.axes, scale=opened.scale)
        source.axes_guessed = opened.axes_guessed
    elif all(hasattr(image, a) for a in ("shape", "dtype", "__getitem__")):
        source = ImageSource(image, type(image).__name__)
    else:
        raise ValueError(
            f"`image` must be a NumPy, Dask or Zarr array, a Zarr group, or a path to .zarr/.tif/.tiff/.npy; "
            f"got {type(image).__name__}."
        )
    return _checked(source)


def _checked(source: ImageSource) -> ImageSource:
    if source.dtype.kind not in "biuf":
        raise ValueError(
            f"`image` must hold numbers (bool, integer or float), got dtype {source.dtype} from {source.description}."
        )
    if 0 in source.shape or not source.shape:
        raise ValueError(f"`image` is empty: shape {source.shape} ({source.description}).")
    return source


def _is_zarr_group(obj) -> bool:
    try:
        import zarr
    except ImportError:  # pragma: no cover - zarr is a dependency
        return False
    return isinstance(obj, zarr.Group)


def _open_path(path: Path) -> ImageSource:
    from segarch import io

    if not path.exists():
        raise FileNotFoundError(f"`image` path {str(path)!r} does not exist.")
    image = io.open_image(path)  # lazy: level 0 of a pyramid, nothing read but metadata
    source = ImageSource(image.levels[0], str(path), axes=image.axes, scale=image.scale)
    source.axes_guessed = image.axes_guessed
    source.image = image
    return source


def content_identity(source: ImageSource) -> dict[str, Any]:
    """What identifies an image wherever its path is spelled: shape, dtype, chunking and a hash of its pixels.

    In-memory arrays up to 64 MiB are hashed whole; lazy (file, Dask, Zarr) and larger images through 16
    regions of 64×64 spread over every axis (a few chunk reads), so a resumed run refuses another image
    at the same path without reading the whole image. A change confined to pixels between the sampled
    regions can go unnoticed.
    """
    import hashlib
    import itertools

    digest = hashlib.sha256()
    shape = source.shape
    nbytes = int(np.prod(shape)) * source.dtype.itemsize
    if source.in_memory and nbytes <= _WHOLE_IMAGE_HASH_BYTES:
        digest.update(np.ascontiguousarray(source.array).data)
        sampled = "whole"
    else:
        # Positions spread along each axis, all combinations, then 16 of them spread over that list.
        per_axis = [np.linspace(0, max(0, n - min(n, _SAMPLE_EDGE)), num=min(n, 4)).round().astype(int)
                    for n in shape]
        corners = list(itertools.product(*[sorted(set(p.tolist())) for p in per_axis]))
        picks = sorted({int(v) for v in np.linspace(0, len(corners) - 1, num=min(len(corners), _SAMPLES)).round()})
        for i in picks:
            corner = corners[i]
            # The last two axes (rows, columns) get a 64×64 patch; the others a single index.
            index = tuple(slice(c, c + _SAMPLE_EDGE) if axis >= len(shape) - 2 else slice(c, c + 1)
                          for axis, c in enumerate(corner))
            digest.update(repr(corner).encode())
            digest.update(np.ascontiguousarray(source.read(index)).tobytes())
        sampled = f"{len(picks)} regions"
    chunks = getattr(source.array, "chunksize", None) or getattr(source.array, "chunks", None)
    if chunks is not None and not all(isinstance(c, (int, np.integer)) for c in chunks):
        chunks = None  # a Dask array's per-block chunk lists: its chunksize says the same
    return {"shape": list(shape), "dtype": str(source.dtype),
            "chunks": None if chunks is None else [int(c) for c in chunks],
            "sha256": digest.hexdigest(), "sampled": sampled}
