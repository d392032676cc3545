"""Pixel sizes for instance prediction: the image's, the model's, and what predict does when they differ.

A network learns objects at the pixel size it was trained at (``model.pixel_size``). An image taken at
another pixel size (a Z step of 3 µm for a model trained at 1 µm) shows it objects squashed or
stretched. :func:`pixel_size_plan` compares the two; when they differ by more than
:data:`TOLERANCE` along an axis, the image is resampled to the model's pixel size for the network, and
the class probabilities are resampled back to the image's grid before decoding (linear interpolation
both ways, scikit-image's ``resize``), so the labels lie on the image's own pixels.

Resampling holds the image in memory; an image too large for that is predicted at its own pixel size
(the decoder still measures in physical units) and the plan says so.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from segarch.instances._checks import check_spacing

__all__ = ["PixelSizePlan", "pixel_size_plan", "resample_spatial", "TOLERANCE"]

log = logging.getLogger("segarch.instances")

#: Relative difference between the image's and the model's pixel size (per axis) above which predict resamples.
TOLERANCE = 0.1
#: Resampling holds the image and its resampled copy in memory: at most this share of free memory.
_MEMORY_FRACTION = 0.25


@dataclass
class PixelSizePlan:
    """What predict does about pixel sizes.

    Attributes:
        image: the image's pixel size per spatial axis (from ``pixel_size=`` or its metadata), or ``None``.
        model: the model's training pixel size, or ``None``.
        source: where ``image`` came from: ``"pixel_size="``, ``"metadata"`` or ``"unknown"``.
        resample: whether the image is resampled to the model's pixel size for the network.
        shape: the spatial shape the network sees (the image's, or resampled).
        note: one sentence saying what was done (also logged, and stored with the labels).
    """

    image: tuple[float, ...] | None
    model: tuple[float, ...] | None
    source: str
    resample: bool = False
    shape: tuple[int, ...] = ()
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> tuple[float, ...] | None:
        """The pixel size of the labels (the image's grid): what objects are measured with."""
        return self.image or self.model

    def as_dict(self) -> dict[str, Any]:
        return {"image": None if self.image is None else list(self.image),
                "model": None if self.model is None else list(self.model), "source": self.source,
                "resampled": self.resample, "network_shape": list(self.shape), "note": self.note}


def pixel_size_plan(model, source, layout, pixel_size: Sequence[float] | float | None) -> PixelSizePlan:
    """Compare the image's pixel size (``pixel_size``, else the metadata of ``source``) with the model's.

    Raises:
        ValueError: ``pixel_size`` is not one positive finite value per spatial axis of ``layout``.
    """
    dims = len(layout.spatial)
    spatial_shape = tuple(source.shape[layout.axes.index(a)] for a in layout.spatial)
    if pixel_size is not None:
        image, origin = check_spacing(pixel_size, dims, name="pixel_size"), "pixel_size="
    else:
        image, origin = _metadata_pixel_size(source, layout), "metadata"
        if image is None:
            origin = "unknown"
    stored = getattr(model, "pixel_size", None)
    trained = tuple(float(v) for v in stored) if stored else None
    plan = PixelSizePlan(image, trained, origin, shape=spatial_shape)
    if image is None or trained is None or len(trained) != dims:
        plan.note = ("pixel sizes not compared (the image's is unknown; pass `pixel_size`)" if trained and image is None
                     else "pixel sizes not compared (the model does not record its training pixel size)"
                     if image is not None else "")
        return plan
    factors = np.asarray(image) / np.asarray(trained)
    if np.all(np.abs(factors - 1) <= TOLERANCE):
        plan.note = f"the image's pixel size {_fmt(image)} matches the model's {_fmt(trained)}; not resampled"
        return plan
    target = tuple(max(1, int(round(n * f))) for n, f in zip(spatial_shape, factors))
    nbytes = 4 * int(np.prod(source.shape)) * (1 + float(np.prod(factors)))
    if nbytes > _MEMORY_FRACTION * _free_memory():
        plan.note = (f"the image's pixel size {_fmt(image)} ({origin}) differs from the model's {_fmt(trained)}, "
                     f"but the image ({nbytes / 2**30:.1f} GiB resampled) is too large to resample in memory: "
                     "predicted at its own pixel size (objects may be split or merged); resample it first for best "
                     "results")
        log.warning(plan.note)
        return plan
    plan.resample, plan.shape = True, target
    plan.note = (f"resampled the image from pixel size {_fmt(image)} ({origin}) to the model's {_fmt(trained)} "
                 f"(spatial shape {spatial_shape} -> {target}) for the network, and its output back to the image's "
                 "grid")
    log.info(plan.note)
    return plan


def resample_spatial(array, axes: str, spatial: str, shape: Sequence[int]) -> np.ndarray:
    """``array`` (axes ``axes``) with its ``spatial`` axes resized to ``shape`` by linear interpolation (float32)."""
    from skimage.transform import resize

    from segarch.arrays import compute_here

    data = np.asarray(compute_here(array), np.float32)
    target = list(data.shape)
    for a, n in zip(spatial, shape):
        target[axes.index(a)] = int(n)
    if tuple(target) == data.shape:
        return data
    return resize(data, target, order=1, mode="edge", anti_aliasing=False, preserve_range=True).astype(np.float32)


def _metadata_pixel_size(source, layout) -> tuple[float, ...] | None:
    scale = getattr(source, "scale", None)
    if not scale or source.axes is None or len(scale) != len(source.axes):
        return None
    sizes = dict(zip(source.axes, scale))
    if any(a not in sizes for a in layout.spatial):
        return None
    values = tuple(float(sizes[a]) for a in layout.spatial)
    if not all(np.isfinite(v) and v > 0 for v in values):
        return None
    # OME metadata without physical sizes is written as all ones: that says nothing.
    return None if all(v == 1.0 for v in values) else values


def _free_memory() -> float:
    try:
        return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return float("inf")


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"
