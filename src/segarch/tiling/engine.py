"""``segarch.predict``: any model over images larger than memory, tile by tile, with bounded memory."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from segarch.destinations import check_output_store
from segarch.devices import resolve_device
from segarch.models.model import Model, as_model, weights_sha256
from segarch.nets.heads import check_single_output
from segarch.preprocessing import Preprocessor, check_preprocessing, spread_indices
from segarch.axes import Layout, resolve_axes
from segarch.tiling.grid import BLENDS, axis_grid
from segarch.tiling.memory import check_tile_memory
from segarch.tiling.output import NumpySink, ZarrSink, output_shape
from segarch.tiling import scenes
from segarch.tiling.pipeline import read_tile, run_local
from segarch.tiling.plan import Plan
from segarch.runtimes import PRECISIONS, RUNTIMES, check_network_runtime, make_runner
from segarch.tiling.calibration import calibration_tiles
from segarch.tiling.skipping import TileSkipper
from segarch.tiling.source import ImageSource, content_identity, open_source

__all__ = ["predict", "PredictionCancelled", "OUTPUTS", "check_tile", "overlap_pixels"]

log = logging.getLogger("segarch.tiling")

OUTPUTS = ("labels", "probabilities", "instances", "raw")
_BLOCK = {2: 512, 3: 128}           # output block (chunk) edge, before rounding up to the tile
# Bytes of blending buffers open at once: this bounds a column's extent, so memory does not grow with the
# image; 3D blocks are big, and narrow columns would recompute many tiles at their borders.
_OPEN_BLOCK_BUDGET = {2: 96 * 2 ** 20, 3: 768 * 2 ** 20}
_IN_MEMORY_FRACTION = 0.25          # out=None refuses outputs larger than this share of free memory


class PredictionCancelled(Exception):
    """Raised when ``cancel`` was set; ``output`` holds the blocks finished before it (zeros elsewhere)."""

    def __init__(self, output, blocks_done: int, blocks_total: int) -> None:
        super().__init__(f"prediction cancelled after {blocks_done} of {blocks_total} blocks")
        self.output = output
        self.blocks_done = blocks_done
        self.blocks_total = blocks_total


def predict(
    model: Model | nn.Module,
    image: Any,
    *,
    axes: str | None = None,
    tile: int | tuple[int, ...] | None = None,
    overlap: float | int = 0.25,
    batch_size: int = 4,
    blend: str = "gaussian",
    device: str | torch.device = "auto",
    amp: bool | None = None,
    output: str = "labels",
    grey: bool = False,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    scheduler: Any = None,
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    bands: list[str | int] | None = None,
    nodata: Any = scenes.FROM_FILE,
    pixel_size: float | tuple[float, float] | None = None,
    tissue: bool = False,
    runtime: str = "torch",
    precision: str = "fp32",
):
    """Segment ``image`` with ``model``, tile by tile.

    Args:
        model: a :class:`segarch.Model` (its pre-processing, channels and class count apply; ``segarch.predict``
            also takes a shipped model's name such as ``"unet.nuclei2d"`` or a model file's path) or a bare
            ``torch.nn.Module`` (then ``axes`` is required; its ``spatial_dims`` attribute, or Z in ``axes``,
            says 2D or 3D; no pre-processing beyond conversion to float32).
        image: a NumPy, Dask or Zarr array, a Zarr group (OME-Zarr: level 0), or a path to ``.zarr``,
            ``.tif``/``.tiff`` (level 0, read lazily) or ``.npy`` (memory-mapped).
        axes: the image's axes, e.g. ``"YX"``, ``"CZYX"``, ``"TZYX"``; inferred when unambiguous. Axes the
            model does not consume (T; Z for a 2D model) are looped over.
        tile: spatial tile size (one int for all axes, or one per spatial axis); default 256 (2D) or 96
            (3D), rounded up to the model's ``size_divisor``; must be a multiple of it.
        overlap: a fraction of the tile in ``[0, 1)`` shared by neighbouring tiles, or an int halo in
            pixels kept on each side of a tile (neighbours then overlap by ``2 × halo``).
        batch_size: tiles per forward pass.
        blend: ``"gaussian"`` (MONAI-like weights, σ = tile/8), ``"constant"`` (mean), or ``"crop"``
            (each pixel from the tile whose centre is nearest; no averaging).
        device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``.
        amp: autocast to bf16/fp16; default on for CUDA only.
        output: ``"labels"`` (argmax, or threshold for one channel; uint8/16/32 as needed) or
            ``"probabilities"`` (float32, one channel per class: C after T, before Z, as OME-NGFF orders axes), or
            ``"instances"`` for an instance model (uint32, 0 background, one id per object unique over the
            image; decoded block by block with objects merged across seams, a seam report in the Zarr
            attributes and a per-object table beside ``out``: :func:`segarch.instances.predict_instances`), or
            ``"raw"``: the blended network outputs as they are (float32, no softmax; axes as probabilities), e.g. a
            panoptic network's heads as one tensor for :func:`segarch.instances.panoptic_predict.predict_panoptic`.
        grey: convert an RGB(A) image (a C axis of 3 or 4) to grey for a 1-channel model, with the
            luminance weights 0.2125 R + 0.7154 G + 0.0721 B (alpha dropped). Never done unasked: an RGB
            image and a 1-channel model are otherwise a clear error.
        out: ``None`` to return a NumPy array (refused when it would not fit comfortably in memory), or a
            directory path: an OME-Zarr (NGFF 0.5) image whose array ``0`` is written block by block; the Zarr
            array is returned and can be read while it fills. Refused before any work when it is, contains or
            lies inside the input, is a file, or its folder cannot be written to; locked while being written.
        resume: with ``out``, skip the blocks a previous run with the same settings finished (same model
            weights and pre-processing, same image content wherever its path is spelled, same tiling).
        overwrite: with ``out``, replace an existing segarch result instead of refusing. Anything that is
            not a segarch result is never deleted.
        scheduler: a ``dask.distributed.Client`` or scheduler address: one task per region of blocks on
            the cluster's workers (the model is sent to each worker once). ``None``: in this process.
        progress: called as ``progress(tiles_done, tiles_total)`` after every batch.
        cancel: a ``threading.Event``; when set, the run stops within one batch and raises
            :class:`PredictionCancelled` carrying the finished part (a resumable store with ``out``).
        bands: a multispectral image's bands for the model, in its order: names (``["red", "nir"]``) or
            band numbers counted from 1 as GDAL does. Default: the bands the model records it was trained
            on, picked by name, else all bands in the file's order.
        nodata: the input value of pixels to leave out (0 in labels, NaN in probabilities, never computed
            when a whole tile is nodata, left out of the percentiles). Default ``"file"``: a GeoTIFF's own
            nodata; ``None``: none.
        pixel_size: the size of a level-0 pixel (µm for a slide) when the file does not record it. A whole
            slide is read at the level nearest the model's training pixel size and resampled the rest of
            the way; the result has the model's pixel size. (``output="instances"``: the image's pixel size
            per spatial axis, see :func:`segarch.instances.predict_instances`.)
        tissue: a whole slide: find the tissue (Otsu on a low level) and compute only tiles that touch it.
        runtime: what runs the network on each batch of tiles: ``"torch"`` (eager PyTorch), ``"onnxruntime"``
            (the network exported to ONNX once per weights and tile shape, cached on disk; CPU, fp32; needs the
            ``fast`` extra), ``"openvino"`` (that export compiled by OpenVINO; the ``openvino`` extra), or
            ``"auto"`` (on the CPU the fastest installed one that runs the network, see
            :func:`segarch.runtimes.auto_order`, else torch with the reason logged). Same tiles, blending and
            output either way, in this process or on a ``scheduler``'s workers (:mod:`segarch.runtimes`).
        precision: ``"fp32"``, or ``"int8"`` (with ``runtime`` ``"onnxruntime"``, ``"openvino"`` or ``"auto"``, on
            the CPU, in this process): the export quantised on 16 of the image's own tiles, used only when its
            labels agree with fp32's on at least 99.5% of those tiles' pixels, else fp32 with the reason logged
            (:mod:`segarch.runtimes.int8`; cached per weights, tile and calibration tiles).

    Returns:
        The labels or probabilities, with the axes :func:`segarch.axes.output_axes` states: the image's minus C
        (labels), or T, then C (one per class), then the rest (probabilities: ``CYX``, ``CZYX`` for a 2D model
        over a stack, ``TCZYX``): a NumPy array, or the Zarr array in ``out`` (its OME metadata names the axes and
        carries the image's pixel size).

    Raises:
        ValueError: a bad parameter (named, with its value and what is allowed), a channel mismatch, an
            empty or non-numeric image, NaN/inf in the image, an unreadable region of the file, a destination
            that may not be written. Nothing is written to ``out`` for the checks made before the run.
    """
    started = time.perf_counter()
    _check_choice(blend, BLENDS, "blend")
    _check_choice(output, OUTPUTS, "output")
    # networks of several heads (panoptic) give no single tensor to tile: refused by name, before any output
    check_single_output(model.network if isinstance(model, Model) else model,
                        model.arch if isinstance(model, Model) else None)
    if output == "instances":  # the decoding pass belongs to segarch.instances, above this engine
        raise ValueError("`output`='instances' is made by segarch.predict (segarch.inference.predict), which adds "
                         "the block-wise decoding to this engine's probabilities; segarch.tiling.predict makes "
                         "'labels' and 'probabilities'.")
    _check_choice(runtime, RUNTIMES, "runtime")
    _check_choice(precision, PRECISIONS, "precision")
    check_network_runtime(model.network if isinstance(model, Model) else model, runtime, precision)  # detectors
    if precision == "int8" and scheduler is not None:
        raise ValueError("`precision`='int8' runs in this process: it cannot be combined with `scheduler`.")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}.")
    if resume and out is None:
        raise ValueError("`resume`=True needs `out`: only a Zarr output records finished blocks.")
    if scheduler is not None and out is None:
        raise ValueError("`scheduler` needs `out` (a .zarr path the workers can write to).")
    # Where the result goes is checked before anything is read or computed (segarch.destinations).
    state = check_output_store(out, overwrite=overwrite, resume=resume, inputs=[image]) if out is not None else None
    source = scenes.prepare(open_source(image), model, axes=axes, bands=bands, nodata=nodata,
                            pixel_size=pixel_size, tissue=tissue)
    torch_device = resolve_device(device)
    # One model type from here on: a bare module becomes a Model at the door (``bare`` keeps what is recorded
    # for it as it was: its class's name, no classes, no pre-processing).
    bare = not isinstance(model, Model)
    model = _as_model(model, axes or source.axes, source.shape, grey, tile, torch_device) if bare else model
    network, spatial_dims, in_channels = model.network, model.spatial_dims, model.in_channels
    layout = _layout(source, axes, spatial_dims, in_channels, grey)
    divisor = model.size_divisor
    tiles = check_tile(tile, spatial_dims, divisor)
    client = None
    if scheduler is not None:  # connect first: an unreachable scheduler must not leave an empty store behind
        from segarch.tiling.distributed import connect

        client = connect(scheduler)

    sizes = dict(zip(layout.axes, source.shape))
    spatial_sizes = [sizes[a] for a in layout.spatial]
    overlaps = [overlap_pixels(overlap, t) for t in tiles]
    grids = tuple(axis_grid(s, t, o, divisor, blend) for s, t, o in zip(spatial_sizes, tiles, overlaps))
    if scheduler is None:  # the cluster's workers have their own memory
        check_tile_memory(None if bare else model, network, torch_device, in_channels, tuple(g.tile for g in grids),
                          batch_size)
    out_channels = model.out_channels
    out_dtype = _output_dtype(output, out_channels)
    block = tuple(max(_BLOCK[spatial_dims], g.tile) for g in grids)
    block_bytes = out_channels * 4 * int(np.prod(block))
    column = max(1, int((_OPEN_BLOCK_BUDGET[spatial_dims] / (2 * block_bytes)) ** (1 / max(1, spatial_dims - 1))))
    plan = Plan(layout, source.shape, tuple(sizes[a] for a in layout.loop), grids, block, column,
                out_channels, output, out_dtype)

    _check_finite_if_in_memory(source)
    preprocess = _preprocessor(model, source, plan)
    if out is None:
        _check_fits_in_memory(plan)
        sink = NumpySink(plan)
    else:
        fingerprint, provenance = _fingerprint(model, bare, source, plan, blend, overlaps, image)
        provenance.update(scenes.provenance(source))
        if precision != "fp32":  # int8 computes other logits: a resume must not mix it with fp32 blocks
            fingerprint["precision"] = provenance["precision"] = precision
        sink = ZarrSink(out, plan, fingerprint, provenance, state=state, scale=_spatial_scale(model, source, layout),
                        class_names=None if bare else list(model.class_names))
    sink.open()  # takes the store's lock: a second run cannot wipe or mix into it
    try:
        if isinstance(sink, ZarrSink):
            scenes.annotate_store(out, source, plan, None if bare else list(model.class_names))
            sink.mark_complete(False)
        regions = plan.columns(done=sink.done())
        total_blocks = len(list(plan.planes())) * int(np.prod(plan.blocks_per_axis))
        log.info("predict: %s on %s, axes %s, tiles %s, %d regions, %d blocks (%d already final), device %s",
                 type(network).__name__, source.description, layout.axes, plan.tile_shape, len(regions),
                 total_blocks, total_blocks - sum(len(r.blocks) for r in regions), torch_device)
        if client is not None:
            from segarch.tiling.distributed import run_distributed

            tiles_done = run_distributed(client, plan, source, preprocess, network, str(torch_device), amp, sink,
                                         batch_size, progress, cancel, runtime=runtime, model=model)
            cancelled = cancel is not None and cancel.is_set()
        else:
            runner = TileSkipper(make_runner(model, torch_device, amp, runtime, plan.tile_shape, precision,
                                             lambda: calibration_tiles(plan, source, preprocess)), plan.out_channels)
            tiles_done, cancelled = run_local(plan, source, preprocess, runner, sink, regions, batch_size, progress,
                                              cancel)
        if cancelled:
            done = len(sink.done()) if isinstance(sink, ZarrSink) else 0
            raise PredictionCancelled(sink.result(), done, total_blocks)
        if isinstance(sink, ZarrSink):
            sink.mark_complete(True)
    finally:
        sink.close()
    seconds = time.perf_counter() - started
    pixels = int(np.prod(source.shape)) // max(1, (sizes.get("C", 1)))
    if tiles_done:
        log.info("predict: %d tiles, %.3g pixels/s, %.2f s", tiles_done, pixels / max(seconds, 1e-9), seconds)
    else:
        log.info("predict: nothing left to compute (every block was already final), %.2f s", seconds)
    return sink.result()


# --- checks and settings -------------------------------------------------------------------------------------

def _check_choice(value, allowed, name) -> None:
    if value not in allowed:
        raise ValueError(f"`{name}` must be one of {allowed}, got {value!r}.")


def _layout(source: ImageSource, axes: str | None, spatial_dims: int, in_channels: int, grey: bool) -> Layout:
    if axes is not None or source.axes is None:
        return resolve_axes(source.shape, axes, spatial_dims, in_channels, grey=grey)
    try:
        return resolve_axes(source.shape, source.axes, spatial_dims, in_channels, grey=grey)
    except ValueError as err:
        guessed = getattr(source, "axes_guessed", False)
        if guessed and not source.axes.endswith("C"):
            # A guess from the shape alone (Z or C for a leading axis): the model's needs may settle it.
            return resolve_axes(source.shape, None, spatial_dims, in_channels, grey=grey)
        # The file's own axes (or colour samples last) win: never re-read its pixels in another order.
        channels = source.shape[source.axes.index("C")] if "C" in source.axes else 1
        origin = "guessed from its shape" if guessed else "from the file"
        if channels != in_channels and not grey:
            problem = (f"the model takes {in_channels} input channel(s), the image has {channels}"
                       + (" (colour samples)" if channels in (3, 4) else ""))
        else:
            problem = str(err)
        options = ["pass `axes` if the file's axes are wrong"]
        if in_channels == 1 and channels in (3, 4) and not grey:
            options.append("pass `grey`=True to convert the colour image to grey")
        if channels != in_channels:
            options.append(f"use a model for {channels}-channel images")
        raise ValueError(f"The image's axes {source.axes!r} ({origin}, shape {source.shape}) do not fit the "
                         f"{spatial_dims}D model: {problem}. Options: {'; '.join(options)}.") from None


def _as_model(network, axes, shape, grey: bool, tile, device: torch.device) -> Model:
    """A bare ``torch.nn.Module`` as a :class:`Model`: 2D or 3D from its ``spatial_dims`` attribute, its first
    convolution, or Z in ``axes``; its input channels from C in ``axes`` or its first convolution; its output channels asked of it,
    on one tile."""
    if not isinstance(network, nn.Module):
        raise ValueError(f"`model` must be a segarch.Model or a torch.nn.Module, got {type(network).__name__}.")
    dims = getattr(network, "spatial_dims", None)
    if axes is None and dims is None:
        raise ValueError("`axes` is required with a bare torch.nn.Module that has no `spatial_dims` attribute "
                         "(e.g. 'YX', 'CYX', 'ZYX').")
    first = next((m for m in network.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    convolution_dims = {nn.Conv2d: 2, nn.Conv3d: 3}.get(type(first))  # a first Conv2d is never a 3D model
    dims = int(dims or convolution_dims or (3 if "Z" in str(axes).upper() else 2))
    if axes is not None and "C" in str(axes).upper() and not grey:
        channels = shape[str(axes).upper().index("C")]
    else:
        channels = first.in_channels if first is not None else 1
    tiles = check_tile(tile, dims, int(getattr(network, "size_divisor", 1) or 1))
    with torch.inference_mode():  # ask it, on one tile
        probe = torch.zeros((1, int(channels), *tiles), device=device)
        out_channels = int(network.to(device).eval()(probe).shape[1])
    return as_model(network, spatial_dims=dims, in_channels=int(channels), out_channels=out_channels)


def check_tile(tile, spatial_dims: int, divisor: int) -> tuple[int, ...]:
    """``predict``'s tile size per spatial axis from ``tile`` (``None``: the default, one int or one per axis)."""
    if tile is None:
        base = 256 if spatial_dims == 2 else 96
        return (-(-base // divisor) * divisor,) * spatial_dims
    tiles = (tile,) * spatial_dims if isinstance(tile, (int, np.integer)) else tuple(tile)
    if len(tiles) != spatial_dims or not all(isinstance(t, (int, np.integer)) and t > 0 for t in tiles):
        raise ValueError(f"`tile` must be a positive int or {spatial_dims} positive ints, got {tile!r}.")
    if any(t % divisor for t in tiles):
        fixed = tuple(-(-int(t) // divisor) * divisor for t in tiles)
        raise ValueError(f"`tile`={tile!r} must be a multiple of the model's size_divisor {divisor}; e.g. {fixed}.")
    return tuple(int(t) for t in tiles)


def overlap_pixels(overlap, tile: int) -> int:
    """The pixels two neighbouring tiles of size ``tile`` share, from ``predict``'s ``overlap``."""
    if isinstance(overlap, bool) or not isinstance(overlap, (int, float, np.integer, np.floating)):
        raise ValueError(f"`overlap` must be a fraction in [0, 1) or an int halo in pixels, got {overlap!r}.")
    if isinstance(overlap, (int, np.integer)):
        if not 0 <= 2 * overlap < tile:
            raise ValueError(f"`overlap` as a halo must satisfy 0 <= 2 × halo < tile ({tile}), got {overlap!r}.")
        return int(2 * overlap)
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"`overlap` must be a fraction in [0, 1) or an int halo in pixels, got {overlap!r}.")
    return int(round(overlap * tile))


def _output_dtype(output: str, channels: int) -> np.dtype:
    if output in ("probabilities", "raw"):
        return np.dtype(np.float32)
    return np.dtype(np.uint8 if channels <= 256 else np.uint16 if channels <= 65536 else np.uint32)


def _check_finite_if_in_memory(source: ImageSource) -> None:
    # In-memory images are checked whole before anything runs; lazy ones tile by tile as they are read.
    if source.in_memory and source.dtype.kind == "f" and getattr(source.extras, "nodata", None) is None:
        bad = ~np.isfinite(source.array)
        if bad.any():
            first = tuple(int(v) for v in np.argwhere(bad)[0])
            raise ValueError(f"`image` holds {int(bad.sum())} NaN or inf values, the first at index {first}; "
                             "replace them (e.g. np.nan_to_num) first.")


def _check_fits_in_memory(plan: Plan) -> None:
    nbytes = int(np.prod(output_shape(plan))) * plan.out_dtype.itemsize
    try:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return
    if nbytes > _IN_MEMORY_FRACTION * free:
        raise ValueError(f"The output would take {nbytes / 2**30:.1f} GiB, more than fits comfortably in memory "
                         f"({free / 2**30:.1f} GiB free); pass `out` (a .zarr path) to write it block by block.")


def _preprocessor(model: Model, source: ImageSource, plan: Plan) -> Preprocessor:
    # Data only: refused here, before any work, if not; percentiles measured on tiles spread over the image.
    return Preprocessor.for_image(model.preprocessing, lambda: _sample(source, plan))


def _sample(source: ImageSource, plan: Plan, max_tiles: int = 16) -> np.ndarray:
    """Values from across the whole image, ``(C, n)``, to measure percentiles on (a few tile-sized reads)."""
    planes = list(plan.planes())
    per_axis = [spread_indices(len(g.starts), 3) for g in plan.grids]
    tiles = [(planes[p], t) for p in spread_indices(len(planes), 4) for t in itertools.product(*per_axis)]
    tiles = [tiles[i] for i in spread_indices(len(tiles), max_tiles)]
    values = [read_tile(plan, source, Preprocessor(), tile) for tile in tiles]
    return scenes.drop_invalid(np.concatenate([v.reshape(v.shape[0], -1) for v in values], axis=1))


def _spatial_scale(model, source: ImageSource, layout: Layout) -> tuple[float, ...] | None:
    """The output's pixel size per spatial axis: the image's own, else the model's training pixel size."""
    if source.scale and source.axes == layout.axes and any(float(v) != 1.0 for v in source.scale):
        sizes = dict(zip(source.axes, source.scale))
        return tuple(float(sizes[a]) for a in layout.spatial)
    if model.pixel_size:
        return tuple(model.pixel_size)
    return None


def _fingerprint(model: Model, bare: bool, source: ImageSource, plan: Plan, blend: str, overlaps,
                 image) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a resumed run must share with the stored one, and the provenance written beside it.

    The image is identified by its content (:func:`~segarch.tiling.source.content_identity`), not its
    path as typed, so a resume works from any working directory and still refuses another image. The
    weights are hashed here, only for a stored result (an in-memory one records nothing).
    """
    from segarch import __version__

    arch = type(model.network).__name__ if bare else model.arch
    fingerprint = {
        "weights_sha256": weights_sha256(model.network),
        "arch": arch,
        "preprocessing": check_preprocessing(model.preprocessing),
        "classes": None if bare else list(model.class_names),
        "image": content_identity(source),
        "axes": plan.layout.axes, "grey": plan.layout.grey, "tile": list(plan.tile_shape), "overlap": list(overlaps),
        "blend": blend, "output": plan.output, "block": list(plan.block), "segarch_version": __version__,
    }
    path = os.path.abspath(os.fspath(image)) if isinstance(image, (str, os.PathLike)) else source.description
    provenance = {
        "model": arch if bare else (model.name or model.arch),
        "arch": fingerprint["arch"], "options": None if bare else dict(model.options),
        "weights_sha256": fingerprint["weights_sha256"], "preprocessing": fingerprint["preprocessing"],
        "classes": fingerprint["classes"], "image": path, "image_shape": list(source.shape),
        "image_dtype": str(source.dtype), "axes": plan.layout.axes, "grey": plan.layout.grey,
        "tile": list(plan.tile_shape), "overlap": list(overlaps), "blend": blend, "output": plan.output,
        "block": list(plan.block), "segarch_version": __version__, "torch_version": torch.__version__,
    }
    return fingerprint, provenance
