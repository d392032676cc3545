"""The local pipeline of ``segarch.predict``: read a tile, run a batch, assemble blocks.

Used by both paths: in this process (:func:`run_local`: a reader thread, the forward passes, a
blending/writing thread) and on a Dask cluster (:mod:`segarch.tiling.distributed`: one task per region,
the same :func:`read_tile`, :func:`pad_batch` and :class:`~segarch.tiling.plan.Assembler`), so both
compute the same numbers and neither imports the other's entry point.
"""

from __future__ import annotations

import queue
import threading

import numpy as np

from segarch.preprocessing import Preprocessor
from segarch.tiling import scenes
from segarch.tiling.plan import Assembler, Plan, Region, TileKey
from segarch.tiling.runner import NetworkRunner
from segarch.tiling.skipping import TileSkipper
from segarch.tiling.source import ImageSource

__all__ = ["read_tile", "pad_batch", "run_local", "SKIP_CONSTANT_TILES"]

# Tiles whose input is constant (empty background, nodata, padding) are computed once per value and the
# result reused (segarch.tiling.skipping): off only to measure what it saves.
SKIP_CONSTANT_TILES = True

_LUMINANCE = np.array([0.2125, 0.7154, 0.0721], np.float32)  # ITU-R BT.709, as skimage.color.rgb2gray


def pad_batch(tiles: list[np.ndarray], batch_size: int) -> np.ndarray:
    """``tiles`` stacked into one batch of ``batch_size``, zero tiles added at the end: always the same batch
    shape, so a tile's result does not depend on where it falls (batch norm in eval mode, cuDNN's choices)."""
    x = np.stack(tiles)
    if len(tiles) < batch_size:
        x = np.concatenate([x, np.zeros((batch_size - len(tiles),) + x.shape[1:], x.dtype)])
    return x


def read_tile(plan: Plan, source: ImageSource, preprocess: Preprocessor, tile: TileKey) -> np.ndarray:
    """The input of one tile, ``(C, *tile)`` float32, pre-processed and padded at the image's end."""
    plane, index = tile
    layout = plan.layout
    loop = dict(zip(layout.loop, plane))
    region = dict(zip(layout.spatial, plan.tile_region(index)))
    sizes = dict(zip(layout.axes, source.shape))
    idx = tuple(loop[a] if a in loop else (slice(region[a][0], min(region[a][1], sizes[a])) if a in region
                                           else slice(None)) for a in layout.axes)
    if scenes.on_glass(source, region, sizes):  # tissue=True: a tile on glass alone is not even read
        channels = 1 if layout.grey else sizes.get("C", 1)
        return np.full((channels,) + tuple(hi - lo for lo, hi in plan.tile_region(index)), np.nan, np.float32)
    try:
        data = source.read(idx)
    except Exception as err:  # zlib.error, struct.error, OSError...: a truncated or corrupt file
        where = {a: region[a] if a in region else loop.get(a) for a in layout.axes if a != "C"}
        raise ValueError(f"`image` {source.description!r} could not be read at {where}: {type(err).__name__}: "
                         f"{err} (a truncated or corrupt file?).") from None
    kept = [a for a in layout.axes if a not in loop]
    if "C" not in kept:
        data, kept = data[None], ["C"] + kept
    data = np.transpose(data, [kept.index(a) for a in "C" + layout.spatial])
    invalid = scenes.invalid_pixels(source, layout.spatial, region, data)  # nodata, glass: NaN after preprocess
    if invalid is not None and data.dtype.kind == "f":
        data = np.where(invalid, data.dtype.type(0), data)
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        bad = np.argwhere(~np.isfinite(data))
        first = {a: int(v) + (region[a][0] if a in region else 0) for a, v in zip("C" + layout.spatial, bad[0][:])}
        first.update(loop)
        raise ValueError(f"`image` holds NaN or inf: {len(bad)} values in the tile at {region}, first at "
                         f"{ {a: first[a] for a in layout.axes if a in first} }. Replace them (e.g. np.nan_to_num) first.")
    if layout.grey:
        data = np.tensordot(_LUMINANCE, data[:3].astype(np.float32, copy=False), axes=1)[None]
    data = scenes.mark_invalid(preprocess(data), invalid)
    pad = [(0, 0)] + [(0, (hi - lo) - n) for (lo, hi), n in zip(plan.tile_region(index), data.shape[1:])]
    if any(p for _, p in pad):
        mode = "reflect" if all(n > p for n, (_, p) in zip(data.shape, pad)) else "edge"
        data = np.pad(data, pad, mode=mode)
    return data


