"""Training pairs for extreme-point models from instance labels (yours or generated).

Every object becomes one example, as DEXTR is trained (Maninis et al. 2018, Sec. 3): its extreme
points, jittered by a few pixels as a user's clicks would be, give the crop and the heat map; the
target is the object's mask in the resized crop. :func:`segarch.prompts.fine_tune` trains on them::

    inputs, targets = training_pairs(images, instance_labels, spatial_dims=2)
    history, steps, best = fit_pairs(model, inputs, targets, steps=200)     # segarch.prompts.training
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from segarch.prompts.recipe import DEFAULTS, PromptSettings, crop_box, prompt_input, resize

__all__ = ["training_pairs", "jittered_points", "object_example"]


def jittered_points(mask: np.ndarray, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """The object's extreme points with each coordinate moved by up to ``jitter`` pixels (MONAI's
    ``get_extreme_points``, which also picks at random among tied pixels)."""
    from monai.transforms.utils import get_extreme_points

    state = np.random.RandomState(int(rng.integers(2 ** 31)))
    return np.asarray(get_extreme_points(mask.astype(np.uint8), rand_state=state, pert=float(jitter)), np.float64)


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
    settings = settings or DEFAULTS["dextr_light"][spatial_dims]
    rng = np.random.default_rng(seed)
    xs, ts = [], []
    for image, lab in zip(images, labels):
        image = np.asarray(image, np.float32)
        lab = np.asarray(lab)
        if image.ndim == spatial_dims:
            image = image[None]
        for value in np.unique(lab[lab > 0]):
            mask = lab == value
            if mask.sum() < min_pixels:
                continue
            coords = np.argwhere(mask)
            extent = float((coords.max(0) - coords.min(0)).max())
            pts = jittered_points(mask, rng, max(1.0, 0.02 * extent) if jitter is None else jitter)
            x, t = object_example(image, mask, pts, settings)
            xs.append(x.numpy())
            ts.append(t.numpy())
    if not xs:
        raise ValueError(f"`labels` hold no object of at least {min_pixels} pixels.")
    return np.stack(xs), np.stack(ts)
