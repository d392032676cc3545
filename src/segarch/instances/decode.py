"""Decoders: a network's per-pixel output → instance labels (uint32, 0 background, 1..N objects).

Each decoder pairs the targets a plain segmentation head is trained on (a class map from
:mod:`segarch.instances.targets`) with the rule that turns the predicted class probabilities back into
objects. Both shipped families use a **seeded watershed** (scikit-image): seeds are the pixels the
network calls "deep inside an object", grown through the foreground in order of decreasing depth,
so touching objects meet at the valley between them. Both are local (an object's labels depend only on
the probabilities around it), which is what lets :func:`segarch.instances.decode_blocks` decode an image
of any size block by block with the same result.

* :class:`DistanceDecoder` (``"distance"``, the default): background + ``bins`` classes of the
  normalised distance to the object's edge; the expected distance is the watershed's relief.
* :class:`BoundaryDecoder` (``"boundary"``): background / interior / boundary.

Examples::

    >>> decoder = get_decoder("distance")
    >>> classes = decoder.targets(labels, spacing=(2, 1, 1))     # train a (1 + bins)-class head on these
    >>> labels = decoder.decode(probabilities)                    # probabilities: (1 + bins, *spatial)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Sequence

import numpy as np

from segarch.instances.targets import boundary_classes, distance_classes

__all__ = ["BoundaryDecoder", "DistanceDecoder", "DECODERS", "get_decoder", "seeded_watershed"]


def seeded_watershed(foreground: np.ndarray, relief: np.ndarray, seeds: np.ndarray, *,
                     min_size: int = 0) -> np.ndarray:
    """Objects grown from ``seeds`` through ``foreground``, highest ``relief`` first.

    Args:
        foreground: bool mask of object pixels.
        relief: float map, high in object centres and low at their edges (e.g. a distance map).
        seeds: bool mask; each face-connected component of ``seeds & foreground`` starts one object.
        min_size: objects with fewer pixels are dropped (0 keeps all).

    Returns:
        uint32 labels 1..N, numbered in raster order of each object's first pixel. A foreground component
        that holds no seed becomes one object of its own (a faint object is not lost).
    """
    import fastremap
    from scipy import ndimage
    from skimage.segmentation import watershed

    foreground = np.asarray(foreground, bool)
    markers, count = ndimage.label(np.asarray(seeds, bool) & foreground)
    if count:
        labels = watershed(-np.asarray(relief, np.float32), markers, mask=foreground).astype(np.uint32)
    else:
        labels = np.zeros(foreground.shape, np.uint32)
    orphans = foreground & (labels == 0)
    if orphans.any():
        extra, _ = ndimage.label(orphans)
        labels[orphans] = extra[orphans].astype(np.uint32) + np.uint32(count)
    if min_size > 0 and labels.any():
        sizes = np.bincount(labels.ravel())
        small = np.flatnonzero(sizes < min_size)
        if small.size:
            labels = fastremap.mask(labels, small[small > 0])
    return _raster_order(labels)


def _raster_order(labels: np.ndarray) -> np.ndarray:
    """Renumber to 1..N by each object's first pixel in C order (a numbering independent of how seeds were found)."""
    values, first = np.unique(labels.ravel(), return_index=True)
    order = np.argsort(first[values > 0], kind="stable")
    lut = np.zeros(int(values.max()) + 1 if values.size else 1, np.uint32)
    lut[values[values > 0][order]] = np.arange(1, order.size + 1, dtype=np.uint32)
    return lut[labels]


def _check_probabilities(probabilities, channels: int, name: str) -> np.ndarray:
    array = np.asarray(probabilities, dtype=np.float32)
    if array.ndim not in (3, 4) or array.shape[0] != channels:
        raise ValueError(f"`probabilities` for the {name!r} decoder must be ({channels}, Y, X) or "
                         f"({channels}, Z, Y, X) class probabilities, got shape {array.shape}.")
    return array


def _check_fraction(value: float, name: str) -> None:
    if not (isinstance(value, (int, float)) and 0 < value < 1):
        raise ValueError(f"`{name}` must be a number in (0, 1), got {value!r}.")