def run_local(plan: Plan, source: ImageSource, preprocess: Preprocessor, runner: NetworkRunner, sink,
              regions: list[Region], batch_size: int, progress, cancel) -> tuple[int, bool]:
    """Run ``regions`` here with reading and writing overlapped with compute. Returns (tiles done, cancelled)."""
    total = sum(len(r.tile_order) for r in regions)
    inputs: queue.Queue = queue.Queue(maxsize=2 * batch_size)
    outputs: queue.Queue = queue.Queue(maxsize=2 * batch_size)
    stop = threading.Event()
    errors: list[BaseException] = []

    def produce():
        try:
            for region in regions:
                _put(inputs, ("region", region), stop)
                for tile in region.tile_order:
                    if stop.is_set():
                        return
                    _put(inputs, ("tile", tile, read_tile(plan, source, preprocess, tile)), stop)
        except BaseException as err:  # handed to the main thread
            errors.append(err)
        finally:
            _put(inputs, None, stop)

    def assemble():
        assembler = None
        try:
            while True:
                item = outputs.get()
                if item is None:
                    return
                if item[0] == "region":
                    assembler = Assembler(plan, item[1])
                    continue
                for key, data in assembler.add(item[1], item[2]):
                    sink.write(key, data)
        except BaseException as err:
            errors.append(err)
            stop.set()

    reader = threading.Thread(target=produce, name="segarch-reader", daemon=True)
    writer = threading.Thread(target=assemble, name="segarch-writer", daemon=True)
    reader.start()
    writer.start()
    done, cancelled = 0, False
    if progress is not None:
        progress(0, total)  # the output exists now: a viewer can show it while it fills
    batch: list[tuple[TileKey, np.ndarray]] = []
    skipper = runner if isinstance(runner, TileSkipper) else TileSkipper(runner, plan.out_channels)
    skipper.reuse_constant = SKIP_CONSTANT_TILES

    def flush():
        nonlocal done
        if not batch:
            return
        y = skipper(pad_batch([b[1] for b in batch], batch_size), batch_size)
        for (tile, _), logits in zip(batch, y):
            _put(outputs, ("tile", tile, logits), stop, errors=errors)
        done += len(batch)
        batch.clear()
        if progress is not None:
            progress(done, total)

    try:
        while True:
            if cancel is not None and cancel.is_set():
                cancelled = True
                break
            try:
                item = inputs.get(timeout=0.1)
            except queue.Empty:
                if errors:
                    break
                continue
            if item is None or errors:
                break
            if item[0] == "region":
                flush()
                _put(outputs, item, stop, errors=errors)
                continue
            known = skipper.lookup(item[2])
            if known is not None:  # all left out, or a constant tile computed before: not sent to the network
                _put(outputs, ("tile", item[1], known), stop, errors=errors)
                done += 1
                if progress is not None:
                    progress(done, total)
                continue
            batch.append((item[1], item[2]))
            if len(batch) == batch_size:
                flush()
        if not cancelled and not errors:
            flush()
    finally:
        stop.set()  # the reader stops; tiles already computed are still assembled and written
        _drain(inputs)
        while writer.is_alive():  # every computed tile is still assembled: no output is dropped
            try:
                outputs.put(None, timeout=0.1)
                break
            except queue.Full:
                continue
        writer.join()
        reader.join(timeout=60)
    if errors:
        raise errors[0]
    return done, cancelled


def _put(q: queue.Queue, item, stop: threading.Event, errors=None) -> bool:
    """Put ``item``, waiting for room; give up (False) once ``stop`` is set, raise a worker's error."""
    while True:
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            if errors:
                raise errors[0]
            if stop.is_set():
                return False


def _drain(q: queue.Queue) -> None:
    try:
        while True:
            q.get_nowait()
    except queue.Empty:
        pass
