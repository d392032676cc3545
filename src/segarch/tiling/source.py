"""Image inputs read lazily, region by region: NumPy, Dask, Zarr (arrays, OME-Zarr groups) and paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ImageSource", "open_source"]


class ImageSource:
    """A read-only view of an image that hands out regions as NumPy arrays.

    Only the regions asked for are read: a Zarr/TIFF/Dask image is never loaded whole.
    The object pickles cheaply (paths and Zarr arrays, not pixels) so Dask workers can read too.
    """

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
        region = self.array[index]
        if hasattr(region, "compute"):  # a Dask array: compute just this region, in this thread
            region = region.compute(scheduler="synchronous")
        return np.asarray(region)


def open_source(image: Any) -> ImageSource:
    """Wrap ``image`` (array-like or path) as an :class:`ImageSource`, validating what can be checked cheaply."""
    if isinstance(image, (str, os.PathLike)):
        source = _open_path(Path(image))
    else:
        array = image
        if _is_zarr_group(array):
            array = _ome_level0(array, "`image`")
        if not all(hasattr(array, a) for a in ("shape", "dtype", "__getitem__")):
            raise ValueError(
                f"`image` must be a NumPy, Dask or Zarr array, a Zarr group, or a path to .zarr/.tif/.tiff/.npy; "
                f"got {type(image).__name__}."
            )
        source = ImageSource(array, type(image).__name__)
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


def _ome_level0(group, what: str):
    """Level 0 of an OME-Zarr multiscale group (or the group's only array)."""
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)  # NGFF 0.5 nests metadata under "ome"
    multiscales = ome.get("multiscales")
    if multiscales:
        return group[multiscales[0]["datasets"][0]["path"]]
    arrays = list(group.array_keys())
    if len(arrays) == 1:
        return group[arrays[0]]
    raise ValueError(f"{what} is a Zarr group without OME-Zarr 'multiscales' metadata and holds arrays {arrays}; "
                     "pass the array itself.")


def _open_path(path: Path) -> ImageSource:
    from segarch import io

    if not path.exists():
        raise FileNotFoundError(f"`image` path {str(path)!r} does not exist.")
    image = io.open_image(path)  # lazy: level 0 of a pyramid, nothing read but metadata
    return ImageSource(image.levels[0], str(path), axes=image.axes, scale=image.scale)
