"""Per-object measurements: one row per label, with scikit-image's ``regionprops_table``.

Columns (2D names; 3D uses ``volume_voxels``/``volume`` and adds ``centroid_z``, ``bbox_min_z`` ...):

==================  ============================================================================
``label``           the object's id in the label image
``class``           its class (when a class map or a label → class mapping is given)
``area_pixels``     pixel count
``area``            the same in physical units: pixels × the pixel area (``spacing``)
``centroid_y/x``    centre of mass, in pixels
``bbox_min_y/x``    bounding box start (inclusive), in pixels
``bbox_max_y/x``    bounding box end (exclusive), in pixels
``mean_intensity``  mean of ``image`` over the object (one column per channel: ``mean_intensity_c0`` ...)
==================  ============================================================================

Label images larger than memory (Zarr) are measured chunk by chunk: each chunk's table is summed into
the totals (pixel counts, coordinate and intensity sums, box extremes), so an object cut by chunk
borders is measured whole.

Examples::

    >>> table = measure(labels, image, spacing=(2.0, 0.5, 0.5))    # dict of columns (NumPy arrays)
    >>> write_table(table, "objects.csv")                         # or .parquet (with pyarrow)
"""

from __future__ import annotations

import csv
import itertools
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from segarch.instances._checks import check_spacing

__all__ = ["measure", "write_table", "table_summary"]

_AXES = "zyx"
_CSV_ROWS = 65536


def measure(labels, image=None, *, classes=None, spacing: Sequence[float] | None = None,
            chunk: int | Sequence[int] | None = None) -> dict[str, np.ndarray]:
    """Measure every object of ``labels``.

    Args:
        labels: instance labels ``(Y, X)`` or ``(Z, Y, X)`` (NumPy, Zarr or Dask), 0 background.
        image: intensities of the same spatial shape, optionally with a leading channel axis
            ``(C, *spatial)``; ``None`` leaves out ``mean_intensity``.
        classes: each object's class: a class map of the labels' shape (the object's most frequent
            class), or a mapping ``{label: class}``.
        spacing: pixel size per axis for the physical area/volume (default 1).
        chunk: block size for reading ``labels`` (default: its Zarr chunks, or all at once for NumPy).

    Returns:
        A dict of equally long NumPy columns, one row per object in increasing label order (pandas:
        ``pandas.DataFrame(table)``; napari: ``layer.features = table``).
    """
    shape = tuple(int(s) for s in labels.shape)
    dims = len(shape)
    if dims not in (2, 3):
        raise ValueError(f"`labels` must be 2D (Y, X) or 3D (Z, Y, X), got shape {shape}.")
    spacing = check_spacing(spacing, dims)
    channels = None
    if image is not None:
        image_shape = tuple(image.shape)
        if image_shape == shape:
            channels = 0
        elif len(image_shape) == dims + 1 and image_shape[1:] == shape:
            channels = image_shape[0]
        else:
            raise ValueError(f"`image` must have the labels' shape {shape} (or (C, *{shape})), got {image_shape}.")
    class_map = classes is not None and not isinstance(classes, Mapping)
    if class_map and tuple(classes.shape) != shape:
        raise ValueError(f"`classes` must be a class map of the labels' shape {shape} or a {{label: class}} "
                         f"mapping, got shape {tuple(classes.shape)}.")
    blocks = _blocks(labels, shape, chunk)
    totals = _Totals(dims)
    for box in blocks:
        lab = np.asarray(labels[box])
        if lab.dtype.kind not in "iu":
            raise ValueError(f"`labels` must hold integer labels, got dtype {lab.dtype}.")
        if not lab.any():
            continue
        img = None
        if channels is not None:
            img = np.asarray(image[box] if channels == 0 else image[(slice(None),) + box], np.float64)
            if channels:
                img = np.moveaxis(img, 0, -1)  # regionprops wants channels last
        _accumulate(totals, lab, img, np.asarray(classes[box]) if class_map else None, [b.start for b in box], shape)
    return _table(totals, dims, spacing, channels, classes if isinstance(classes, Mapping) else None)


