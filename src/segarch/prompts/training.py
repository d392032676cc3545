"""Fine-tuning an extreme-point model on your instance labels: :func:`segarch.train` with its defaults.

Training itself lives in the project's pipeline (:func:`segarch.train`, ``segarch train``, the Train
widget), which turns each labelled object into a DEXTR example (:mod:`segarch.training.objects`).

Examples::

    >>> model = segarch.pretrained.load("dextr_light")
    >>> tuned = fine_tune(model, [image], [instance_labels], steps=200)   # your objects, jittered points
    >>> tuned.validation["object_iou"]                                    # held-out objects, full resolution
    >>> segarch.save_model(tuned, "my_dextr.safetensors")
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

__all__ = ["fine_tune"]


def fine_tune(model, images: Sequence[np.ndarray], labels: Sequence[np.ndarray], *, steps: int = 200,
              batch_size: int | None = None, lr: float = 1e-3, jitter: float | None = None, seed: int = 0,
              out: str | None = None, progress: Callable[[Any], Any] | None = None):
    """Fine-tune an extreme-point model on instance labels (each object becomes an example with jittered points).

    Args:
        model: an interactive :class:`segarch.Model` (e.g. ``pretrained.load("dextr_light")``), a model
            file or a shipped model's name; it is copied, not changed.
        images: images ``(*spatial)`` or ``(C, *spatial)`` (arrays, TIFF/Zarr paths, as :func:`segarch.train`).
        labels: their instance labels (0 = background, one id per object).
        steps, batch_size, lr, jitter, seed, out, progress: as in :func:`segarch.train`.

    Returns:
        The fine-tuned copy; ``model.validation["object_iou"]`` is the held-out objects' mean IoU.
    """
    from segarch.prompts.segment import resolve_prompt_model
    from segarch.training import train

    model = resolve_prompt_model(model)
    if model.card.task != "interactive":
        raise ValueError(f"`model` must be an extreme-point (interactive) model, got a {model.card.task} "
                         f"{model.arch!r}; use segarch.train for it.")
    return train(model, images, labels, steps=steps, batch_size=batch_size, lr=lr, jitter=jitter, seed=seed,
                 out=out, progress=progress)
