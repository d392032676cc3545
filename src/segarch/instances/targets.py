"""What an instance decoder needs, computed from instance labels (2D or 3D, anisotropy-aware).

A plain segmentation head learns these as **class maps** (one softmax channel per class), so any
zoo architecture can be trained for instances with the ordinary semantic loss:

* :func:`boundary_classes`: background / interior / boundary (the 3-class scheme of the 2018 Data
  Science Bowl solutions): touching objects are separated by their boundary class.
* :func:`distance_classes`: background plus ``bins`` classes of the normalised distance to the
  object's edge (0 at the outline, 1 at the object's innermost point): a distance map learnt as
  ordered classes, decoded as its expected value (see :mod:`segarch.instances.decode`).

:func:`edge_distance` and :func:`normalized_distance` give the underlying maps (for a regression
head). Distances are physical: pass ``spacing`` (e.g. ``(2.0, 1.0, 1.0)`` for Z slices twice as far
apart as XY pixels) so a 3D object's distance map is round in space, not in voxels.

Examples::

    >>> classes = boundary_classes(labels)                       # uint8: 0, 1 interior, 2 boundary
    >>> classes = distance_classes(labels, spacing=(2, 1, 1))   # uint8: 0, 1..4 (near edge .. centre)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from segarch.instances._checks import check_labels, check_spacing

__all__ = ["edge_distance", "normalized_distance", "object_contacts", "boundary_classes", "distance_classes"]


def edge_distance(labels, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Physical distance of every object pixel to the nearest pixel outside its own object.

    Args:
        labels: instance labels ``(Y, X)`` or ``(Z, Y, X)``, 0 background.
        spacing: pixel size per axis (default 1 everywhere).

    Returns:
        float32 array of the labels' shape: 0 on background, >= the smallest spacing inside objects.
        The image border is not an edge (an object cut by it continues beyond).
    """
    import edt

    labels = check_labels(labels)
    spacing = check_spacing(spacing, labels.ndim)
    if labels.dtype.itemsize > 4 or labels.dtype.kind == "i":
        labels = labels.astype(np.uint32)  # edt takes unsigned labels
    distance = edt.edt(np.ascontiguousarray(labels), anisotropy=spacing, black_border=False).astype(np.float32)
    unbounded = ~np.isfinite(distance)
    if unbounded.any():  # an object filling the whole image has no edge but the image's
        bordered = edt.edt(np.ascontiguousarray(labels), anisotropy=spacing, black_border=True)
        distance[unbounded] = bordered[unbounded]
    return distance


def normalized_distance(labels, spacing: Sequence[float] | None = None) -> np.ndarray:
    """:func:`edge_distance` divided by each object's largest: 0 on background, (0, 1] inside objects."""
    import fastremap
    from scipy import ndimage

    labels = check_labels(labels)
    distance = edge_distance(labels, spacing)
    if not labels.any():
        return distance
    compact, mapping = fastremap.renumber(np.ascontiguousarray(labels), in_place=False)
    n = int(compact.max())
    peak = np.zeros(n + 1, np.float32)
    peak[1:] = ndimage.maximum(distance, compact, index=np.arange(1, n + 1))
    peak[0] = 1.0
    return (distance / peak[compact]).astype(np.float32)


def object_contacts(labels) -> np.ndarray:
    """Object pixels with a face-neighbour in *another object* (not background): where touching objects meet."""
    labels = check_labels(labels)
    contact = np.zeros(labels.shape, bool)
    for axis in range(labels.ndim):
        a = np.moveaxis(labels, axis, 0)
        c = np.moveaxis(contact, axis, 0)  # a view: writes land in `contact`
        meet = (a[:-1] != a[1:]) & (a[:-1] > 0) & (a[1:] > 0)
        c[:-1] |= meet
        c[1:] |= meet
    return contact


def boundary_classes(labels, spacing: Sequence[float] | None = None, *, width: float = 1.0) -> np.ndarray:
    """Background (0) / interior (1) / boundary (2) classes of an instance label image.

    The boundary is every pixel that touches another object (in any direction, so that touching
    objects' interiors never meet, even across one anisotropic Z step) and every pixel closer than
    ``width`` (physically) to the background.

    Args:
        labels: instance labels, 0 background.
        spacing: pixel size per axis.
        width: boundary thickness against the background, in units of the smallest pixel size: 1 marks
            the pixels next to it in the finest axes (a flat 3D object with coarse Z keeps an interior).

    Returns:
        uint8 class map of the labels' shape.
    """
    labels = check_labels(labels)
    spacing = check_spacing(spacing, labels.ndim)
    if not width >= 1:
        raise ValueError(f"`width` must be >= 1 (pixels), got {width!r}.")
    classes = (labels > 0).astype(np.uint8)
    edge = object_contacts(labels) | ((labels > 0) & (edge_distance(labels, spacing) <= width * min(spacing)))
    classes[edge] = 2
    return classes


def distance_classes(labels, spacing: Sequence[float] | None = None, *, bins: int = 4) -> np.ndarray:
    """Background (0) and ``bins`` classes of :func:`normalized_distance`, 1 next to the edge .. ``bins`` at the centre.

    Class ``k`` covers normalised distances in ``((k - 1) / bins, k / bins]``; pixels touching another
    object are class 1 whatever their distance (see :func:`object_contacts`).
    """
    if not isinstance(bins, int) or isinstance(bins, bool) or not 2 <= bins <= 32:
        raise ValueError(f"`bins` must be an integer from 2 to 32, got {bins!r}.")
    distance = normalized_distance(labels, spacing)
    classes = np.ceil(distance * bins - 1e-6).clip(0, bins).astype(np.uint8)
    classes[(distance > 0) & (classes == 0)] = 1
    # Where two objects touch, both sides are "edge" even when the step is a coarse Z slice: that keeps
    # the centres of touching objects apart, so their seeds never meet.
    classes[object_contacts(labels)] = 1
    return classes