@dataclass(frozen=True)
class DistanceDecoder:
    """Background + ``bins`` classes of normalised edge distance, decoded by a seeded watershed.

    Attributes:
        bins: distance classes (the head has ``1 + bins`` channels).
        seed_threshold: expected normalised distance above which pixels seed an object (0.5: the inner
            half of each object; higher splits touching objects more eagerly).
        foreground_threshold: probability of "not background" above which a pixel belongs to an object.
        min_size: objects smaller than this many pixels are dropped.
        seed_h: 0 (default): each connected region above ``seed_threshold`` seeds one object. Above 0:
            each peak of the expected distance that rises at least ``seed_h`` above the saddle joining it
            to a higher peak (scikit-image's ``h_maxima``), and lies above ``seed_threshold``, seeds one
            object, so two touching nuclei whose seed regions meet through a ridge still get a seed each
            (small crowded nuclei: measured by ``scripts/train_instances.py --tune``).
    """

    bins: int = 4
    seed_threshold: float = 0.5
    foreground_threshold: float = 0.5
    min_size: int = 0
    seed_h: float = 0.0
    name: ClassVar[str] = "distance"

    def __post_init__(self) -> None:
        if not isinstance(self.bins, int) or isinstance(self.bins, bool) or not 2 <= self.bins <= 32:
            raise ValueError(f"`bins` must be an integer from 2 to 32, got {self.bins!r}.")
        _check_fraction(self.seed_threshold, "seed_threshold")
        _check_fraction(self.foreground_threshold, "foreground_threshold")
        _check_min_size(self.min_size)
        if isinstance(self.seed_h, bool) or not isinstance(self.seed_h, (int, float)) or not 0 <= self.seed_h < 1:
            raise ValueError(f"`seed_h` must be a number in [0, 1) (0: seeds are the regions above "
                             f"`seed_threshold`), got {self.seed_h!r}.")

    @property
    def class_names(self) -> list[str]:
        return ["background"] + [f"distance {k}/{self.bins}" for k in range(1, self.bins + 1)]

    @property
    def channels(self) -> int:
        return 1 + self.bins

    def targets(self, labels, spacing: Sequence[float] | None = None) -> np.ndarray:
        """The class map to train on: :func:`segarch.instances.targets.distance_classes`."""
        return distance_classes(labels, spacing, bins=self.bins)

    def relief(self, probabilities) -> tuple[np.ndarray, np.ndarray]:
        """``(foreground, expected normalised distance)`` from the class probabilities."""
        p = _check_probabilities(probabilities, self.channels, self.name)
        centres = (np.arange(self.bins, dtype=np.float32) + 0.5) / self.bins
        expected = np.tensordot(centres, p[1:], axes=1)
        return (1.0 - p[0]) > self.foreground_threshold, expected

    def decode(self, probabilities, *, min_size: int | None = None) -> np.ndarray:
        """uint32 labels from ``(1 + bins, *spatial)`` class probabilities (softmax output)."""
        foreground, expected = self.relief(probabilities)
        seeds = expected > self.seed_threshold
        if self.seed_h > 0:
            from skimage.morphology import h_maxima

            seeds &= h_maxima(expected, self.seed_h).astype(bool)
        return seeded_watershed(foreground, expected, seeds,
                                min_size=self.min_size if min_size is None else min_size)

    def settings(self) -> dict[str, Any]:
        return {"decoder": self.name, **asdict(self)}


@dataclass(frozen=True)
class BoundaryDecoder:
    """Background / interior / boundary classes, decoded by a seeded watershed.

    Attributes:
        width: boundary thickness used for the targets (see :func:`~segarch.instances.targets.boundary_classes`).
        seed_threshold: interior probability above which pixels seed an object.
        foreground_threshold: probability of "not background" above which a pixel belongs to an object.
        min_size: objects smaller than this many pixels are dropped.
    """

    width: float = 1.0
    seed_threshold: float = 0.5
    foreground_threshold: float = 0.5
    min_size: int = 0
    name: ClassVar[str] = "boundary"
    class_names: ClassVar[list[str]] = ["background", "interior", "boundary"]
    channels: ClassVar[int] = 3

    def __post_init__(self) -> None:
        if not self.width >= 1:
            raise ValueError(f"`width` must be >= 1 (pixels), got {self.width!r}.")
        _check_fraction(self.seed_threshold, "seed_threshold")
        _check_fraction(self.foreground_threshold, "foreground_threshold")
        _check_min_size(self.min_size)

    def targets(self, labels, spacing: Sequence[float] | None = None) -> np.ndarray:
        """The class map to train on: :func:`segarch.instances.targets.boundary_classes`."""
        return boundary_classes(labels, spacing, width=self.width)

    def decode(self, probabilities, *, min_size: int | None = None) -> np.ndarray:
        """uint32 labels from ``(3, *spatial)`` class probabilities (softmax output)."""
        p = _check_probabilities(probabilities, self.channels, self.name)
        foreground = (1.0 - p[0]) > self.foreground_threshold
        return seeded_watershed(foreground, p[1] - p[2], p[1] > self.seed_threshold,
                                min_size=self.min_size if min_size is None else min_size)

    def settings(self) -> dict[str, Any]:
        return {"decoder": self.name, **asdict(self)}


def _check_min_size(value) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"`min_size` must be an integer >= 0 (pixels), got {value!r}.")


#: The decoder families by name.
DECODERS: dict[str, type] = {"distance": DistanceDecoder, "boundary": BoundaryDecoder}


def get_decoder(decoder: str | dict | DistanceDecoder | BoundaryDecoder = "distance", **options: Any):
    """A decoder from its name (``"distance"``, ``"boundary"``) and options, its ``settings()`` dict, or itself."""
    if isinstance(decoder, tuple(DECODERS.values())):
        return decoder if not options else type(decoder)(**{**asdict(decoder), **options})
    if isinstance(decoder, dict):
        options = {**{k: v for k, v in decoder.items() if k != "decoder"}, **options}
        decoder = decoder.get("decoder", "distance")
    if decoder not in DECODERS:
        raise ValueError(f"`decoder` must be one of {sorted(DECODERS)}, got {decoder!r}.")
    try:
        return DECODERS[decoder](**options)
    except TypeError as err:
        allowed = sorted(DECODERS[decoder].__dataclass_fields__)
        raise ValueError(f"unknown option for the {decoder!r} decoder: {err}; allowed: {allowed}.") from None
