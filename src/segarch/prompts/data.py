"""Training pairs for extreme-point models from instance labels (yours or generated), as arrays.

Every object becomes one example, as DEXTR is trained (Maninis et al. 2018, Sec. 3): its extreme
points, jittered by a few pixels as a user's clicks would be, give the crop and the heat map; the
target is the object's mask in the resized crop. :func:`segarch.train` draws such pairs afresh at every
step (:mod:`segarch.training.objects`); :func:`training_pairs` gives a fixed set, e.g. to inspect::

    inputs, targets = training_pairs(images, instance_labels, spatial_dims=2)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from segarch.prompts.recipe import DEFAULTS, PromptSettings, crop_box, prompt_input, resize

__all__ = ["training_pairs", "object_example"]


def object_example(image: np.ndarray, mask: np.ndarray, points: np.ndarray, settings: PromptSettings
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """One pair: the network's input ``(C + 1, *size)`` and the target mask ``(*size)`` (uint8)."""
    dims = mask.ndim
    start, stop = crop_box(points, mask.shape, settings)
    box = tuple(slice(a, b) for a, b in zip(start, stop))
    crop = image[(slice(None),) + box]
    x = prompt_input(crop, points - np.asarray(start), settings)[0]
    target = torch.from_numpy(mask[box].astype(np.float32))[None, None]
    # Linear resizing then 0.5: the target's outline matches the prediction's resizing at test time.
    target = resize(target, (settings.size,) * dims)[0, 0] > 0.5
    return x, target.to(torch.uint8)


def training_pairs(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], *, spatial_dims: int = 2,
                   settings: PromptSettings | None = None, jitter: float | None = None, min_pixels: int = 12,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One example per object of every image.

    Args:
        images: images ``(*spatial)`` or ``(C, *spatial)``.
        labels: instance labels of each image (0 = background).
        spatial_dims: 2 or 3.
        settings: the crop recipe (default: the light model's).
        jitter: how far (pixels) each extreme point may move; default 2% of the object's largest extent,
            at least 1 pixel (the paper jitters its 512-pixel crops by about 5 pixels).
        min_pixels: smaller objects are skipped.
        seed: random seed of the jitter.

    Returns:
        ``(inputs, targets)``: float32 ``(N, C + 1, *size)`` and uint8 ``(N, *size)``.
    """
    from segarch.training.data import as_sources
    from segarch.training.objects import object_crops, object_validation

    settings = settings or DEFAULTS["dextr_light"][spatial_dims]
    sources = as_sources(list(images), list(labels), axes=None, mask=None, spatial_dims=spatial_dims,
                         in_channels=None)
    objects = object_crops(sources, settings, jitter=jitter, min_pixels=min_pixels)
    regions = object_validation(objects, settings, jitter=jitter, seed=seed)
    return np.stack([r.image for r in regions]), np.stack([r.target for r in regions]).astype(np.uint8)
