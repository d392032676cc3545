"""``predict_instances``: a model's tiled, seam-free class probabilities, decoded block by block into objects.

Two passes over the image, both out of core when ``out`` is a path:

1. :func:`segarch.predict` writes the class probabilities (blended across tiles, so they have no
   seams) into a Zarr store beside ``out`` (or keeps them in memory);
2. :func:`segarch.instances.decode_blocks` decodes them block by block into the labels store ``out``,
   merging objects across block seams, and records the seam report.

The probabilities store is removed when the labels are complete; after a cancel or a crash both
stores stay and ``resume=True`` continues the interrupted pass.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from segarch.instances.blocks import decode_blocks
from segarch.instances.decode import DECODERS, get_decoder

__all__ = ["predict_instances", "decoder_for", "table_path", "measure_objects", "carry_georeference"]

log = logging.getLogger("segarch.instances")


def decoder_for(model, decoder: Any = None):
    """The decoder of an instance model: ``decoder`` if given, else the one its class names spell.

    A model trained on a decoder's targets carries that decoder's class names (e.g. ``["background",
    "interior", "boundary"]``); any other model is semantic-only and gets a ValueError saying so.
    """
    if decoder is not None:
        return get_decoder(decoder)
    names = list(getattr(model, "class_names", None) or [])
    stored = getattr(model, "instance", None)
    if isinstance(stored, dict):
        return get_decoder(stored)
    for family in DECODERS.values():
        if family.__name__ == "DistanceDecoder":
            bins = len(names) - 1
            if 2 <= bins <= 32 and names == family(bins=bins).class_names:
                return family(bins=bins)
        elif names == list(family.class_names):
            return family()
    raise ValueError(
        f"`model` is not an instance model, so `output`='instances' is not available for it: its classes "
        f"{names or '(unknown)'} are not the targets of a decoder ({sorted(DECODERS)}). Use `output`='labels' "
        f"(one class per pixel), train an instance model (segarch.train(..., task='instance')), or pass `decoder=` "
        f"for a model trained on a decoder's targets.")


def predict_instances(model, image: Any, *, decoder: Any = None, out: str | os.PathLike | None = None,
                      block: int | tuple[int, ...] | None = None, halo: int | tuple[int, ...] | None = None,
                      min_size: int | None = None, pixel_size: Sequence[float] | float | None = None,
                      table: bool = True, resume: bool = False, overwrite: bool = False,
                      progress: Callable[[int, int], None] | None = None, cancel: threading.Event | None = None,
                      return_report: bool = False, **predict_options: Any):
    """Instance labels (uint32, 0 background, one id per object, unique over the whole image) for ``image``.

    Args:
        model: an instance model (a :class:`segarch.Model` whose classes are a decoder's targets), or any
            model with ``decoder=`` naming what it was trained on.
        image: as for :func:`segarch.predict` (NumPy, Dask, Zarr, OME-Zarr group, TIFF/Zarr/.npy path).
        decoder: the decoder name, settings or object (default: from the model's classes).
        out: ``None`` for a NumPy result, or a directory for an OME-Zarr labels group written block by
            block; the probabilities go to ``<out>.probabilities`` meanwhile.
        block, halo, min_size: block-wise decoding (see :func:`segarch.instances.decode_blocks`).
        pixel_size: the image's pixel size per spatial axis (default: from its OME-Zarr/OME-TIFF metadata).
            When it differs from the model's training pixel size by more than 10% on an axis, the image is
            resampled to the model's for the network and the output back (:mod:`segarch.instances.resample`);
            the report's ``pixel_size`` entry says what was done.
        table: with ``out``, measure every object (:func:`segarch.instances.measure`: label, size in pixels
            and physical units, centroid, box, mean intensity) and write the table next to ``out``
            (``<out stem>_objects.csv``, or ``.parquet`` when pyarrow is installed).
        resume, overwrite: as for :func:`segarch.predict`, for both passes.
        progress: called as ``progress(done, total)``: the tiles of the network pass, then the blocks.
        cancel: a ``threading.Event`` that stops either pass (then ``resume=True`` continues).
        return_report: also return the report: the seam report (``objects``, ``merged_across_seams``,
            ``touching_border`` ...), ``pixel_size`` (what was done), ``median_size``, ``table`` (the table's
            path, with ``out``) and ``measurements`` (the table: a dict of columns, e.g. for
            ``pandas.DataFrame`` or a napari Labels layer's ``features``).
        **predict_options: passed to :func:`segarch.predict` (``axes``, ``tile``, ``overlap``,
            ``batch_size``, ``blend``, ``device``, ``amp``, ``grey``, ``scheduler``).

    Returns:
        The labels (a NumPy array, or the Zarr array ``<out>/0``), with the image's axes minus C; with
        ``return_report``, ``(labels, report)``.

    Raises:
        ValueError: a semantic-only model, a bad parameter (named), or what :func:`segarch.predict` refuses;
            nothing is written to ``out`` then.
    """
    from segarch.axes import resolve_axes
    from segarch.instances.resample import pixel_size_plan, resample_spatial
    from segarch.tiling import predict as predict_tiles
    from segarch.tiling.source import open_source

    from segarch.instances.detections import as_instance_model

    model = as_instance_model(model)  # a detector (Mask R-CNN): its detections as the 'boundary' decoder's classes
    chosen = decoder_for(model, decoder)
    for forbidden in ("output", "progress", "cancel", "resume", "overwrite", "out"):
        if forbidden in predict_options:
            raise ValueError(f"`{forbidden}` is set by predict_instances itself; remove it from the options.")
    out_channels = getattr(model, "out_channels", None)
    if out_channels is not None and out_channels != chosen.channels:
        raise ValueError(f"the {chosen.name!r} decoder needs {chosen.channels} output channels, the model has "
                         f"{out_channels}.")
    network = getattr(model, "network", model)
    spatial_dims = getattr(model, "spatial_dims", None) or getattr(network, "spatial_dims", None)
    if out is not None:  # before any work: an hour of network time must not end in a refused destination
        from segarch.destinations import check_output_store

        out = Path(out)
        check_output_store(out, overwrite=overwrite, resume=resume, inputs=[image])
    source = open_source(image)
    plan, layout = None, None
    in_channels = getattr(model, "in_channels", None)
    if spatial_dims is not None and in_channels is not None:
        axes = predict_options.get("axes")
        try:
            layout = resolve_axes(source.shape, axes or source.axes, spatial_dims, in_channels,
                                  grey=bool(predict_options.get("grey")))
        except ValueError:
            if axes is not None:
                raise
            layout = None  # segarch.predict settles the axes (and says what is wrong) below
    if layout is not None:
        plan = pixel_size_plan(model, source, layout, pixel_size)
    elif pixel_size is not None:
        raise ValueError("`pixel_size` needs the image's axes: pass `axes` (e.g. 'ZYX').")
    spacing = (plan.spacing if plan is not None else None) or getattr(model, "pixel_size", None)
    probabilities_path = None if out is None else out.with_name(out.name + ".probabilities")
    steps = {"network": None}

    def network_progress(done, total):
        steps["network"] = total
        if progress is not None:
            progress(done, total)

    network_image, network_out = image, probabilities_path
    if plan is not None and plan.resample:
        network_image = resample_spatial(source.array, layout.axes, layout.spatial, plan.shape)
        predict_options = {**predict_options, "axes": layout.axes}  # read back whole below (the plan checked it fits)
    probabilities = predict_tiles(model, network_image, output="probabilities", out=network_out,
                                  resume=resume and network_out is not None and network_out.exists(),
                                  overwrite=overwrite, progress=network_progress, cancel=cancel, **predict_options)
    if spatial_dims is None:
        spatial_dims = 3 if probabilities.ndim == 4 else 2
    if plan is not None and plan.resample:
        original = tuple(source.shape[layout.axes.index(a)] for a in layout.spatial)
        probabilities = resample_spatial(probabilities, layout.probabilities_axes(), layout.spatial, original)

    if layout is not None:  # predict orders them T, C, then the rest (OME-NGFF); the decoder wants loops, C, space
        got, want = layout.probabilities_axes(), layout.loop + "C" + layout.spatial
        if got != want:
            order = [got.index(a) for a in want]
            if isinstance(probabilities, np.ndarray):
                probabilities = probabilities.transpose(order)
            else:
                import dask.array as da

                probabilities = da.from_array(probabilities, chunks=probabilities.chunks).transpose(order)

    def decode_progress(done, total):
        if progress is not None:
            offset = steps["network"] or 0
            progress(offset + done, offset + total)

    result = decode_blocks(probabilities, chosen, out, block=block, halo=halo, spatial_dims=spatial_dims,
                           spacing=spacing, min_size=min_size, resume=resume, overwrite=overwrite,
                           progress=decode_progress, cancel=cancel, scheduler=predict_options.get("scheduler"),
                           axes=None if layout is None else layout.loop + layout.spatial)
    if probabilities_path is not None:
        _carry_provenance(probabilities_path, out)
        shutil.rmtree(probabilities_path, ignore_errors=True)
    report = dict(result.report)
    report["pixel_size"] = None if plan is None else plan.as_dict()
    measurements = None
    if table and result.labels.ndim == spatial_dims and (out is not None or return_report):
        from segarch.instances.measure import table_summary, write_table

        measurements = measure_objects(result.labels, source, layout, spacing)
        summary = table_summary(measurements)
        report.update(median_size=summary["median_size"], median_size_pixels=summary["median_size_pixels"])
        if out is not None:
            report["table"] = str(write_table(measurements, table_path(out)))
    if out is not None:
        _store_report(out, report)
    if measurements is not None:
        report["measurements"] = measurements  # the table itself: returned, not stored in the attributes
    log.info("predict_instances: %d objects (%d merged across block seams, %d touching the image border)%s",
             report["objects"], report["merged_across_seams"], report["touching_border"],
             f"; {plan.note}" if plan is not None and plan.note else "")
    return (result.labels, report) if return_report else result.labels


def table_path(out: str | os.PathLike) -> Path:
    """Where the per-object table of a labels store ``out`` goes: ``<stem>_objects.csv`` (``.parquet`` with
    pyarrow) beside it."""
    import importlib.util

    out = Path(out)
    suffix = ".parquet" if importlib.util.find_spec("pyarrow") is not None else ".csv"
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    return out.with_name(stem + "_objects" + suffix)


def measure_objects(labels, source, layout, spacing) -> dict[str, np.ndarray]:
    """The per-object table of ``labels`` (chunk by chunk), with the image's intensities where its axes are known."""
    from segarch.instances.measure import measure

    intensity = None
    if layout is not None and not layout.loop:
        import dask.array as da

        array = source.array
        if not isinstance(array, (np.ndarray, da.Array)):  # Zarr/TIFF: a lazy view, read chunk by chunk
            array = da.from_array(array, chunks=getattr(array, "chunks", "auto"))
        order = ("C" if layout.channel else "") + layout.spatial
        intensity = array.transpose([layout.axes.index(a) for a in order])
    return measure(labels, intensity, spacing=spacing)


def _carry_provenance(probabilities: Path, out: Path) -> None:
    """Give the labels store what the network pass recorded in the probabilities store: the provenance (model,
    weights hash, settings, versions, the source's georeference and pixel size) and the georeference.

    The decoding's own settings stay, under ``decoding``. Pixels the network left out (nodata, glass) have
    NaN probabilities, which no decoder counts as an object: they are 0 in the labels, recorded as its nodata.
    """
    import zarr

    if not probabilities.exists():
        return
    network_settings = dict(zarr.open_group(str(probabilities), mode="r").attrs.get("segarch", {}).get("settings")
                            or {})
    group = zarr.open_group(str(out), mode="r+")
    attrs = dict(group.attrs)
    segarch_attrs = attrs.setdefault("segarch", {})
    decoding = segarch_attrs.get("settings", {})
    if network_settings and "decoding" not in decoding:
        segarch_attrs["settings"] = {**network_settings, "output": "instances", "decoding": decoding}
        group.attrs.update(attrs)
    carry_georeference(probabilities, out)


def carry_georeference(network_store: Path, out: Path, arrays: tuple[str, ...] = ()) -> None:
    """Record the georeference of the network pass's store (if any) in the labels store ``out`` (its group, and
    each of its ``arrays``' groups), for a GeoTIFF/COG of the labels: same CRS and transform, and nodata 0 where
    the network left pixels out (NaN in its output, which no decoder counts as an object)."""
    from dataclasses import replace

    from segarch.io import add_georeference, read_georeference

    geo = read_georeference(network_store)
    if geo is None:
        return
    geo = replace(geo, nodata=0 if geo.nodata is not None else None, band_names=())
    add_georeference(out, geo)
    for name in arrays:
        add_georeference(out / name, geo)


def _store_report(out: Path, report: dict[str, Any]) -> None:
    """The full report (seams, pixel size, table) in the labels store's attributes, under ``segarch.instances``."""
    import zarr

    group = zarr.open_group(str(out), mode="r+")
    attrs = dict(group.attrs)
    attrs.setdefault("segarch", {})["instances"] = json.loads(json.dumps(report, default=float))
    group.attrs.update(attrs)
