"""Training data: image/label pairs from arrays, Dask, Zarr or TIFF, read lazily region by region.

Every input becomes a :class:`Source` whose image and labels are NumPy arrays or lazy Dask arrays
(Zarr arrays and TIFF files are wrapped in Dask without reading them), transposed to
``(stack..., C, *spatial)`` and ``(stack..., *spatial)``. A stack axis (``T``, or ``Z`` for a 2D
model) holds independent images: each index along it is one :class:`Item`. Patches are read
from a region around a random location, so a large image is never loaded whole.

Partial annotations: unless an explicit mask of annotated pixels is given, only the slices that
hold at least one label count as annotated (whole 2D images for a 2D model, Z-slices of a volume
for a 3D model); label 0 inside them is background, everything else is ignored by the loss.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from segarch.arrays import compute_here
from segarch.axes import SPATIAL, check_axes, guess_axes

__all__ = ["Source", "Item", "Region", "as_sources", "as_image_sources", "make_items", "split_items", "read_region",
           "check_finite", "check_no_negative", "label_stats", "spatial_letters", "pixel_sizes", "SUFFIXES"]

log = logging.getLogger("segarch.training")

SUFFIXES = (".tif", ".tiff", ".zarr")
def spatial_letters(axes: str) -> str:
    return "".join(a for a in axes if a in SPATIAL)


@dataclass
class Source:
    """One image with its labels (and optional mask), axes normalised to ``(stack..., C, *spatial)``."""

    image: Any
    labels: Any
    mask: Any  # None (slices with labels are annotated), True (all annotated) or an array like ``labels``
    name: str
    spatial_dims: int
    n_stack: int

    @property
    def stack_shape(self) -> tuple[int, ...]:
        return tuple(self.labels.shape[: self.n_stack])

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.labels.shape[self.n_stack:])


@dataclass
class Item:
    """One image of a source (one index along its stack axes) and the part of it used for training.

    ``annotated``: for ``mask=None`` sources, which slices along the first spatial axis (3D) or
    whether the image (2D, one value) holds labels. ``bounds``: the spatial box it may be read from.
    """

    source: Source
    index: tuple[int, ...]
    annotated: np.ndarray
    bounds: tuple[slice, ...] = ()
    held_out: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b.stop - b.start for b in self.bounds)

    def annotated_volume(self) -> float:
        size = float(np.prod(self.shape))
        if self.source.spatial_dims == 3 and self.annotated.size > 1:
            z = self.bounds[0]
            return size * float(self.annotated[z].mean()) if z.stop > z.start else 0.0
        return size * float(self.annotated.any())


@dataclass
class Region:
    """A preprocessed image region ``(C, *spatial)`` with its class targets and annotation mask."""

    image: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    origin: tuple[int, ...] = field(default=())


# ---------------------------------------------------------------------------------------------- inputs


def _lazy(array: Any, what: str) -> Any:
    """NumPy stays NumPy; Dask stays lazy; Zarr, TIFF and other array-likes are wrapped lazily in Dask."""
    if isinstance(array, (str, os.PathLike)):
        return _open_path(Path(array), what)
    if isinstance(array, np.ndarray):
        return array
    if type(array).__module__.startswith("dask"):
        return array
    if hasattr(array, "shape") and hasattr(array, "dtype") and hasattr(array, "__getitem__"):
        if type(array).__module__.startswith("torch"):
            return array.detach().cpu().numpy()
        import dask.array as da

        # Without chunks of its own, read blocks of at most 256 per axis: a region read stays small.
        chunks = getattr(array, "chunks", None) or tuple(min(int(n), 256) for n in array.shape)
        return da.from_array(array, chunks=chunks, asarray=True)
    try:
        return np.asarray(array)
    except Exception:
        raise ValueError(f"`{what}` must be an array (NumPy, Dask, Zarr), a TIFF/Zarr path or a list of them, "
                         f"got {type(array).__name__}.") from None


def _open_path(path: Path, what: str) -> Any:
    import dask.array as da

    if not path.exists():
        raise ValueError(f"`{what}`: no file or folder at {str(path)!r}.")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        import tifffile
        import zarr

        store = tifffile.imread(str(path), aszarr=True)  # reads pages on demand
        z = zarr.open(store, mode="r")
        if not hasattr(z, "shape"):  # a multi-scale TIFF opens as a group: take full resolution
            z = z[sorted(z.array_keys())[0]]
        return da.from_array(z, chunks=z.chunks)
    if suffix == ".zarr" or (path / ".zarray").exists() or (path / "zarr.json").exists():
        import zarr

        z = zarr.open(str(path), mode="r")
        if not hasattr(z, "shape"):
            keys = sorted(z.array_keys())
            if not keys:
                raise ValueError(f"`{what}`: the Zarr group {str(path)!r} holds no array.")
            z = z[keys[0]]
        return da.from_array(z, chunks=z.chunks)
    raise ValueError(f"`{what}`: {str(path)!r} is neither a TIFF file nor a Zarr array "
                     f"(allowed: {', '.join(SUFFIXES)}).")


def _expand_folder(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES and not p.name.startswith("."))


def _pair_paths(images: Path, labels: Path) -> tuple[list[Path], list[Path]]:
    """Match files of two folders by name (``a.tif`` with ``a.tif``, ``a_labels.tif``, ``a_masks.tif``...)."""
    ims, lbs = _expand_folder(images), _expand_folder(labels)
    if not ims:
        raise ValueError(f"`images`: the folder {str(images)!r} holds no {'/'.join(SUFFIXES)} files.")
    by_stem = {}
    for p in lbs:
        stem = p.name.split(".")[0]
        for tail in ("_labels", "_label", "_masks", "_mask", "_seg", "_gt", "-labels", "-masks"):
            if stem.endswith(tail):
                stem = stem[: -len(tail)]
                break
        by_stem[stem] = p
    pairs = [(p, by_stem.get(p.name.split(".")[0])) for p in ims]
    missing = [p.name for p, q in pairs if q is None]
    if missing:
        raise ValueError(f"`labels`: no labels file in {str(labels)!r} matches image(s) {missing[:5]} by name "
                         f"(expected e.g. {missing[0]} or {missing[0].split('.')[0]}_labels.tif).")
    return [p for p, _ in pairs], [q for _, q in pairs]


def _as_list(images, labels, mask) -> tuple[list, list, list]:
    if isinstance(images, (str, os.PathLike)) and Path(images).is_dir() and Path(images).suffix.lower() != ".zarr":
        if not (isinstance(labels, (str, os.PathLike)) and Path(labels).is_dir()):
            raise ValueError(f"`labels` must be a folder when `images` is a folder ({str(images)!r}), got {labels!r}.")
        images, labels = _pair_paths(Path(images), Path(labels))
    if isinstance(images, (list, tuple)):
        if not isinstance(labels, (list, tuple)) or len(labels) != len(images):
            n = len(labels) if isinstance(labels, (list, tuple)) else "one array"
            raise ValueError(f"`labels` must be a list as long as `images` ({len(images)}), got {n}.")
        masks = list(mask) if isinstance(mask, (list, tuple)) else [mask] * len(images)
        if len(masks) != len(images):
            raise ValueError(f"`mask` must be a list as long as `images` ({len(images)}), got {len(masks)}.")
        return list(images), list(labels), masks
    return [images], [labels], [mask]


def _default_axes(image_shape, label_shape) -> str:
    """The image's axes from its labels': the labels' as :func:`segarch.axes.guess_axes` reads them, with C
    where the image has one axis more."""
    if not 2 <= len(label_shape) <= 4:
        raise ValueError(f"`labels` must have 2 to 4 dimensions when `axes` is not given, "
                         f"got shape {tuple(label_shape)}.")
    lab = guess_axes(label_shape, rgb=False)
    if len(image_shape) == len(label_shape):
        return lab
    if len(image_shape) == len(label_shape) + 1:
        if tuple(image_shape[1:]) == tuple(label_shape):
            return "C" + lab
        if tuple(image_shape[:-1]) == tuple(label_shape):
            return lab + "C"
    raise ValueError(f"`images` of shape {tuple(image_shape)} and `labels` of shape {tuple(label_shape)} do not match: "
                     f"the labels must have the image's shape, without its channel axis.")


def _check_labels_dtype(labels, name: str) -> None:
    kind = np.dtype(labels.dtype).kind
    if kind == "b":
        return
    if kind not in "iu":
        raise ValueError(f"`labels` ({name}) must hold integers (0 = background, 1.. = classes or objects), "
                         f"got dtype {labels.dtype}: convert with `labels.astype(np.uint16)` if its values are whole.")


def as_sources(images, labels, *, axes: str | None, mask, spatial_dims: int | None, in_channels: int | None
               ) -> list[Source]:
    """Normalise the user's ``images``/``labels`` (arrays, lists, paths, folders) into :class:`Source` objects.

    Args:
        axes: the image's axes, e.g. ``"YX"``, ``"CZYX"``, ``"TYX"`` (labels have the same axes without C).
        mask: ``None`` (annotated = slices holding labels), ``True`` (all annotated) or boolean arrays
            shaped like the labels.
        spatial_dims: the model's (``None``: as many as ``axes`` has of Z, Y, X).
        in_channels: the model's input channels (``None``: any).
    """
    ims, lbs, masks = _as_list(images, labels, mask)
    if not ims:
        raise ValueError("`images` is empty: pass at least one image.")
    sources = []
    for i, (im, lb, mk) in enumerate(zip(ims, lbs, masks)):
        name = str(im) if isinstance(im, (str, os.PathLike)) else f"image {i}"
        im, lb = _lazy(im, "images"), _lazy(lb, "labels")
        _check_labels_dtype(lb, name)
        ax = check_axes(axes, im.ndim) if axes else _default_axes(im.shape, lb.shape)
        lab_axes = ax.replace("C", "")
        expected = tuple(n for a, n in zip(ax, im.shape) if a != "C")
        if tuple(lb.shape) != expected:
            raise ValueError(f"`labels` of {name} has shape {tuple(lb.shape)}, but the image {tuple(im.shape)} with "
                             f"axes {ax!r} needs labels of shape {expected} (the image's shape without C).")
        channels = im.shape[ax.index("C")] if "C" in ax else 1
        if in_channels is not None and channels != in_channels:
            raise ValueError(f"{name} has {channels} channel(s) (axes {ax!r}, shape {tuple(im.shape)}), "
                             f"but the model takes `in_channels`={in_channels}.")
        space = spatial_letters(lab_axes)
        sd = spatial_dims or min(3, len(space))
        if len(space) < sd:
            raise ValueError(f"{name} has {len(space)} spatial axes ({space!r}), the model needs {sd} "
                             f"(`axes`={ax!r}).")
        spatial = lab_axes[-sd:] if lab_axes[-sd:] == space[-sd:] else None
        if spatial is None:
            raise ValueError(f"`axes` {ax!r} must end with the {sd} spatial axes (channel axis aside).")
        stack = lab_axes[: len(lab_axes) - sd]
        # Transpose to (stack..., C, *spatial) / (stack..., *spatial): views, lazy for Dask.
        order = [ax.index(a) for a in stack] + ([ax.index("C")] if "C" in ax else []) + [ax.index(a) for a in spatial]
        im = im.transpose(order)
        if "C" not in ax:
            im = im[(slice(None),) * len(stack) + (None,)]
        if mk is not None and mk is not True:
            mk = _lazy(mk, "mask")
            if tuple(mk.shape) != tuple(lb.shape):
                raise ValueError(f"`mask` of {name} must have the labels' shape {tuple(lb.shape)}, "
                                 f"got {tuple(mk.shape)}.")
            mk = mk.transpose([lab_axes.index(a) for a in stack + spatial])
        lb = lb.transpose([lab_axes.index(a) for a in stack + spatial])
        sources.append(Source(im, lb, mk, name, sd, len(stack)))
    dims = {s.spatial_dims for s in sources}
    if len(dims) > 1:
        raise ValueError(f"`images` mix 2D and 3D data ({sorted(dims)} spatial axes): train on one kind at a time.")
    return sources


def as_image_sources(images, *, axes: str | None, spatial_dims: int, in_channels: int, what: str = "adapt_to"
                     ) -> list[Source]:
    """Unlabelled images (an array, a TIFF/Zarr path, a folder of them or a list) as :class:`Source` objects
    read like training images, for a model of ``spatial_dims`` taking ``in_channels``: their labels are an
    all-background view (no memory) and every pixel counts (``mask=True``). ``what`` names the parameter in
    errors.

    Without ``axes``, each image's axes are guessed for the model (:func:`segarch.axes.guess_axes`).

    Raises:
        ValueError: no image (an empty list or folder), a missing file, or images whose channels are not the
            model's (the message names ``what``).
    """
    if isinstance(images, (str, os.PathLike)) and Path(images).is_dir() and Path(images).suffix.lower() != ".zarr":
        folder = Path(images)
        images = _expand_folder(folder)
        if not images:
            raise ValueError(f"`{what}`: the folder {str(folder)!r} holds no {'/'.join(SUFFIXES)} files.")
    images = list(images) if isinstance(images, (list, tuple)) else [images]
    if not images:
        raise ValueError(f"`{what}` is empty: pass at least one unlabelled image.")
    sources = []
    for i, image in enumerate(images):
        name = str(image) if isinstance(image, (str, os.PathLike)) else f"{what} image {i}"
        array = _lazy(image, what)
        if axes:
            ax = check_axes(axes, array.ndim, name=what)
        else:
            if in_channels == 1 and array.ndim == spatial_dims + 1 and array.shape[-1] in (3, 4):
                raise ValueError(f"`{what}`: {name} of shape {tuple(array.shape)} looks like {array.shape[-1]} "
                                 f"colour channels, but the model takes `in_channels`=1: convert it to one channel "
                                 f"or pass `axes`.")
            try:
                ax = guess_axes(array.shape, spatial_dims=spatial_dims, in_channels=in_channels)
            except ValueError as err:
                raise ValueError(f"`{what}`: {name}: {err}") from None
        blank = np.broadcast_to(np.zeros((), np.uint8), tuple(n for a, n in zip(ax, array.shape) if a != "C"))
        try:
            sources += as_sources([array], [blank], axes=ax, mask=True, spatial_dims=spatial_dims,
                                  in_channels=in_channels)
        except ValueError as err:
            raise ValueError(f"`{what}`: {name}: {err}") from None
        sources[-1].name = name
    return sources


def check_no_negative(minimum: int, name: str) -> None:
    """Raise the error for labels whose ``minimum`` is negative."""
    if minimum < 0:
        raise ValueError(f"`labels` of {name} hold negative values (minimum {minimum}): labels must be 0 "
                         f"(background) or positive classes/objects.")


def label_stats(sources: Sequence[Source]) -> tuple[int, int]:
    """Minimum and maximum label over all sources (chunk by chunk, in one pass, for lazy arrays)."""
    lo, hi = None, None
    for s in sources:
        if hasattr(s.labels, "dask"):
            import dask.array as da

            a, b = (int(v) for v in compute_here(da.stack([s.labels.min(), s.labels.max()]), parallel=True))
        else:
            a, b = int(s.labels.min()), int(s.labels.max())
        check_no_negative(a, s.name)
        lo = a if lo is None else min(lo, a)
        hi = b if hi is None else max(hi, b)
    return int(lo), int(hi)


def make_items(sources: Sequence[Source]) -> list[Item]:
    """One :class:`Item` per stack index, with which slices hold labels; raises if nothing is annotated."""
    items = []
    for s in sources:
        shape = s.stack_shape + ((s.spatial_shape[0],) if s.spatial_dims == 3 else ())
        if s.mask is None:
            # Which 2D planes hold labels: any() over Y and X, reduced lazily for Dask.
            planes = np.asarray(compute_here((s.labels > 0).any(axis=(-2, -1)), parallel=True), bool).reshape(shape)
        elif s.mask is True:
            planes = np.ones(shape, bool)
        else:
            planes = np.asarray(compute_here((s.mask != 0).any(axis=(-2, -1)), parallel=True), bool).reshape(shape)
        for index in np.ndindex(*s.stack_shape) if s.stack_shape else [()]:
            annotated = np.atleast_1d(planes[index])
            if annotated.any():
                items.append(Item(s, tuple(int(i) for i in index), annotated,
                                  tuple(slice(0, n) for n in s.spatial_shape)))
    if not items:
        hint = "" if any(s.mask is not None for s in sources) else " (no slice holds a label > 0)"
        raise ValueError(f"`labels` have no annotated pixels{hint}: paint at least one object and some background.")
    return items


def split_items(items: list[Item], val_fraction: float, patch: Sequence[int], rng: np.random.Generator
                ) -> tuple[list[Item], list[Item]]:
    """Hold out whole images when there are several, else a strip of the only one (along its longest in-plane axis)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"`val_fraction` must be in [0, 1), got {val_fraction!r}.")
    if val_fraction == 0:
        return items, []
    n_val = int(round(val_fraction * len(items)))
    if len(items) >= 2 and n_val >= 1:
        n_val = min(n_val, len(items) - 1)
        chosen = set(rng.choice(len(items), size=n_val, replace=False).tolist())
        val = [items[i] for i in sorted(chosen)]
        for it in val:
            it.held_out = True
        return [it for i, it in enumerate(items) if i not in chosen], val
    train, val = [], []
    for it in items:
        shape = it.shape
        axis = len(shape) - 2 + int(np.argmax(shape[-2:]))  # Y or X: keeps every annotated Z-slice in both parts
        length = shape[axis]
        width = max(int(round(val_fraction * length)), min(int(patch[axis]) // 2, length // 4))
        if width < 1 or length - width < 1:
            train.append(it)
            continue
        cut = it.bounds[axis].start + length - width
        tb, vb = list(it.bounds), list(it.bounds)
        tb[axis] = slice(it.bounds[axis].start, cut)
        vb[axis] = slice(cut, it.bounds[axis].stop)
        train.append(Item(it.source, it.index, it.annotated, tuple(tb)))
        val.append(Item(it.source, it.index, it.annotated, tuple(vb), held_out=True))
    return train, val


def _targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if num_classes == 2:
        return (labels > 0).astype(np.int64)  # instance labels or one class: foreground vs background
    return labels.astype(np.int64)


def check_finite(image: np.ndarray, source: Source, where: str) -> None:
    """Raise a clear error if ``image`` (values read from ``source`` at ``where``) holds NaN or infinite values.

    Without it, training would fail later with a non-finite loss that points at the learning rate.
    """
    bad = ~np.isfinite(image)
    if bad.any():
        first = tuple(int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"`images`: {source.name} holds NaN or infinite values ({int(bad.sum())} in the {where}, "
                         f"first at index {first} of it, channel first). Replace them (e.g. np.nan_to_num) first.")


def read_region(item: Item, start: Sequence[int], size: Sequence[int], *, preprocess, num_classes: int = 2,
                targets: Callable[[np.ndarray], np.ndarray] | None = None) -> Region:
    """Read ``size`` pixels from ``start`` (clipped to the item's bounds), preprocessed, with targets and mask.

    ``preprocess(image, item)`` pre-processes the raw region ``(C, *spatial)`` read from ``item``.
    ``targets(labels)`` turns the region's labels into what the model learns (default: the labels as
    classes, or foreground vs background when ``num_classes`` is 2), e.g. background/interior/boundary
    classes or a distance map from instance labels: integer results become int64, float ones float32.

    Regions smaller than ``size`` (small images, image borders) are padded: by reflection for the
    image, with "not annotated" for the mask, so padding never counts in the loss.
    """
    s = item.source
    lo = [max(b.start, min(int(p), b.stop - 1)) for p, b in zip(start, item.bounds)]
    hi = [min(b.stop, a + int(n)) for a, n, b in zip(lo, size, item.bounds)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    image = np.asarray(compute_here(s.image[item.index + (slice(None),) + box]), dtype=np.float32)
    check_finite(image, s, f"region from {tuple(lo)}" + (f" of image {item.index}" if item.index else ""))
    labels = np.asarray(compute_here(s.labels[item.index + box]))
    if s.mask is None:
        mask = np.ones(labels.shape, bool)
        if s.spatial_dims == 3:
            mask &= item.annotated[box[0]][:, None, None]
    elif s.mask is True:
        mask = np.ones(labels.shape, bool)
    else:
        mask = np.asarray(compute_here(s.mask[item.index + box])) != 0
    image = preprocess(image, item)
    pad = [(0, max(0, int(n) - (b - a))) for n, a, b in zip(size, lo, hi)]
    if any(p for _, p in pad):
        mode = "reflect" if all(b - a > p for (_, p), a, b in zip(pad, lo, hi)) else "edge"
        image = np.pad(image, [(0, 0)] + pad, mode=mode)
        labels = np.pad(labels, pad)
        mask = np.pad(mask, pad)
    if targets is None:
        target = _targets(labels, num_classes)
    else:
        target = np.asarray(targets(labels))
        target = target.astype(np.float32 if target.dtype.kind == "f" else np.int64)
    return Region(image.astype(np.float32), target, mask, tuple(lo))


def pixel_sizes(pixel_size: Any, sources: Sequence[Source], fallback: Sequence[float] | None = None
                ) -> list[tuple[float, ...]]:
    """One pixel size per source, per spatial axis: ``pixel_size`` (one for all, or a list with one per
    image), else the file's metadata (OME-TIFF, OME-Zarr) where it says, else ``fallback``, else 1.

    Raises:
        ValueError: a list of another length than the images, or sizes for another number of axes
            (naming ``pixel_size``).
    """
    dims = sources[0].spatial_dims
    if pixel_size is not None:
        many = isinstance(pixel_size[0], (list, tuple))
        sizes = list(pixel_size) if many else [pixel_size] * len(sources)
        if len(sizes) != len(sources):
            raise ValueError(f"`pixel_size` must be one size for all images or a list with one per image "
                             f"({len(sources)}), got a list of {len(sizes)}.")
        for size in sizes:
            if len(size) != dims:
                raise ValueError(f"`pixel_size` must have {dims} values per image (one per spatial axis, "
                                 f"{'Z, Y, X' if dims == 3 else 'Y, X'}), got {tuple(size)!r}.")
        return [tuple(float(v) for v in size) for size in sizes]
    default = tuple(float(v) for v in fallback) if fallback is not None and len(fallback) == dims else (1.0,) * dims
    return [_file_pixel_size(s, dims) or default for s in sources]


def _file_pixel_size(source: Source, dims: int) -> tuple[float, ...] | None:
    """The spatial pixel size recorded in the image file ``source`` was read from, if any."""
    path = Path(source.name)
    if not isinstance(source.name, str) or not path.exists():
        return None
    try:
        from segarch.io import open_image

        image = open_image(path)
    except Exception:  # a file the training reader opened but the metadata reader does not: no pixel size
        return None
    spatial = [a for a in image.axes if a in "ZYX"][-dims:]
    if len(spatial) != dims or not any(a in image.units for a in spatial):
        return None
    return tuple(float(image.scale[image.axes.index(a)]) for a in spatial)
