"""``predict_panoptic``: a bottom-up panoptic network's classes and objects over images of any size, out of core.

Panoptic-DeepLab and DeeperLab predict per pixel a semantic class and, in other heads, where its object's centre
(keypoints) lies. Three passes, each out of core when ``out`` is a path:

1. **network**: the heads, concatenated along channels (:class:`HeadsAsChannels`), go through the tiled engine
   as one dense tensor (``segarch.tiling.predict(output="raw")``): blended across tiles like probabilities
   (offsets are displacements in pixels, the same from every tile), into ``<out>.heads`` (or memory);
2. **objects**: :func:`segarch.instances.decode_blocks` groups each block with its halo by the network's own
   per-image decoder (:class:`~segarch.instances.panoptic.PanopticDeepLabDecoder`,
   :class:`~segarch.instances.deeperlab.DeeperLabDecoder`) and merges objects across block seams, into
   ``<out>/instances``;
3. **classes**: each object takes the majority semantic class (argmax of the blended semantic head) of its
   pixels, per-block class counts summed over the image, as the per-image fusion does
   (:func:`~segarch.instances.panoptic.fuse_panoptic`); other pixels keep their class as stuff (instance 0),
   into ``<out>/classes``.

Top-down EfficientPS (detections fused with a semantic head) is fused per tile instead
(:class:`~segarch.instances.efficientps.FusionAsChannels`: the fused classes one-hot and its objects as the
'boundary' decoder's classes, blended across tiles), then grouped block by block by that decoder; its objects must
fit in a tile.

Examples::

    >>> result = predict_panoptic(model, image, tile=256, block=512)
    >>> result.classes, result.instances        # uint16 classes, uint32 object ids (0: stuff)
    >>> result = predict_panoptic(model, "scene.tif", out="scene.zarr", label_divisor=1000)
    >>> result.panoptic                          # class · 1000 + the object's number within its class
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from segarch.instances.blocks import DecodingCancelled, decode_blocks

__all__ = ["predict_panoptic", "PanopticLabels", "HeadsAsChannels", "panoptic_architecture", "PANOPTIC_DECODERS"]

log = logging.getLogger("segarch.instances")

#: The bottom-up panoptic architectures ``predict_panoptic`` runs, and the per-image decoder that groups each block.
PANOPTIC_DECODERS = {"panoptic_deeplab": "segarch.instances.panoptic.PanopticDeepLabDecoder",
                     "deeperlab": "segarch.instances.deeperlab.DeeperLabDecoder",
                     "efficientps": "segarch.instances.efficientps.EfficientPSFusion"}
_COMPLETE = "complete"
#: Block (core) size per spatial dimensionality: Panoptic-DeepLab's grouping measures every thing pixel of a window
#: against every centre in it (memory ∝ pixels × objects), so blocks are smaller than decode_blocks' defaults.
DEFAULT_BLOCK = {2: 256, 3: 64}


@dataclass
class PanopticLabels:
    """What :func:`predict_panoptic` returns (NumPy arrays, or the Zarr arrays ``<out>/<name>/0``).

    Attributes:
        classes: the semantic class of every pixel (uint16, uint32 beyond 65535 classes); an object's pixels all
            carry its class.
        instances: object ids (uint32), unique over the whole image, 0 on stuff and background.
        panoptic: with ``label_divisor``: ``class · label_divisor + n`` (uint32, uint64 when needed), ``n`` the
            object's number within its class (1, 2, ... in the order of the ids; 0 on stuff), the COCO/Cityscapes
            panoptic encoding; ``None`` otherwise.
    """

    classes: Any
    instances: Any
    panoptic: Any = None


class HeadsAsChannels(torch.nn.Module):
    """A multi-head network seen as a dense one: its heads' tensors concatenated along channels, in the order of
    ``network.heads``, so the tiled engine blends them like logits (``output="raw"``).

    Args:
        network: a zoo network with named heads of stride 1 (Panoptic-DeepLab, DeeperLab).
    """

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        heads = tuple(getattr(network, "heads", ()))
        if not heads or any(h.stride != 1 for h in heads):
            raise ValueError(f"`model` ({type(network).__name__}) must have named heads on the input's grid "
                             f"(stride 1) to be tiled as one tensor, got {[(h.name, h.stride) for h in heads]}.")
        self.network = network
        self.heads = heads
        self.spatial_dims = int(network.spatial_dims)
        self.size_divisor = int(getattr(network, "size_divisor", 1) or 1)

    def channels(self) -> dict[str, tuple[int, int]]:
        """Each head's channels in the concatenated tensor: ``{name: (first, stop)}``."""
        stops = np.cumsum([h.channels for h in self.heads])
        return {h.name: (int(stop - h.channels), int(stop)) for h, stop in zip(self.heads, stops)}

    def channel_names(self) -> list[str]:
        return [f"{h.name} {i}" for h in self.heads for i in range(h.channels)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = self.network(x)
        return torch.cat([outputs[h.name] for h in self.heads], dim=1)


@dataclass(frozen=True)
class _Grouping:
    """One block's (with halo) heads ``(C, *window)`` → instance ids, by the architecture's per-image decoder.
    A module-level, frozen dataclass: picklable for a cluster's workers, and its ``repr`` is the settings that
    :func:`decode_blocks` fingerprints for ``resume``."""

    arch: str
    heads: tuple[tuple[str, int, int], ...]
    thing_classes: tuple[int, ...]
    options: tuple[tuple[str, Any], ...] = ()

    def decoder(self):
        if self.arch == "efficientps":  # each tile fused already (FusionAsChannels): its objects as boundary classes
            from segarch.instances.decode import BoundaryDecoder

            return BoundaryDecoder()
        if self.arch == "deeperlab":
            from segarch.instances.deeperlab import DeeperLabDecoder

            return DeeperLabDecoder(thing_classes=self.thing_classes, **dict(self.options))
        from segarch.instances.panoptic import PanopticDeepLabDecoder

        return PanopticDeepLabDecoder(thing_classes=self.thing_classes, **dict(self.options))

    def __call__(self, window: np.ndarray) -> np.ndarray:
        window = np.nan_to_num(np.asarray(window, np.float32))  # left-out pixels (nodata): no object there
        outputs = {name: window[lo:hi] for name, lo, hi in self.heads}
        if self.arch == "efficientps":  # blended log-probabilities of background, interior, boundary
            objects = np.exp(outputs["objects"] - outputs["objects"].max(0, keepdims=True))
            return self.decoder().decode(objects / objects.sum(0, keepdims=True), min_size=0).astype(np.uint32)
        return self.decoder()(outputs).instances.astype(np.uint32)


def panoptic_architecture(model) -> str | None:
    """The zoo architecture of ``model`` (a :class:`segarch.Model` or a bare network) if ``predict_panoptic`` runs
    it (:data:`PANOPTIC_DECODERS`), else ``None``."""
    from segarch import zoo

    network = getattr(model, "network", model)
    arch = getattr(model, "arch", None) if hasattr(model, "network") else None
    if arch not in zoo.names():
        arch = next((c.name for c in zoo.cards() if c.builder is type(network)), None)
    ready = getattr(network, "heads", None) or (arch == "efficientps" and getattr(network, "is_detector", False))
    return arch if arch in PANOPTIC_DECODERS and ready else None


def _settings(model, semantic_classes: int, thing_classes, label_divisor):
    """``(thing classes, label divisor or None)``: the arguments, else the model's ``panoptic`` settings, else all
    classes but 0 and no combined id."""
    stored = getattr(model, "panoptic", None) or {}
    if not isinstance(stored, dict):
        raise ValueError(f"the model's `panoptic` settings must be a dict {{'thing_classes': [...], "
                         f"'label_divisor': int}}, got {stored!r}.")
    if thing_classes is None:
        thing_classes = stored.get("thing_classes")
    if label_divisor is None:
        label_divisor = stored.get("label_divisor")
    if thing_classes is None:
        thing_classes = getattr(getattr(model, "network", model), "thing_classes", None) or range(1, semantic_classes)
    try:
        things = [int(c) for c in thing_classes if isinstance(c, (int, np.integer)) and not isinstance(c, bool)]
        bad = len(things) != len(list(thing_classes))
    except TypeError:
        bad = True
    if bad or not things or len(set(things)) != len(things) or any(not 0 <= c < semantic_classes for c in things):
        raise ValueError(f"`thing_classes` must be distinct class indices from 0 to {semantic_classes - 1} (the "
                         f"model's {semantic_classes} semantic classes; at least one), got {thing_classes!r}.")
    if label_divisor is not None and (not isinstance(label_divisor, (int, np.integer))
                                      or isinstance(label_divisor, bool) or label_divisor < 2):
        raise ValueError(f"`label_divisor` must be an integer >= 2 (panoptic id = class · label_divisor + the "
                         f"object's number within its class) or None, got {label_divisor!r}.")
    return tuple(sorted(things)), None if label_divisor is None else int(label_divisor)


def predict_panoptic(model, image: Any, *, out: str | os.PathLike | None = None,
                     thing_classes: Sequence[int] | None = None, label_divisor: int | None = None,
                     decoder_options: dict[str, Any] | None = None,
                     block: int | tuple[int, ...] | None = None, halo: int | tuple[int, ...] | None = None,
                     min_size: int | None = None, pixel_size: Sequence[float] | float | None = None,
                     stuff_area: int | None = None, stuff_regions: str = "class",
                     table: bool = True, resume: bool = False, overwrite: bool = False,
                     progress: Callable[[int, int], None] | None = None, cancel: threading.Event | None = None,
                     return_report: bool = False, **predict_options: Any):
    """Semantic classes and instance ids of a panoptic network (Panoptic-DeepLab, DeeperLab, EfficientPS) for
    ``image``, tile by tile and block by block (see the module's docstring).

    Args:
        model: a :class:`segarch.Model` (or a bare network) of architecture ``panoptic_deeplab``, ``deeperlab`` or
            ``efficientps`` (trained).
        image: as for :func:`segarch.predict` (NumPy, Dask, Zarr, OME-Zarr group, TIFF/Zarr/.npy path).
        out: ``None`` for NumPy arrays, or a directory: a Zarr group holding two OME-Zarr label images,
            ``classes`` and ``instances`` (and ``panoptic`` with ``label_divisor``), listed under ``labels`` in its
            ``ome`` attributes; the blended heads go to ``<out>.heads`` meanwhile.
        thing_classes: the classes that are countable objects (default: the model's ``panoptic`` settings, else
            the network's ``thing_classes`` (EfficientPS), else every class but 0); the others are stuff.
        label_divisor: also give ``class · label_divisor + n`` (see :class:`PanopticLabels`); default: the model's
            ``panoptic`` settings, else none.
        decoder_options: options of the per-image decoder (e.g. ``{"threshold": 0.2}`` for Panoptic-DeepLab,
            ``{"radius": 8}`` for DeeperLab, as trained; ``{"confidence": 0.7}`` for EfficientPS's fusion);
            ``top_k`` defaults to ``None`` (no cap on centres per block) and DeeperLab's ``keypoints_are_logits``
            to ``True`` (what its head returns).
        block, halo, min_size: block-wise decoding (see :func:`segarch.instances.decode_blocks`; ``block``
            defaults to 256 in 2D, 64 in 3D: :data:`DEFAULT_BLOCK`); objects up to about ``halo`` pixels across
            are grouped exactly as in the whole image.
        pixel_size: the image's pixel size per spatial axis (default: from its OME-Zarr/OME-TIFF metadata, else
            the model's), for the table's physical sizes and the stores' scale. When it differs from the model's
            training pixel size by more than 10% on an axis, the image is resampled to the model's for the network
            and the heads back to the image's grid, offsets rescaled (:mod:`segarch.instances.panoptic_resample`;
            ``decoder_options`` in pixels are read as trained, in the model's pixels); the labels lie on the
            image's grid and the report's ``pixel_size`` entry says what was done.
        stuff_area: stuff regions (pixels of no object) of fewer pixels (of the image's grid) become void, the class
            value after the last class (``len(class_names)``, named "void"; also taken from ``decoder_options``); 0
            or ``None`` keeps all. As the per-image decoders count (:mod:`segarch.instances.stuff`): a class's
            stuff in the whole image, so the tiled result equals the whole-image decoding.
        stuff_regions: ``"class"`` (that count) or ``"connected"``: each connected region of one class over the
            whole image (across block seams) counts on its own, what matters on a large image.
        table: with ``out`` (or ``return_report``), measure every object with its ``class`` column
            (:func:`segarch.instances.measure`), written beside ``out`` (``<stem>_objects.csv``/``.parquet``).
        resume, overwrite: as for :func:`segarch.predict`, for every pass.
        progress: ``progress(done, total)``: the network's tiles, then the blocks (decoding, then classes).
        cancel: a ``threading.Event`` that stops any pass (then ``resume=True`` continues).
        return_report: also return the report: ``objects``, ``objects_per_class`` (class name → objects), the
            seam report (``merged_across_seams`` ...), ``thing_classes``, ``label_divisor``, ``seconds`` (each
            pass: ``network``, ``objects``, ``classes``), ``table`` and ``measurements`` (the table's columns).
        **predict_options: passed to the tiled engine (``axes``, ``tile``, ``overlap``, ``batch_size``, ``blend``,
            ``device``, ``amp``, ``grey``, ``scheduler``, ``runtime``).

    Returns:
        A :class:`PanopticLabels` (the image's axes minus C); with ``return_report``, ``(labels, report)``.

    Raises:
        ValueError: a model that is not a panoptic network, a bad parameter (named, with its value and
            what is allowed), or what :func:`segarch.predict` refuses; nothing is written then.
    """
    from segarch.axes import resolve_axes
    from segarch.instances._checks import check_spacing
    from segarch.tiling import predict as predict_tiles
    from segarch.tiling.source import open_source

    arch = panoptic_architecture(model)
    if arch is None:
        raise ValueError(f"`model` ({getattr(model, 'arch', type(getattr(model, 'network', model)).__name__)!r}) is "
                         f"not a panoptic network; predict_panoptic runs {sorted(PANOPTIC_DECODERS)}.")
    for forbidden in ("output", "progress", "cancel", "resume", "overwrite", "out"):
        if forbidden in predict_options:
            raise ValueError(f"`{forbidden}` is set by predict_panoptic itself; remove it from the options.")
    network = getattr(model, "network", model)
    if not isinstance(decoder_options, (dict, type(None))):
        raise ValueError(f"`decoder_options` must be a dict of the {arch} decoder's options, got {decoder_options!r}.")
    options = dict(decoder_options or {})
    if "stuff_area" in options:  # the decoders' own option: applied to the whole result below, not per block or tile
        given = options.pop("stuff_area")
        if stuff_area is not None and given != stuff_area:
            raise ValueError(f"`stuff_area`={stuff_area!r} and `decoder_options['stuff_area']`={given!r} differ; "
                             "give one.")
        stuff_area = given
    from segarch.instances.stuff import check_stuff_area

    stuff_area, stuff_regions = check_stuff_area(0 if stuff_area is None else stuff_area, stuff_regions)
    try:  # the options checked now, before any work
        wrapper, heads, grouping_options = _dense(network, arch, options)
    except TypeError as err:
        raise ValueError(f"`decoder_options`: {err} (see {PANOPTIC_DECODERS[arch]}).") from None
    semantic_count = heads["semantic"][1] - heads["semantic"][0]
    things, label_divisor = _settings(model, semantic_count, thing_classes, label_divisor)
    if arch == "efficientps" and things != tuple(sorted(network.thing_classes)):
        raise ValueError(f"`thing_classes`={thing_classes!r}: an EfficientPS detects the thing classes it was built "
                         f"with, {list(network.thing_classes)}; leave `thing_classes` out.")
    grouping = _Grouping(arch, tuple((n, lo, hi) for n, (lo, hi) in heads.items()), things, grouping_options)
    try:
        grouping.decoder()
    except TypeError as err:
        raise ValueError(f"`decoder_options`: {err} (see {PANOPTIC_DECODERS[arch]}).") from None
    spatial_dims = wrapper.spatial_dims
    class_names = list(getattr(model, "class_names", None) or [f"class {i}" for i in range(semantic_count)])

    out = None if out is None else Path(out)
    heads_path = None if out is None else out.with_name(out.name + ".heads")
    state = None
    if out is not None:  # before any work: an hour of network time must not end in a refused destination
        state = _check_destination(out, image, resume=resume, overwrite=overwrite)
        if state == _COMPLETE:
            return _stored(out, return_report)
    dense = (dataclasses.replace(model, network=wrapper, out_channels=len(wrapper.channel_names()),
                                 class_names=wrapper.channel_names())
             if hasattr(model, "network") else wrapper)
    source = open_source(image)
    layout = None
    in_channels = getattr(model, "in_channels", None)
    if in_channels is not None:
        try:
            layout = resolve_axes(source.shape, predict_options.get("axes") or source.axes, spatial_dims, in_channels,
                                  grey=bool(predict_options.get("grey")))
        except ValueError:
            if predict_options.get("axes") is not None:
                raise
    plan, spacing = _spacing(model, source, layout, pixel_size, spatial_dims, check_spacing)
    totals: dict[str, int] = {}  # each pass's steps, in the order the passes run

    def step(name: str):
        totals[name] = 0

        def report_progress(done: int, total: int) -> None:
            totals[name] = total
            if progress is not None:
                before = sum(totals[k] for k in list(totals)[:list(totals).index(name)])
                progress(before + done, before + total)
        return report_progress

    started = time.perf_counter()
    network_image, network_options, resampled = image, predict_options, plan is not None and plan.resample
    if resampled:  # to the model's pixel size for the network; the heads back to the image's grid below
        from segarch.instances.panoptic_resample import scale_decoder_options
        from segarch.instances.resample import resample_spatial

        network_image = resample_spatial(source.array, layout.axes, layout.spatial, plan.shape)
        network_options = {**predict_options, "axes": layout.axes}
        scaled = scale_decoder_options(arch, type(grouping.decoder()), dict(grouping.options), plan.extra["scale"])
        grouping = dataclasses.replace(grouping, options=tuple(sorted(scaled.items())))
        plan.extra["decoder_options"] = dict(grouping.options)
    raw = predict_tiles(dense, network_image, output="raw", out=heads_path,
                        resume=bool(resume and heads_path is not None and heads_path.exists()), overwrite=overwrite,
                        progress=step("network"), cancel=cancel, **network_options)
    raw = _loops_channels_space(raw, layout)
    if resampled:
        from segarch.instances.panoptic_resample import heads_on_image_grid

        image_shape = tuple(source.shape[layout.axes.index(a)] for a in layout.spatial)
        raw = heads_on_image_grid(raw, arch, heads, len(layout.loop), image_shape, plan.extra["scale"])
    seconds = {"network": time.perf_counter() - started}
    if out is not None and state != "resume":  # created only now: a refusal of the network pass leaves nothing
        _create_group(out, replace=state == "replace")
    loops = raw.ndim - spatial_dims - 1
    label_axes = None if layout is None else layout.loop + layout.spatial
    block = DEFAULT_BLOCK[spatial_dims] if block is None else block
    decoded = decode_blocks(raw, grouping, None if out is None else out / "instances", block=block, halo=halo,
                            spatial_dims=spatial_dims, spacing=spacing, min_size=min_size,
                            resume=bool(resume and out is not None and (out / "instances").exists()),
                            overwrite=overwrite, progress=step("objects"), cancel=cancel,
                            scheduler=predict_options.get("scheduler"), axes=label_axes)
    instances = decoded.labels
    seconds["objects"] = time.perf_counter() - started - seconds["network"]
    classes_progress = step("classes")
    object_classes = _object_classes(instances, raw, heads["semantic"], things, loops, decoded.report["objects"],
                                     classes_progress, cancel)
    classes = _write_classes(instances, raw, heads["semantic"], object_classes, loops, semantic_count, out,
                             spacing, class_names + (["void"] if stuff_area else []), classes_progress, cancel)
    stuff = {}
    if stuff_area:  # after the classes: regions cross blocks, so counted over the whole image first
        from segarch.instances.stuff import void_small_stuff

        chunks = getattr(instances, "chunks", None) if not isinstance(instances, np.ndarray) else None
        chunks = chunks[loops:] if chunks else (block,) * spatial_dims if isinstance(block, int) else block
        stuff = void_small_stuff(classes, instances, stuff_area=stuff_area, void=semantic_count, loops=loops,
                                 chunks=chunks, regions=stuff_regions, progress=step("stuff"), cancel=cancel,
                                 scratch=None if out is None else out / ".stuff-scratch")
        stuff.update(stuff_area=stuff_area, stuff_regions=stuff_regions, void_class=semantic_count)
    panoptic = None
    if label_divisor is not None:
        panoptic = _write_panoptic(instances, classes, object_classes, label_divisor, semantic_count, loops, out,
                                   spacing)
    seconds["classes"] = time.perf_counter() - started - seconds["network"] - seconds["objects"]
    counts = np.bincount(object_classes[1:], minlength=semantic_count) if object_classes.size > 1 else \
        np.zeros(semantic_count, np.int64)
    report = {**decoded.report, "objects": int(object_classes.size - 1),
              "objects_per_class": {class_names[c]: int(counts[c]) for c in things},
              "thing_classes": list(things), "label_divisor": label_divisor, "architecture": arch,
              "pixel_size": _pixel_size_report(plan), **stuff,
              "seconds": {k: round(v, 3) for k, v in seconds.items()}}
    measurements = None
    if table and loops == 0 and (out is not None or return_report):
        from segarch.instances.measure import table_summary, write_table
        from segarch.instances.predict import table_path

        measurements = _measure(instances, source, layout, spacing, object_classes, class_names)
        summary = table_summary(measurements)
        report.update(median_size=summary["median_size"], median_size_pixels=summary["median_size_pixels"])
        if out is not None:
            report["table"] = str(write_table(measurements, table_path(out)))
    if out is not None:
        _finish(out, heads_path, report, panoptic is not None)
    if measurements is not None:
        report["measurements"] = measurements
    log.info("predict_panoptic: %d objects (%s); %d merged across block seams", report["objects"],
             ", ".join(f"{k}: {v}" for k, v in report["objects_per_class"].items()), report["merged_across_seams"])
    result = PanopticLabels(classes, instances, panoptic)
    return (result, report) if return_report else result


# --- the passes --------------------------------------------------------------------------------------------

def _dense(network, arch: str, options: dict):
    """``(the network as one tensor, each part's channels, the grouping's options)``: bottom-up networks' heads
    concatenated; EfficientPS fused per tile (its ``options`` are the fusion's)."""
    if arch == "efficientps":
        from segarch.instances.efficientps import FusionAsChannels

        wrapper = FusionAsChannels(network, **options)
        return wrapper, {"semantic": (0, wrapper.classes), "objects": (wrapper.classes, wrapper.classes + 3)}, ()
    wrapper = HeadsAsChannels(network)
    defaults = {"top_k": None} if arch == "panoptic_deeplab" else {"keypoints_are_logits": True}
    return wrapper, wrapper.channels(), tuple(sorted({**defaults, **options}.items()))


def _spacing(model, source, layout, pixel_size, dims: int, check_spacing):
    """``(plan, spacing)``: what to do about pixel sizes (:func:`segarch.instances.resample.pixel_size_plan`; the
    image resampled when its pixel size is more than 10% from the model's) and the labels' pixel size."""
    from segarch.instances.resample import pixel_size_plan

    trained = getattr(model, "pixel_size", None)
    if layout is None:  # a bare network: no axes to read a pixel size from, none to compare with
        spacing = check_spacing(pixel_size, dims, name="pixel_size") if pixel_size is not None else None
        return None, spacing or (None if trained is None else tuple(float(v) for v in trained))
    plan = pixel_size_plan(model, source, layout, pixel_size)
    if plan.resample:
        from segarch.instances.panoptic_resample import image_pixels_per_model_pixel

        plan.extra["scale"] = image_pixels_per_model_pixel(plan.model, plan.image)
    return plan, plan.spacing


def _pixel_size_report(plan) -> dict | None:
    """What was done about pixel sizes (and, resampled, the decoder's options in the image's pixels)."""
    if plan is None:
        return None
    return {**plan.as_dict(), **{k: v for k, v in plan.extra.items() if k != "scale"}}


def _loops_channels_space(raw, layout):
    """The engine's raw output (T, C, other loops, space: OME-NGFF order) as the decoder reads it: loops, C, space."""
    if layout is None:
        return raw
    got, want = layout.probabilities_axes(), layout.loop + "C" + layout.spatial
    if got == want:
        return raw
    order = [got.index(a) for a in want]
    if isinstance(raw, np.ndarray):
        return raw.transpose(order)
    import dask.array as da

    return da.from_array(raw, chunks=raw.chunks).transpose(order)


def _blocks(instances, loops: int) -> list[tuple[slice, ...]]:
    """The instances array's blocks (its Zarr chunks, planes of loop axes one by one), as index tuples."""
    shape = tuple(int(s) for s in instances.shape)
    chunks = getattr(instances, "chunks", None) if not isinstance(instances, np.ndarray) else None
    size = [1] * loops + (list(chunks[loops:]) if chunks else [1024] * (len(shape) - loops))
    return [tuple(slice(s, min(s + c, n)) for s, c, n in zip(start, size, shape))
            for start in itertools.product(*[range(0, n, c) for n, c in zip(shape, size)])]


def _semantic_argmax(raw, index: tuple[slice, ...], semantic: tuple[int, int], loops: int) -> np.ndarray:
    logits = np.asarray(raw[index[:loops] + (slice(*semantic),) + index[loops:]], np.float32)
    return np.nan_to_num(logits, nan=-np.inf).argmax(axis=loops)


def _object_classes(instances, raw, semantic, things, loops: int, count: int, progress, cancel) -> np.ndarray:
    """Each object's class (index: object id; 0 for none): the majority thing class of the semantic argmax over
    its pixels, from per-block counts summed over the image (ties: the smaller class)."""
    blocks = _blocks(instances, loops)
    votes = []
    for i, index in enumerate(blocks):
        _check_cancel(cancel, i, 2 * len(blocks))
        ids = np.asarray(instances[index])
        if ids.any():
            classes = _semantic_argmax(raw, index, semantic, loops)
            mask = (ids > 0) & np.isin(classes, things)
            pairs, counts = np.unique(np.stack([ids[mask].astype(np.int64), classes[mask].astype(np.int64)]), axis=1,
                                      return_counts=True)
            votes.append(np.concatenate([pairs, counts[None]]))
        progress(i + 1, 2 * len(blocks))
    result = np.full(count + 1, things[0], np.int64)
    result[0] = 0
    if votes:
        triples = np.concatenate(votes, axis=1)
        pairs, inverse = np.unique(triples[:2], axis=1, return_inverse=True)
        counts = np.zeros(pairs.shape[1], np.int64)
        np.add.at(counts, inverse.ravel(), triples[2])
        order = np.lexsort((pairs[1], -counts, pairs[0]))  # per object: most votes first, then the smaller class
        first = np.ones(order.size, bool)
        first[1:] = pairs[0][order][1:] != pairs[0][order][:-1]
        result[pairs[0][order][first]] = pairs[1][order][first]
    return result


def _check_cancel(cancel, done: int, total: int) -> None:
    if cancel is not None and cancel.is_set():
        raise DecodingCancelled(f"panoptic classes cancelled after {done} of {total} block steps")


def _target(out: Path | None, name: str, instances, dtype, spacing, properties=None):
    """Where a label image like ``instances`` goes: a NumPy array, or the OME-Zarr labels image ``<out>/<name>``
    (array ``0``, the instances store's chunks, axes and scale)."""
    if out is None:
        return np.zeros(instances.shape, dtype)
    import zarr

    from segarch.io.ome_zarr import ome_attrs

    shape = tuple(int(s) for s in instances.shape)
    axes = "".join(instances.metadata.dimension_names).upper()
    spacing = list(spacing or ())
    scale = [1.0] * (len(shape) - len(spacing)) + [float(v) for v in spacing]
    group = zarr.open_group(str(out / name), mode="w")
    group.create_array("0", shape=shape, chunks=tuple(instances.chunks), dtype=dtype, fill_value=0,
                       dimension_names=[a.lower() for a in axes])
    attrs = ome_attrs(axes, scale, name=name, labels=True, properties=properties)
    attrs["ome"]["image-label"]["source"] = {"image": "../../"}
    group.attrs.update(attrs)
    return group["0"]


def _write_classes(instances, raw, semantic, object_classes, loops, semantic_count, out, spacing, class_names,
                   progress, cancel):
    """Each pixel's class: its object's class, else (stuff, background) the semantic argmax."""
    dtype = np.uint16 if len(class_names) <= 65536 else np.uint32  # class_names: with "void" when there is one
    properties = [{"label-value": i, "class": n} for i, n in enumerate(class_names)]
    target = _target(out, "classes", instances, dtype, spacing, properties)
    blocks = _blocks(instances, loops)
    for i, index in enumerate(blocks):
        _check_cancel(cancel, len(blocks) + i, 2 * len(blocks))
        ids = np.asarray(instances[index])
        classes = _semantic_argmax(raw, index, semantic, loops)
        target[index] = np.where(ids > 0, object_classes[ids], classes).astype(dtype)
        progress(len(blocks) + i + 1, 2 * len(blocks))
    return target


def _write_panoptic(instances, classes, object_classes, label_divisor: int, semantic_count: int, loops, out,
                    spacing):
    """``class · label_divisor + n``, ``n`` the object's number within its class (0 on stuff)."""
    ids = np.arange(object_classes.size)
    number = np.zeros(object_classes.size, np.int64)
    if object_classes.size > 1:
        order = np.lexsort((ids[1:], object_classes[1:]))  # by class, then id
        sorted_classes = object_classes[1:][order]
        starts = np.r_[0, np.flatnonzero(np.diff(sorted_classes)) + 1]
        within = np.arange(order.size) - np.repeat(starts, np.diff(np.r_[starts, order.size]))
        number[1:][order] = within + 1
    most = int(number.max(initial=0))
    if most >= label_divisor:
        raise ValueError(f"`label_divisor`={label_divisor} is too small: a class has {most} objects; pass a "
                         f"label_divisor above {most} (e.g. {10 ** len(str(most))}), or none (the classes and "
                         f"instances are complete{'' if out is None else ' in ' + str(out)}).")
    dtype = np.uint32 if semantic_count * label_divisor < 2 ** 32 else np.uint64
    target = _target(out, "panoptic", instances, dtype, spacing)
    for index in _blocks(instances, loops):
        obj = np.asarray(instances[index])
        target[index] = (np.asarray(classes[index]).astype(dtype) * dtype(label_divisor) + number[obj].astype(dtype))
    return target


def _measure(instances, source, layout, spacing, object_classes, class_names):
    from segarch.instances.predict import measure_objects

    table = measure_objects(instances, source, layout, spacing)
    table["class"] = object_classes[table["label"].astype(np.int64)]
    table["class_name"] = np.array([class_names[c] for c in table["class"]], object)
    return table


# --- the store ---------------------------------------------------------------------------------------------

def _check_destination(out: Path, image, *, resume: bool, overwrite: bool) -> str:
    """Check ``out`` by segarch.destinations' rules: ``"new"``, ``"resume"``, ``"replace"`` or, for a finished run
    resumed, ``"complete"``."""
    import zarr

    from segarch.destinations import check_output_store

    state = check_output_store(out, overwrite=overwrite, resume=resume, inputs=[image])
    if state == "resume" and zarr.open_group(str(out), mode="r").attrs.get("segarch", {}).get(_COMPLETE):
        return _COMPLETE
    return state


def _create_group(out: Path, *, replace: bool) -> None:
    """The group that holds the label images, marked as segarch's (unfinished) so ``resume`` finds it."""
    import zarr

    if replace:
        shutil.rmtree(out)
    group = zarr.open_group(str(out), mode="w")
    group.attrs.update({"ome": {"version": "0.5", "labels": ["classes", "instances"]},
                        "segarch": {"output": "panoptic", _COMPLETE: False}})


def _finish(out: Path, heads_path: Path, report: dict, with_panoptic: bool) -> None:
    """Record the report and the network pass's provenance in ``out``; remove the heads store."""
    import zarr

    from segarch.instances.predict import carry_georeference

    settings = {}
    if heads_path.exists():
        settings = dict(zarr.open_group(str(heads_path), mode="r").attrs.get("segarch", {}).get("settings") or {})
        names = ["classes", "instances"] + (["panoptic"] if with_panoptic else [])
        carry_georeference(heads_path, out, tuple(names))  # a GeoTIFF of the result keeps the source's place
    group = zarr.open_group(str(out), mode="r+")
    stored = {k: v for k, v in report.items() if k != "measurements"}
    group.attrs.update({"ome": {"version": "0.5", "labels": ["classes", "instances"] + (["panoptic"] if
                                                                                         with_panoptic else [])},
                        "segarch": {"output": "panoptic", _COMPLETE: True,
                                    "settings": {**settings, "output": "panoptic"},
                                    "panoptic": json.loads(json.dumps(stored, default=float))}})
    shutil.rmtree(heads_path, ignore_errors=True)


def _stored(out: Path, return_report: bool):
    import zarr

    group = zarr.open_group(str(out), mode="r")
    names = group.attrs.get("ome", {}).get("labels", [])
    result = PanopticLabels(group["classes/0"], group["instances/0"],
                            group["panoptic/0"] if "panoptic" in names else None)
    report = dict(group.attrs.get("segarch", {}).get("panoptic", {}))
    return (result, report) if return_report else result
