"""Where the next corrective click goes: the centre of the largest error region.

The standard simulation of a user's corrections in interactive segmentation (Xu et al. 2016; Sofiiuk et al.
2021, arXiv:2102.06583, Sec. 3.2): among the connected regions where the mask and the truth disagree, the
largest one; the click at its pixel farthest from the region's boundary (the array's edge counts as one);
positive where the object was missed, negative where the mask holds background. Used by training
(:mod:`segarch.training.corrections`) and by the clicks-to-IoU benchmark (:mod:`segarch.prompts.evaluate`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["next_click"]


def next_click(prediction: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, bool] | None:
    """The next corrective click on ``prediction`` against ``truth`` (boolean arrays of one shape).

    Returns:
        ``(point, positive)``: the pixel (integer coordinates) at the centre of the largest error region and
        whether it is a positive click (the truth has the object there); ``None`` when the masks agree.
    """
    from scipy import ndimage  # scipy comes with napari, a dependency of the project

    error = np.asarray(prediction, bool) != np.asarray(truth, bool)
    if not error.any():
        return None
    regions, n = ndimage.label(error)
    if n > 1:
        sizes = np.bincount(regions.ravel())
        sizes[0] = 0
        error = regions == int(sizes.argmax())
    # Padded with background so that a region touching the array's edge is centred away from that edge too.
    distance = ndimage.distance_transform_edt(np.pad(error, 1))[(slice(1, -1),) * error.ndim]
    point = np.asarray(np.unravel_index(int(np.argmax(distance)), error.shape), np.int64)
    return point, bool(np.asarray(truth, bool)[tuple(point)])
