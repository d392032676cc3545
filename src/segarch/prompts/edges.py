"""Does a mask outline an object? The image's edge strength along the mask's outline against its surroundings.

An extreme-point network outlines a blob between any points, on background too; a real object has an edge
where its outline runs. Used to tell "no object here" (clicks on background, or a propagated object that has
ended) from an object.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from segarch.arrays import compute_here

__all__ = ["outline_edge", "edge_around", "MIN_EDGE"]

#: Below this ratio the mask is taken for background. On 30 generated scenes (segarch.prompts.object_scene):
#: 98% of 93 background clicks fall below 1.3, and 1 of 158 real objects.
MIN_EDGE = 1.3


def outline_edge(region: np.ndarray, mask: np.ndarray) -> float:
    """How strongly the image has an edge along ``mask``'s outline: the mean gradient magnitude (after a
    σ = 1 blur) on the outline over the mean within 6 pixels of the mask elsewhere; about 1 for a blob drawn
    on background, 2–3 for an object's own outline."""
    from scipy import ndimage

    smooth = ndimage.gaussian_filter(region, 1.0)
    gradient = np.sqrt(sum(ndimage.sobel(smooth, axis) ** 2 for axis in range(region.ndim)))
    outline = ndimage.binary_dilation(mask ^ ndimage.binary_erosion(mask))
    around = ndimage.binary_dilation(mask, iterations=6) & ~outline
    if not outline.any() or not around.any():
        return float("inf")
    return float(gradient[outline].mean() / (gradient[around].mean() + 1e-12))


def edge_around(image, crop: np.ndarray, offset: Sequence[int], ring: int = 8) -> float:
    """:func:`outline_edge` of a crop mask whose origin is ``offset`` in a single-channel ``image`` (only the crop
    and a ``ring`` of pixels around it are read)."""
    lo = [max(0, int(o) - ring) for o in offset]
    hi = [min(int(n), int(o) + c + ring) for o, c, n in zip(offset, crop.shape, image.shape)]
    region = compute_here(image[tuple(slice(a, b) for a, b in zip(lo, hi))]).astype(np.float64)
    mask = np.zeros(region.shape, bool)
    mask[tuple(slice(int(o) - a, int(o) - a + c) for o, a, c in zip(offset, lo, crop.shape))] = crop
    return outline_edge(region, mask)
