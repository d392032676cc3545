"""Seamless block-wise decoding: instance labels for images of any size, out of core.

The network's output map (class probabilities, ``(C, *spatial)``, e.g. written seam-free by
``segarch.predict(output="probabilities", out=...)``) is decoded block by block, each block with a
``halo`` of context around its core, into a Zarr labels store (or a NumPy array):

1. **Each block** decodes its window (core + halo) and keeps the labels of its *core* pixels. An object
   that does not touch the window's inner edge was seen whole: it is named by its first pixel in
   raster order over the whole image (its *anchor*), which every block that sees it whole computes
   alike, so the pieces of an object crossing a seam carry one name from every side. An object that
   touches the window's edge (larger than the halo allows) is a *fragment*, named by its first core
   pixel. The block also keeps, for each face, its own labels in a thin band inside the core and its
   window's labels in the band just across the seam (what it saw of its neighbour's pixels). Into a
   Zarr store the core goes at once, with provisional ids (the block's own, shifted per block), so a
   viewer reading the store sees the blocks appear as they are decoded.
2. **Across every seam** the two views of each band are compared: a name on one side and a name on
   the other that cover the same pixels (each more than half of its pixels in the band) are the same
   object, joined with a union-find (scipy's connected components). Ids 1..N are given in raster order
   of the objects' anchors, and objects smaller than ``min_size`` are dropped, over the whole image.
3. **Each block** rewrites its core with the final ids (the merge keeps only each block's object names
   and sizes in memory and reads the seam bands one seam at a time: tens of bytes per object, nothing per pixel).

When every object is smaller than the halo, the result equals decoding the whole image at once, up
to a renumbering (and with the raster numbering, exactly). Steps 1 and 3 are per block and resumable:
a killed or cancelled run continues where it stopped with ``resume=True``. A seam report (objects
merged across seams, fragments joined, objects touching the image border) is returned and stored in
the Zarr attributes under ``segarch.instances``.

Examples::

    >>> result = decode_blocks(probabilities, "distance", "cells.zarr", block=512, halo=48)
    >>> result.labels            # the Zarr array ``cells.zarr/0`` (uint32)
    >>> result.report            # {"objects": 1834, "merged_across_seams": 97, ...}
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from segarch.arrays import compute_here
from segarch.instances._checks import check_spacing
from segarch.instances.decode import get_decoder

__all__ = ["decode_blocks", "BlockDecoding", "DecodingCancelled", "DEFAULT_BLOCK", "DEFAULT_HALO"]

log = logging.getLogger("segarch.instances")

#: Block (core) size per spatial dimensionality: large enough that a block's decode is efficient.
DEFAULT_BLOCK = {2: 1024, 3: 128}
#: Halo per side: at least the largest object's diameter keeps every object whole in some window.
DEFAULT_HALO = {2: 48, 3: 24}

_META_DIR = ".segarch-instances"
#: What the merge keeps of every block's record (the seam bands are read seam by seam).
_RECORD = ("keys", "sizes", "border")
_SCRATCH = "_block_ids"


class DecodingCancelled(Exception):
    """Raised when ``cancel`` was set: a Zarr output is resumable with ``resume=True``."""


@dataclass
class BlockDecoding:
    """What :func:`decode_blocks` returns.

    Attributes:
        labels: uint32 instance labels, 0 background, 1..N (a NumPy array, or the Zarr array ``<out>/0``).
        report: the seam report: ``objects``, ``merged_across_seams`` (objects whose pixels lie in more
            than one block), ``joined_fragments`` (objects assembled from pieces no single window saw
            whole: larger than the halo), ``touching_border`` (objects touching the image border),
            ``blocks``, ``block``, ``halo``.
    """

    labels: Any
    report: dict[str, Any] = field(default_factory=dict)


# --- the grid -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BlockGrid:
    """Blocks ``(plane, position)`` over the loop planes and spatial axes, each with its core and halo window (also
    :mod:`segarch.instances.stuff`'s grid, without halo)."""

    loop: tuple[int, ...]      # sizes of leading axes decoded plane by plane (e.g. T)
    shape: tuple[int, ...]     # spatial sizes
    block: tuple[int, ...]
    halo: tuple[int, ...]
    band: tuple[int, ...]      # evidence band depth per axis

    @property
    def counts(self) -> tuple[int, ...]:
        return tuple(-(-n // b) for n, b in zip(self.shape, self.block))

    def keys(self) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
        planes = list(itertools.product(*[range(n) for n in self.loop]))
        return [(p, b) for p in planes for b in itertools.product(*[range(n) for n in self.counts])]

    def core(self, b: tuple[int, ...]) -> list[tuple[int, int]]:
        return [(i * s, min((i + 1) * s, n)) for i, s, n in zip(b, self.block, self.shape)]

    def window(self, b: tuple[int, ...]) -> list[tuple[int, int]]:
        return [(max(0, lo - h), min(n, hi + h)) for (lo, hi), h, n in zip(self.core(b), self.halo, self.shape)]

    def face_band(self, b: tuple[int, ...], axis: int) -> int:
        """Band depth across the seam between block ``b`` and its +``axis`` neighbour (both sides agree)."""
        nb = list(b)
        nb[axis] += 1
        size_a = np.diff(self.core(b)[axis])[0]
        size_b = np.diff(self.core(tuple(nb))[axis])[0]
        return int(min(self.band[axis], size_a, size_b))


# --- storage: NumPy in memory or a Zarr directory -------------------------------------------------------

class _MemoryStore:
    def __init__(self, full_shape: tuple[int, ...]) -> None:
        self.scratch = np.zeros(full_shape, np.uint32)
        self.labels = np.zeros(full_shape, np.uint32)
        self.meta: dict = {}
        self.final: set = set()

    def has_meta(self, key) -> bool:
        return key in self.meta

    def read_meta(self, key, names=None):
        meta = self.meta.get(key)
        return meta if meta is None or names is None else {k: meta[k] for k in names}

    def write_block(self, key, index, local, meta) -> None:
        self.scratch[index] = local
        self.meta[key] = meta

    def read_scratch(self, index):
        return self.scratch[index]

    def write_final(self, key, index, data) -> None:
        self.labels[index] = data
        self.final.add(key)

    def is_final(self, key) -> bool:
        return key in self.final

    def finish(self, report) -> None:
        self.scratch = None

    def close(self) -> None:
        pass

    def result(self):
        return self.labels


class _ZarrStore:
    """``<path>/0``: the labels (OME-Zarr labels image); scratch ids and per-block records beside it until done."""

    def __init__(self, path: Path, full_shape, chunks, fingerprint: str, settings: dict, scale, *, resume: bool,
                 overwrite: bool, inputs=()) -> None:
        import zarr

        from segarch.destinations import WriterLock, check_output_store

        self.path = Path(path)
        # The same rules as predict: never into an input, never deleting what segarch did not write.
        state = check_output_store(self.path, overwrite=overwrite, resume=resume, inputs=inputs)
        if state == "resume":
            group = zarr.open_group(str(self.path), mode="r+")
            previous = group.attrs.get("segarch", {}).get("fingerprint")
            if previous != fingerprint:
                raise ValueError(f"`out`={str(self.path)!r} holds a decoding with other settings; resume needs "
                                 f"the same probabilities shape, decoder, block, halo and spacing.\n"
                                 f"  stored: {previous}\n  now:    {fingerprint}")
        else:
            if state == "replace":
                shutil.rmtree(self.path)
            group = zarr.open_group(str(self.path), mode="w")
            group.create_array("0", shape=full_shape, chunks=chunks, dtype=np.uint32, fill_value=0,
                               dimension_names=[a.lower() for a in settings["axes"]])
            group.create_array(_SCRATCH, shape=full_shape, chunks=chunks, dtype=np.uint32, fill_value=0)
            group.attrs.update(_ome_labels_attrs(settings, fingerprint, scale))
        self.group = group
        self.labels = group["0"]
        self.lock = WriterLock(self.path / "0", self.path).acquire()  # one writer at a time
        self.meta_dir = self.path / _META_DIR
        (self.meta_dir / "final").mkdir(parents=True, exist_ok=True)
        self.complete = bool(self.labels.attrs.get("complete", False))

    def close(self) -> None:
        self.lock.release()

    @classmethod
    def attach(cls, path: str) -> "_ZarrStore":
        """The store as a Dask worker writes its blocks: no checks and no lock (the client holds it)."""
        import zarr

        store = cls.__new__(cls)
        store.path = Path(path)
        store.group = zarr.open_group(str(path), mode="r+")
        store.labels = store.group["0"]
        store.meta_dir = store.path / _META_DIR
        store.complete = False
        return store

    def _number(self, key) -> int:
        """The block's position in the store, counted in raster order (for provisional ids)."""
        plane, block = key
        counts = tuple(-(-n // c) for n, c in zip(self.labels.shape, self.labels.chunks))
        return int(np.ravel_multi_index(tuple(plane) + tuple(block), counts))

    @staticmethod
    def _name(key) -> str:
        plane, block = key
        return "_".join(map(str, plane)) + "-" + "_".join(map(str, block))

    def has_meta(self, key) -> bool:
        return (self.meta_dir / f"{self._name(key)}.npz").exists()

    def read_meta(self, key, names=None):
        """The block's record, or only the members ``names`` (an .npz reads only what is asked for)."""
        path = self.meta_dir / f"{self._name(key)}.npz"
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in (data.files if names is None else names)}

    def write_block(self, key, index, local, meta) -> None:
        self.group[_SCRATCH][index] = local
        # Shown now (a viewer's live layer reads ``0`` while the run goes on), renamed by step 3: the block's
        # own ids, shifted per block so that neighbouring blocks differ in colour.
        shift = np.uint32((self._number(key) << 16) & 0xFFFFFFFF)
        self.labels[index] = np.where(local > 0, local + shift, np.uint32(0))
        tmp = self.meta_dir / f"{self._name(key)}.partial.npz"
        np.savez_compressed(tmp, **meta)
        os.replace(tmp, self.meta_dir / f"{self._name(key)}.npz")  # the record is the block's done marker

    def read_scratch(self, index):
        return self.group[_SCRATCH][index]

    def write_final(self, key, index, data) -> None:
        self.labels[index] = data
        (self.meta_dir / "final" / self._name(key)).touch()

    def is_final(self, key) -> bool:
        return (self.meta_dir / "final" / self._name(key)).exists()

    def finish(self, report) -> None:
        attrs = dict(self.group.attrs)
        attrs.setdefault("segarch", {})["instances"] = report
        self.group.attrs.update(attrs)
        self.labels.attrs.update({"complete": True})
        shutil.rmtree(self.path / _SCRATCH, ignore_errors=True)
        shutil.rmtree(self.meta_dir, ignore_errors=True)

    def result(self):
        return self.labels


def _ome_labels_attrs(settings: dict, fingerprint: str, spacing) -> dict:
    """The store's OME-NGFF 0.5 metadata (the io package's one builder: the store is Zarr v3) and our own."""
    from segarch.io.ome_zarr import ome_attrs

    axes = settings["axes"]
    loops = len(axes) - len(spacing)
    attrs = ome_attrs(axes, [1.0] * loops + [float(v) for v in spacing], name="instances", labels=True)
    attrs["ome"]["image-label"]["source"] = {"image": "../../"}
    attrs["segarch"] = {"fingerprint": fingerprint, "settings": settings}
    return attrs


def _label_axes(axes: str | None, loops: int, spatial_dims: int) -> str:
    """The labels' axes letters (loop axes, then Z/Y/X); by default T, then Z for a second loop of a 2D map."""
    spatial = "ZYX"[-spatial_dims:]
    if axes is None:
        free = [a for a in "TZ" if a not in spatial]
        if loops > len(free):
            raise ValueError(f"`probabilities` has {loops} loop axes: pass `axes` (e.g. 'TZYX') to name them.")
        return "".join(free[:loops]) + spatial
    if (not isinstance(axes, str) or len(axes) != loops + spatial_dims or not axes.endswith(spatial)
            or len(set(axes)) != len(axes) or set(axes) - set("TZYX")):
        raise ValueError(f"`axes` must name the labels' {loops + spatial_dims} axes: loop axes from T and Z, then "
                         f"{spatial!r} (e.g. {'T' * loops + spatial!r}), got {axes!r}.")
    return axes


# --- the three steps ----------------------------------------------------------------------------------

def decode_blocks(probabilities, decoder: Any = "distance", out: str | os.PathLike | None = None, *,
                  block: int | Sequence[int] | None = None, halo: int | Sequence[int] | None = None,
                  spatial_dims: int | None = None, spacing: Sequence[float] | None = None,
                  min_size: int | None = None, resume: bool = False, overwrite: bool = False,
                  progress: Callable[[int, int], None] | None = None,
                  cancel: threading.Event | None = None, scheduler: Any = None,
                  axes: str | None = None) -> BlockDecoding:
    """Decode a network's class probabilities into instance labels, block by block, seamlessly.

    Args:
        probabilities: ``(C, *spatial)`` or ``(*loop, C, *spatial)`` (e.g. ``(T, C, Y, X)``) class
            probabilities: a NumPy, Zarr or Dask array (read one window at a time).
        decoder: a decoder name (``"distance"``, ``"boundary"``), its settings dict, a decoder object
            from :mod:`segarch.instances.decode`, or any callable ``(C, *window) -> labels`` that is local
            (its result for an object depends only on the probabilities around it).
        out: ``None`` for a NumPy result, or a directory: an OME-Zarr labels group whose array ``0``
            (uint32, chunked by ``block``) is written block by block.
        block: core size per block, one int or one per spatial axis (default 1024 in 2D, 128 in 3D).
        halo: context on each side of a core, in pixels (default 48 in 2D, 24 in 3D); objects up to about
            this size are decoded exactly as in the whole image, larger ones are joined across seams.
        spatial_dims: 2 or 3 (default: 3 if the map has 4 axes, else 2; set it for ``(T, C, Y, X)``).
        spacing: pixel size per spatial axis, recorded in the OME-Zarr scale.
        axes: the labels' axes letters for the OME-Zarr metadata, e.g. ``"TYX"`` or ``"ZYX"`` for a 2D map
            over a stack (default: ``T``, then ``Z``, for loop axes).
        min_size: drop objects smaller than this many pixels, counted over the whole image (default: the
            decoder's ``min_size``).
        resume: continue an interrupted run in ``out`` (same settings).
        overwrite: replace an existing ``out``.
        progress: called as ``progress(done, total)`` after each block step (two steps per block).
        cancel: a ``threading.Event``; when set, the run stops after the current block and raises
            :class:`DecodingCancelled` (a Zarr output then resumes).
        scheduler: a ``dask.distributed.Client`` or scheduler address: the blocks of steps 1 and 3 are
            decoded and written by the cluster's workers (they read ``probabilities`` and write ``out``
            themselves, so both must be reachable from them); the seam merge runs here. Needs ``out``.

    Returns:
        A :class:`BlockDecoding` with the labels and the seam report (the same with or without a cluster).
    """
    shape = tuple(int(s) for s in probabilities.shape)
    if spatial_dims is None:
        spatial_dims = 3 if len(shape) == 4 else 2
    if spatial_dims not in (2, 3) or len(shape) < spatial_dims + 1:
        raise ValueError(f"`probabilities` must be (C, Y, X), (C, Z, Y, X) or have leading loop axes, with "
                         f"`spatial_dims` 2 or 3; got shape {shape} and spatial_dims={spatial_dims!r}.")
    loop, channels, spatial = shape[:-spatial_dims - 1], shape[-spatial_dims - 1], shape[-spatial_dims:]
    decode_fn, settings_of_decoder, keep_min = _decoder(decoder, channels)
    min_size = keep_min if min_size is None else min_size
    if not isinstance(min_size, (int, np.integer)) or isinstance(min_size, bool) or min_size < 0:
        raise ValueError(f"`min_size` must be an integer >= 0 (pixels), got {min_size!r}.")
    blocks = _sizes(block, DEFAULT_BLOCK[spatial_dims], spatial_dims, "block", minimum=1)
    halos = _sizes(halo, DEFAULT_HALO[spatial_dims], spatial_dims, "halo", minimum=1)
    spacing = check_spacing(spacing, spatial_dims)
    blocks = tuple(min(b, n) for b, n in zip(blocks, spatial))
    grid = BlockGrid(loop, spatial, blocks, halos, tuple(max(1, min(8, h // 2)) for h in halos))
    settings = {"spatial_shape": list(spatial), "loop_shape": list(loop), "channels": channels,
                "block": list(blocks), "halo": list(halos), "spacing": list(spacing), "min_size": int(min_size),
                "decoder": settings_of_decoder, "axes": _label_axes(axes, len(loop), spatial_dims)}
    fingerprint = json.dumps(settings, sort_keys=True, default=str)
    full_shape = tuple(loop) + tuple(spatial)
    if scheduler is not None and out is None:
        raise ValueError("`scheduler` needs `out` (a .zarr path the workers can write to).")
    client = None
    if scheduler is not None:
        from segarch.tiling.distributed import connect

        client = connect(scheduler)
    if out is None:
        if resume:
            raise ValueError("`resume`=True needs `out`: only a Zarr output records finished blocks.")
        store = _MemoryStore(full_shape)
    else:
        store = _ZarrStore(Path(out), full_shape, (1,) * len(loop) + blocks, fingerprint, settings, spacing,
                           resume=resume, overwrite=overwrite, inputs=_paths_of(probabilities))
        if store.complete:
            store.close()
            return BlockDecoding(store.result(), dict(store.group.attrs.get("segarch", {}).get("instances", {})))
    try:
        if client is not None:
            return _run(probabilities, grid, decode_fn, store, min_size, progress, cancel,
                        _ClusterSteps(client, probabilities, grid, decoder, channels, store.path))
        return _run(probabilities, grid, decode_fn, store, min_size, progress, cancel)
    finally:
        store.close()


def _paths_of(array) -> list[str]:
    """The folder a Zarr array is read from (so ``out`` cannot be it), if any."""
    store = getattr(array, "store", None)
    root = getattr(store, "root", None)
    return [str(root)] if root is not None else []


def _run(probabilities, grid: BlockGrid, decode_fn, store, min_size: int, progress, cancel,
         cluster: "_ClusterSteps | None" = None) -> BlockDecoding:
    keys = grid.keys()
    total = 2 * len(keys)
    state = {"done": 0}

    def step_done() -> None:
        state["done"] += 1
        if progress is not None:
            progress(state["done"], total)

    def check_cancel() -> None:
        if cancel is not None and cancel.is_set():
            raise DecodingCancelled(f"decoding cancelled after {state['done']} of {total} block steps")

    # step 1: decode each window, keep the core
    todo = [key for key in keys if not store.has_meta(key)]
    for _ in range(len(keys) - len(todo)):
        step_done()
    if cluster is not None:
        cluster.run(_decode_task, todo, (), step_done, check_cancel)
    else:
        for key in todo:
            check_cancel()
            _decode_block(probabilities, grid, key, decode_fn, store)
            step_done()
    # Only each block's object names, sizes and border names stay in memory (tens of bytes per object); the
    # seam bands (~0.5 MiB per 1024² block) are read seam by seam, so the merge does not grow with the image.
    records = {key: store.read_meta(key, _RECORD) for key in keys}
    final_of_node, nodes, report = _merge(grid, keys, records, min_size, store.read_meta)
    # step 3: final ids
    todo = [key for key in keys if not store.is_final(key)]
    for _ in range(len(keys) - len(todo)):
        step_done()
    luts = {key: _lut(records[key]["keys"], final_of_node, nodes) for key in todo}
    if cluster is not None:
        cluster.run(_final_task, todo, luts, step_done, check_cancel)
    else:
        for key in todo:
            check_cancel()
            _write_final(grid, key, luts[key], store)
            step_done()
    report.update({"blocks": len(keys), "block": list(grid.block), "halo": list(grid.halo)})
    store.finish(report)
    log.info("decode_blocks: %d objects in %d blocks; %d merged across seams, %d joined from fragments, "
             "%d touching the image border", report["objects"], len(keys), report["merged_across_seams"],
             report["joined_fragments"], report["touching_border"])
    return BlockDecoding(store.result(), report)


def _lut(local_keys: np.ndarray, final_of_node: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Local id (1..n of a block) → final id."""
    lut = np.zeros(local_keys.size + 1, np.uint32)
    lut[1:] = final_of_node[np.searchsorted(nodes, local_keys)]
    return lut


def _write_final(grid: BlockGrid, key, lut: np.ndarray, store) -> None:
    index = _index(grid, key, grid.core(key[1]))
    store.write_final(key, index, lut[np.asarray(store.read_scratch(index))])


class _ClusterSteps:
    """Steps 1 and 3 on a Dask cluster: one task per block; each worker reads its window and writes its
    block into the store itself (no pixels travel through the scheduler)."""

    def __init__(self, client, probabilities, grid: BlockGrid, decoder, channels: int, path: Path) -> None:
        self.client = client
        self.common = (grid, decoder, channels, str(path))
        # Zarr/Dask inputs travel as their (small) description; a NumPy map is scattered once.
        self.probabilities = client.scatter(probabilities, broadcast=True) if isinstance(probabilities, np.ndarray) \
            else probabilities

    def run(self, task, keys, extra, step_done, check_cancel) -> None:
        from distributed import as_completed

        futures = [self.client.submit(task, self.probabilities, *self.common, key,
                                      extra[key] if isinstance(extra, dict) else None, pure=False) for key in keys]
        try:
            for future in as_completed(futures):
                future.result()  # a worker's error is raised here
                step_done()
                check_cancel()
        except BaseException:
            self.client.cancel(futures)  # blocks written so far stay: their records make a resume skip them
            raise


def _decode_task(probabilities, grid, decoder, channels, path, key, _unused) -> None:
    decode_fn, _, _ = _decoder(decoder, channels)
    _decode_block(probabilities, grid, key, decode_fn, _ZarrStore.attach(path))


def _final_task(probabilities, grid, decoder, channels, path, key, lut) -> None:
    _write_final(grid, key, lut, _ZarrStore.attach(path))


def _decoder(decoder, channels: int):
    """(callable(window) -> labels without size filtering, settings for the fingerprint, min_size)."""
    if callable(decoder):  # a user's own decoder
        return decoder, getattr(decoder, "__qualname__", repr(decoder)), 0
    dec = get_decoder(decoder)
    if dec.channels != channels:
        raise ValueError(f"the {dec.name!r} decoder needs {dec.channels} probability channels, `probabilities` has "
                         f"{channels}; pass the decoder the model was trained for.")
    return (lambda p: dec.decode(p, min_size=0)), dec.settings(), int(dec.min_size)


def _sizes(value, default: int, dims: int, name: str, minimum: int) -> tuple[int, ...]:
    if value is None:
        return (default,) * dims
    values = [value] * dims if isinstance(value, (int, np.integer)) else list(value)
    if len(values) != dims or any(not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < minimum
                                  for v in values):
        raise ValueError(f"`{name}` must be an integer >= {minimum} or {dims} of them (one per spatial axis), "
                         f"got {value!r}.")
    return tuple(int(v) for v in values)


def _index(grid: BlockGrid, key, region) -> tuple:
    plane, _ = key
    return tuple(plane) + tuple(slice(lo, hi) for lo, hi in region)


def _decode_block(probabilities, grid: BlockGrid, key, decode_fn, store) -> None:
    plane, b = key
    window, core = grid.window(b), grid.core(b)
    dims = len(grid.shape)
    data = probabilities[tuple(plane) + (slice(None),) + tuple(slice(lo, hi) for lo, hi in window)]
    data = compute_here(data)  # not napari's process-wide Dask callbacks: this may run beside a viewer
    labels = np.asarray(decode_fn(np.asarray(data, np.float32)))
    if labels.shape != tuple(hi - lo for lo, hi in window):
        raise ValueError(f"the decoder returned shape {labels.shape} for a window of {[hi - lo for lo, hi in window]}.")
    labels = labels.astype(np.int64, copy=False)
    n = int(labels.max()) if labels.size else 0
    full = tuple(grid.loop) + tuple(grid.shape)
    origin = np.array([lo for lo, _ in window])

    def global_linear(flat_index: np.ndarray, region_shape, region_origin) -> np.ndarray:
        coords = np.unravel_index(flat_index, region_shape)
        return np.ravel_multi_index(tuple(np.full(flat_index.shape, p) for p in plane)
                                    + tuple(c + o for c, o in zip(coords, region_origin)), full).astype(np.int64)

    # Objects touching the window's inner edge were not seen whole here.
    partial = np.zeros(n + 1, bool)
    for axis, ((wlo, whi), size) in enumerate(zip(window, grid.shape)):
        if wlo > 0:
            partial[np.unique(labels.take(0, axis=axis))] = True
        if whi < size:
            partial[np.unique(labels.take(-1, axis=axis))] = True
    partial[0] = False
    key_of = np.zeros(n + 1, np.int64)
    ids, first = np.unique(labels.ravel(), return_index=True)
    whole = (ids > 0) & ~partial[ids]
    key_of[ids[whole]] = 2 * global_linear(first[whole], labels.shape, origin)

    inner = tuple(slice(lo - wlo, hi - wlo) for (lo, hi), (wlo, _) in zip(core, window))
    core_labels = labels[inner]
    core_shape = core_labels.shape
    core_ids, core_first, core_counts = np.unique(core_labels.ravel(), return_index=True, return_counts=True)
    frag = (core_ids > 0) & partial[core_ids]
    key_of[core_ids[frag]] = 2 * global_linear(core_first[frag], core_shape, [lo for lo, _ in core]) + 1
    present = core_ids > 0
    local_of = np.zeros(n + 1, np.uint32)
    local_of[core_ids[present]] = np.arange(1, int(present.sum()) + 1, dtype=np.uint32)
    meta: dict[str, np.ndarray] = {"keys": key_of[core_ids[present]], "sizes": core_counts[present].astype(np.int64)}

    # Evidence for the seams: per face, our core labels just inside, and our window's labels just across.
    for axis in range(dims):
        for side in (-1, 1):
            nb = list(b)
            nb[axis] += side
            if not 0 <= nb[axis] < grid.counts[axis]:
                continue
            depth = grid.face_band(b if side > 0 else tuple(nb), axis)
            lo, hi = core[axis]
            own = (hi - depth, hi) if side > 0 else (lo, lo + depth)
            across = (hi, hi + depth) if side > 0 else (lo - depth, lo)
            for name, (a0, a1) in (("own", own), ("across", across)):
                sl = list(inner)
                sl[axis] = slice(a0 - window[axis][0], a1 - window[axis][0])
                meta[f"{name}_{axis}_{'+' if side > 0 else '-'}"] = key_of[labels[tuple(sl)]]
    # Objects on the image border (for the report).
    border = []
    for axis, ((lo, hi), size) in enumerate(zip(core, grid.shape)):
        if lo == 0:
            border.append(np.unique(key_of[core_labels.take(0, axis=axis)]))
        if hi == size:
            border.append(np.unique(key_of[core_labels.take(-1, axis=axis)]))
    meta["border"] = np.unique(np.concatenate(border)) if border else np.zeros(0, np.int64)
    store.write_block(key, _index(grid, key, core), local_of[core_labels], meta)


def _merge(grid: BlockGrid, keys, metas, min_size: int, read_bands: Callable[[Any, Sequence[str]], dict]):
    """Union-find over the blocks' object names → (final id per node, the sorted node names, report).

    ``metas`` holds each block's ``keys``, ``sizes`` and ``border``; ``read_bands(key, names)`` reads a
    block's seam bands, one seam at a time.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    all_keys = [m["keys"] for m in metas.values()]
    nodes = np.unique(np.concatenate(all_keys)) if all_keys else np.zeros(0, np.int64)
    edges: list[np.ndarray] = []
    for key in keys:
        plane, b = key
        for axis in range(len(grid.shape)):
            nb = list(b)
            nb[axis] += 1
            if nb[axis] >= grid.counts[axis]:
                continue
            mine = read_bands(key, (f"own_{axis}_+", f"across_{axis}_+"))
            other = read_bands((plane, tuple(nb)), (f"own_{axis}_-", f"across_{axis}_-"))
            for authority, evidence in ((mine[f"own_{axis}_+"], other[f"across_{axis}_-"]),
                                        (other[f"own_{axis}_-"], mine[f"across_{axis}_+"])):
                edges.append(_agreeing_pairs(authority, evidence))
    pairs = np.concatenate(edges) if edges else np.zeros((0, 2), np.int64)
    pairs = pairs[np.isin(pairs, nodes).all(1)] if pairs.size else pairs  # names seen only in halos are no nodes
    n = nodes.size
    rows, cols = np.searchsorted(nodes, pairs[:, 0]), np.searchsorted(nodes, pairs[:, 1])
    graph = coo_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=(n, n))
    count, component = connected_components(graph, directed=False)

    size = np.zeros(count, np.int64)
    blocks_per = np.zeros(count, np.int64)
    for meta in metas.values():
        comp = component[np.searchsorted(nodes, meta["keys"])]
        np.add.at(size, comp, meta["sizes"])
        np.add.at(blocks_per, np.unique(comp), 1)
    keep = size >= max(min_size, 1)
    first_key = np.full(count, np.iinfo(np.int64).max)
    np.minimum.at(first_key, component, nodes)
    order = np.argsort(np.where(keep, first_key, np.iinfo(np.int64).max), kind="stable")
    final = np.zeros(count, np.uint32)
    kept = int(keep.sum())
    final[order[:kept]] = np.arange(1, kept + 1, dtype=np.uint32)
    members = np.bincount(component, minlength=count)
    border = np.unique(np.concatenate([m["border"] for m in metas.values()])) if metas else np.zeros(0, np.int64)
    border = border[np.isin(border, nodes)]
    touching = np.unique(final[component[np.searchsorted(nodes, border)]]) if border.size else np.zeros(0)
    report = {
        "objects": kept,
        "merged_across_seams": int((keep & (blocks_per > 1)).sum()),
        "joined_fragments": int((keep & (members > 1)).sum()),
        "touching_border": int((touching > 0).sum()),
        "dropped_small": int((~keep).sum()),
    }
    return final[component], nodes, report


def _agreeing_pairs(authority: np.ndarray, evidence: np.ndarray) -> np.ndarray:
    """Name pairs (core's, neighbour's view) covering mostly the same pixels of a band: the same object."""
    a, e = authority.ravel(), evidence.ravel()
    both = (a > 0) & (e > 0) & (a != e)
    if not both.any():
        return np.zeros((0, 2), np.int64)
    pairs, overlap = np.unique(np.stack([a[both], e[both]]), axis=1, return_counts=True)
    a_ids, a_counts = np.unique(a[a > 0], return_counts=True)
    e_ids, e_counts = np.unique(e[e > 0], return_counts=True)
    a_size = a_counts[np.searchsorted(a_ids, pairs[0])]
    e_size = e_counts[np.searchsorted(e_ids, pairs[1])]
    agree = (2 * overlap > a_size) & (2 * overlap > e_size)
    return pairs[:, agree].T.astype(np.int64)
