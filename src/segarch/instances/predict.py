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

import logging
import os
import shutil
import threading
from pathlib import Path
from typing import Any, Callable

from segarch.instances.blocks import decode_blocks
from segarch.instances.decode import DECODERS, get_decoder

__all__ = ["predict_instances", "decoder_for"]

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
        f"`model` is not an instance model: its classes {names or '(unknown)'} are not the targets of a decoder "
        f"({sorted(DECODERS)}); train one on instance targets, or pass `decoder=` for a model trained on them.")


def predict_instances(model, image: Any, *, decoder: Any = None, out: str | os.PathLike | None = None,
                      block: int | tuple[int, ...] | None = None, halo: int | tuple[int, ...] | None = None,
                      min_size: int | None = None, resume: bool = False, overwrite: bool = False,
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
        resume, overwrite: as for :func:`segarch.predict`, for both passes.
        progress: called as ``progress(done, total)``: the tiles of the network pass, then the blocks.
        cancel: a ``threading.Event`` that stops either pass (then ``resume=True`` continues).
        return_report: also return the seam report (objects, merged across seams, touching the border).
        **predict_options: passed to :func:`segarch.predict` (``axes``, ``tile``, ``overlap``,
            ``batch_size``, ``blend``, ``device``, ``amp``, ``scheduler``).

    Returns:
        The labels (a NumPy array, or the Zarr array ``<out>/0``), with the image's axes minus C; with
        ``return_report``, ``(labels, report)``.

    Raises:
        ValueError: a semantic-only model, a bad parameter (named), or what :func:`segarch.predict` refuses;
            nothing is written to ``out`` then.
    """
    import segarch

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
    spacing = getattr(model, "pixel_size", None)
    if out is not None:  # before any work: an hour of network time must not end in a refused destination
        from segarch.destinations import check_output_store

        out = Path(out)
        check_output_store(out, overwrite=overwrite, resume=resume, inputs=[image])
    probabilities_path = None if out is None else out.with_name(out.name + ".probabilities")
    steps = {"network": None}

    def network_progress(done, total):
        steps["network"] = total
        if progress is not None:
            progress(done, total)

    probabilities = segarch.predict(model, image, output="probabilities", out=probabilities_path,
                                    resume=resume and probabilities_path is not None and probabilities_path.exists(),
                                    overwrite=overwrite, progress=network_progress, cancel=cancel, **predict_options)
    if spatial_dims is None:
        spatial_dims = 3 if probabilities.ndim == 4 else 2

    def decode_progress(done, total):
        if progress is not None:
            offset = steps["network"] or 0
            progress(offset + done, offset + total)

    result = decode_blocks(probabilities, chosen, out, block=block, halo=halo, spatial_dims=spatial_dims,
                           spacing=spacing, min_size=min_size, resume=resume, overwrite=overwrite,
                           progress=decode_progress, cancel=cancel)
    if probabilities_path is not None:
        shutil.rmtree(probabilities_path, ignore_errors=True)
    log.info("predict_instances: %d objects (%d merged across block seams, %d touching the image border)",
             result.report["objects"], result.report["merged_across_seams"], result.report["touching_border"])
    return (result.labels, result.report) if return_report else result.labels
