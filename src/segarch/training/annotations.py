"""Fine-tune an extreme-point model on the objects a user annotated (image + final masks), through
:func:`segarch.train` (the interactive task).

The annotated objects are given by their regions (what an annotation tool painted), so a labels store larger
than memory is never scanned: each object's box, padded by the crop recipe's margin, is read from the image and
the labels; the object's own id is the only label of its example (neighbours painted later are not part of it).

Examples::

    >>> regions = [(1, (slice(40, 90), slice(10, 70))), (2, (12, slice(5, 30), slice(60, 95)))]  # id, box
    >>> tuned = fine_tune_on_annotations("dextr_light.objects2d", image, labels, regions, steps=150)
    >>> tuned.validation["object_iou"]
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import numpy as np

from segarch.arrays import compute_here
from segarch.prompts.segment import resolve_prompt_model, settings_for
from segarch.training.interactive import fine_tune

__all__ = ["annotation_examples", "fine_tune_on_annotations"]


def annotation_examples(image, labels, regions: Sequence[tuple[int, tuple]], *, spatial_dims: int = 2,
                        pad: float = 0.6, min_pad: int = 8, min_pixels: int = 12) -> tuple[list, list]:
    """One training example per annotated object: the image and the object's mask around its box.

    Args:
        image: the annotated image, ``labels``' shape (single channel), NumPy, Dask or Zarr.
        labels: its labels (NumPy, Zarr...): only the regions are read.
        regions: ``(label id, box)`` per object, the box an index tuple into ``labels`` (slices, and integers
            for the slices of a stack a 2D object lies on), as painted.
        spatial_dims: the model's spatial dimensions (the box's slices).
        pad: the box is padded by this fraction of its largest extent on each side (at least ``min_pad`` pixels):
            room for the crop's margin and the points' jitter.
        min_pixels: smaller objects are skipped.

    Returns:
        ``(images, masks)``: lists of float32 crops and uint8 masks (1 = the object).

    Raises:
        ValueError: shapes that differ, a box that does not fit ``labels``, or no object of ``min_pixels``.
    """
    shape = tuple(int(s) for s in labels.shape)
    if tuple(int(s) for s in image.shape) != shape:
        raise ValueError(f"`image` of shape {tuple(image.shape)} and `labels` of shape {shape} must cover the same "
                         "pixels (a single-channel image).")
    images, masks = [], []
    for label, box in regions:
        box = tuple(box)
        spans = [b for b in box if isinstance(b, slice)]
        if len(box) != len(shape) or len(spans) != spatial_dims:
            raise ValueError(f"The region {box!r} of label {label} must index the labels {shape} with "
                             f"{spatial_dims} slices (and integers for the other axes).")
        extent = max(int(b.stop) - int(b.start) for b in spans)
        margin = max(int(min_pad), int(np.ceil(pad * extent)))
        index = tuple(b if not isinstance(b, slice) else slice(max(0, int(b.start) - margin),
                                                               min(n, int(b.stop) + margin))
                      for b, n in zip(box, shape))
        mask = compute_here(labels[index]) == int(label)
        if mask.sum() < min_pixels:
            continue
        images.append(compute_here(image[index]).astype(np.float32))
        masks.append(mask.astype(np.uint8))
    if not images:
        raise ValueError(f"None of the {len(regions)} annotated object(s) has {min_pixels} pixels or more: nothing "
                         "to fine-tune on.")
    return images, masks


def fine_tune_on_annotations(model, image, labels, regions: Sequence[tuple[int, tuple]], *, steps: int = 150,
                             lr: float = 3e-4, batch_size: int | None = None, seed: int = 0,
                             progress: Callable[[Any], Any] | None = None,
                             cancel: threading.Event | None = None) -> Any:
    """Fine-tune the extreme-point ``model`` on the annotated objects (see :func:`annotation_examples`).

    Args:
        model: an interactive model or a reference to one (shipped weights, ``session:NAME``, a file); copied.
        image, labels, regions: as :func:`annotation_examples`.
        steps, lr, batch_size, seed, progress: as :func:`segarch.train`; the learning rate is lower than a new
            model's so that a few objects adapt the model rather than replace what it knows.
        cancel: a :class:`threading.Event`; when set, training stops within a step (the best model so far is
            returned).

    Returns:
        The fine-tuned copy; ``validation["object_iou"]`` is the held-out annotated objects' mean IoU.
    """
    model = resolve_prompt_model(model)
    settings_for(model)  # refuses a model without a usable crop recipe before any reading
    images, masks = annotation_examples(image, labels, regions, spatial_dims=model.spatial_dims)
    if progress is None and cancel is None:
        return fine_tune(model, images, masks, steps=steps, lr=lr, batch_size=batch_size, seed=seed)
    from segarch.training.loop import train

    return train(model, images, masks, steps=steps, lr=lr, batch_size=batch_size, seed=seed, progress=progress,
                 cancel=cancel)