def _blocks(labels, shape: tuple[int, ...], chunk) -> list[tuple[slice, ...]]:
    if chunk is None:
        chunks = getattr(labels, "chunks", None)
        if chunks is not None and not isinstance(labels, np.ndarray):
            # Zarr: one chunk tuple; Dask: per-axis tuples of sizes (take the largest).
            chunk = [max(c) if isinstance(c, tuple) else int(c) for c in chunks]
            chunk = [max(int(c), 1) for c in chunk]
        else:
            chunk = list(shape)
    chunk = list(np.broadcast_to(np.asarray(chunk, int), (len(shape),)))
    if any(c < 1 for c in chunk):
        raise ValueError(f"`chunk` must be positive sizes, got {chunk!r}.")
    starts = [range(0, n, c) for n, c in zip(shape, chunk)]
    return [tuple(slice(s, min(s + c, n)) for s, c, n in zip(start, chunk, shape))
            for start in itertools.product(*starts)]


class _Totals:
    """Per-object sums over chunks, kept as arrays: a few dozen bytes per object, so a table of millions of
    objects stays small. Rows of objects that lie inside one chunk are final as measured (kept as they come);
    only objects cut by chunk borders have one row per chunk, summed now and then."""

    _REDUCE_EVERY = 64

    def __init__(self, dims: int) -> None:
        self.dims = dims
        self.done: list[dict[str, np.ndarray]] = []   # objects seen whole in a chunk
        self.parts: list[dict[str, np.ndarray]] = []  # pieces of objects cut by chunk borders
        self.votes: list[np.ndarray] = []  # (label, class, count) triples

    def add(self, part: dict[str, np.ndarray], whole: np.ndarray) -> None:
        self.done.append({k: v[whole] for k, v in part.items()})
        self.parts.append({k: v[~whole] for k, v in part.items()})
        if len(self.parts) >= self._REDUCE_EVERY:
            self.parts = [self._sum(self.parts)]

    def reduced(self) -> dict[str, np.ndarray]:
        """One row per label, in increasing label order."""
        rows, self.done = self.done + ([self._sum(self.parts)] if self.parts else []), []
        if not rows:
            return self._sum([])
        cat = {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}
        del rows
        order = np.argsort(cat["label"], kind="stable")
        labels = cat["label"][order]
        if labels.size > 1 and not (labels[1:] > labels[:-1]).all():  # a label in places no chunk joins
            return self._sum([cat])
        return {k: v[order] for k, v in cat.items()}

    def _sum(self, parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        if not parts:
            d = self.dims
            return {"label": np.zeros(0, np.int64), "n": np.zeros(0, np.int64), "centre": np.zeros((0, d)),
                    "lo": np.zeros((0, d), np.int64), "hi": np.zeros((0, d), np.int64)}
        cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        labels, inverse = np.unique(cat["label"], return_inverse=True)
        out = {"label": labels}
        for key in ("n", "centre", "intensity"):
            if key in cat:
                total = np.zeros((labels.size,) + cat[key].shape[1:], cat[key].dtype)
                np.add.at(total, inverse, cat[key])
                out[key] = total
        out["lo"] = np.full((labels.size, self.dims), np.iinfo(np.int64).max, np.int64)
        np.minimum.at(out["lo"], inverse, cat["lo"])
        out["hi"] = np.full((labels.size, self.dims), np.iinfo(np.int64).min, np.int64)
        np.maximum.at(out["hi"], inverse, cat["hi"])
        return out

    def majority_class(self, labels: np.ndarray) -> np.ndarray | None:
        """Each object's most frequent class (ties: the smaller class), or None without a class map."""
        if not self.votes:
            return None
        triples = np.concatenate(self.votes, axis=1)
        pairs, inverse = np.unique(triples[:2], axis=1, return_inverse=True)
        counts = np.zeros(pairs.shape[1], np.int64)
        np.add.at(counts, inverse.ravel(), triples[2])
        order = np.lexsort((pairs[1], -counts, pairs[0]))  # by label, then most votes, then smaller class
        first = np.ones(order.size, bool)
        first[1:] = pairs[0][order][1:] != pairs[0][order][:-1]
        winners = dict(zip(pairs[0][order][first].tolist(), pairs[1][order][first].tolist()))
        return np.array([winners[int(k)] for k in labels], np.int64)


def _accumulate(totals: _Totals, lab: np.ndarray, img, class_map, offset: list[int], shape) -> None:
    from skimage.measure import regionprops_table

    dims = lab.ndim
    props = ["label", "area", "centroid", "bbox"] + (["intensity_mean"] if img is not None else [])
    t = regionprops_table(lab, intensity_image=img, properties=props)
    n = t["area"].astype(np.int64)
    part = {
        "label": t["label"].astype(np.int64), "n": n,
        "centre": np.stack([(t[f"centroid-{a}"] + offset[a]) * n for a in range(dims)], axis=1),
        "lo": np.stack([t[f"bbox-{a}"] + offset[a] for a in range(dims)], axis=1).astype(np.int64),
        "hi": np.stack([t[f"bbox-{a + dims}"] + offset[a] for a in range(dims)], axis=1).astype(np.int64),
    }
    if img is not None:
        keys = sorted(k for k in t if k.startswith("intensity_mean"))
        part["intensity"] = np.stack([t[k] * n for k in keys], axis=1)
    # Whole in this chunk: no box side on a chunk border that has a chunk beyond it.
    whole = np.ones(n.size, bool)
    for a in range(dims):
        if offset[a] > 0:
            whole &= part["lo"][:, a] > offset[a]
        if offset[a] + lab.shape[a] < shape[a]:
            whole &= part["hi"][:, a] < offset[a] + lab.shape[a]
    totals.add(part, whole)
    if class_map is not None:
        mask = lab > 0
        pairs, counts = np.unique(np.stack([lab[mask].astype(np.int64), class_map[mask].astype(np.int64)]),
                                  axis=1, return_counts=True)
        totals.votes.append(np.concatenate([pairs, counts[None].astype(np.int64)]))


def _table(totals: _Totals, dims: int, spacing: tuple[float, ...], channels, mapping) -> dict[str, np.ndarray]:
    rows = totals.reduced()
    labels, n = rows["label"], rows["n"]
    axes = _AXES[-dims:]
    size = "area" if dims == 2 else "volume"
    unit = "pixels" if dims == 2 else "voxels"
    table: dict[str, np.ndarray] = {"label": labels}
    if mapping is not None:
        table["class"] = np.array([mapping.get(int(k), mapping.get(str(int(k)))) for k in labels], object)
    else:
        classes = totals.majority_class(labels)
        if classes is not None:
            table["class"] = classes
    table[f"{size}_{unit}"] = n
    table[size] = n * float(np.prod(spacing))
    for a, axis in enumerate(axes):
        table[f"centroid_{axis}"] = rows["centre"][:, a] / n if n.size else np.zeros(0)
    for a, axis in enumerate(axes):
        table[f"bbox_min_{axis}"] = rows["lo"][:, a]
    for a, axis in enumerate(axes):
        table[f"bbox_max_{axis}"] = rows["hi"][:, a]
    if channels is not None:
        means = rows["intensity"] / n[:, None] if "intensity" in rows else np.zeros((0, max(channels, 1)))
        if channels == 0:
            table["mean_intensity"] = means[:, 0]
        else:
            for c in range(channels):
                table[f"mean_intensity_c{c}"] = means[:, c]
    return table


def table_summary(table: Mapping[str, np.ndarray]) -> dict[str, float]:
    """``{"objects": N, "median_size": ..., "median_size_pixels": ...}`` of a :func:`measure` table."""
    size = "area" if "area" in table else "volume"
    pixels = "area_pixels" if size == "area" else "volume_voxels"
    count = int(len(table["label"]))
    return {"objects": count,
            "median_size": float(np.median(table[size])) if count else 0.0,
            "median_size_pixels": float(np.median(table[pixels])) if count else 0.0}


def write_table(table: Mapping[str, np.ndarray], path: str | os.PathLike) -> Path:
    """Write a :func:`measure` table as CSV (``.csv``) or Parquet (``.parquet``, needs pyarrow).

    Returns the path written. The file is written to a temporary name and renamed, so a reader never
    sees half a table.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ValueError(f"`path` must end in .csv or .parquet, got {str(path)!r}.")
    tmp = path.with_name(path.name + ".partial")
    columns = list(table)
    if suffix == ".parquet":
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            raise ValueError("writing a .parquet table needs pyarrow (`pip install pyarrow`); write .csv instead.") \
                from None
        arrays = {k: (np.asarray(v).tolist() if np.asarray(v).dtype == object else np.asarray(v))
                  for k, v in table.items()}
        pq.write_table(pa.table(arrays), tmp)
    else:
        rows = len(table[columns[0]]) if columns else 0
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(columns)
            # A slice of rows at a time: Python numbers for every cell at once would take ~30 bytes each.
            for start in range(0, rows, _CSV_ROWS):
                writer.writerows(zip(*(np.asarray(table[c][start:start + _CSV_ROWS]).tolist() for c in columns)))
    os.replace(tmp, path)
    return path
