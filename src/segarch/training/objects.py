"""Training data for extreme-point (``task="interactive"``) models: one example per annotated object.

DEXTR is trained on objects, not on image patches (Maninis et al. 2018, Sec. 3): each object's extreme
points, jittered as a user's clicks would be, give the crop and the heat map; the target is the
object's mask in the resized crop. :func:`segarch.train` uses this module when the model is an
interactive one, so instance labels (painted in napari, or a folder of TIFF/Zarr files) fine-tune a
DEXTR model through the same pipeline, CLI and Train widget as a semantic model.

Each object's neighbourhood is read once (only the region around it, for lazy images); the points are
jittered afresh every time the object is drawn, and image, heat map and target are flipped and rotated
together (intensity changes are left out: the crop is normalised by its percentiles anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from segarch.arrays import compute_here
from segarch.prompts.points import extreme_points
from segarch.prompts.recipe import PromptSettings, crop_box, prompt_input, resize
from segarch.prompts.segment import segment_from_points
from segarch.training.data import Region, Source, check_finite, check_no_negative

__all__ = ["ObjectCrop", "object_crops", "object_boxes", "split_objects", "ObjectSampler", "object_validation",
           "object_iou", "object_example", "jittered_points", "default_jitter", "augment_pairs"]


@dataclass
class ObjectCrop:
    """One annotated object: its neighbourhood ``image`` ``(C, *spatial)`` and ``mask`` ``(*spatial)`` there."""

    image: np.ndarray
    mask: np.ndarray
    name: str

    @property
    def extent(self) -> float:
        """The object's largest extent along an axis (pixels, from first to last)."""
        coords = np.argwhere(self.mask)
        return float((coords.max(0) - coords.min(0)).max())


def default_jitter(extent: float) -> float:
    """How far a click may miss: 2% of the object's extent, at least 1 pixel (the paper jitters its
    512-pixel crops by a few pixels)."""
    return max(1.0, 0.02 * float(extent))


def jittered_points(mask: np.ndarray, rng: np.random.Generator, jitter: float) -> np.ndarray:
    """The extreme points of ``mask`` (2 per axis, in :func:`~segarch.prompts.extreme_points`' order), each
    taken at random among tied pixels and moved by up to ``jitter`` pixels per coordinate (uniform, both
    ways), kept inside the mask's array."""
    coords = np.argwhere(mask)
    high = np.asarray(mask.shape, np.float64) - 1
    axes = (1, 0) if mask.ndim == 2 else tuple(range(mask.ndim))
    points = []
    for axis in axes:
        for value in (coords[:, axis].min(), coords[:, axis].max()):
            tied = coords[coords[:, axis] == value]
            points.append(tied[rng.integers(len(tied))])
    pts = np.asarray(points, np.float64)
    if jitter > 0:
        pts = np.clip(pts + rng.uniform(-jitter, jitter, pts.shape), 0, high)
    return pts


def augment_pairs(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips along every axis and 90° rotations in the Y-X plane of pairs ``(B, C, *size)`` / ``(B, *size)``."""
    xs, ys = [], []
    dims = y.ndim - 1
    for xi, yi in zip(x, y):
        k = int(rng.integers(4))
        xi, yi = torch.rot90(xi, k, (dims - 1, dims)), torch.rot90(yi, k, (dims - 2, dims - 1))
        for axis in range(dims):
            if rng.integers(2):
                xi, yi = xi.flip(axis + 1), yi.flip(axis)
        xs.append(xi)
        ys.append(yi)
    return torch.stack(xs), torch.stack(ys)


def object_crops(sources: Sequence[Source], settings, *, jitter: float | None = None, min_pixels: int = 12
                 ) -> list[ObjectCrop]:
    """Every labelled object of every source (each label value of each image is one object).

    The neighbourhood read around an object holds every crop the recipe ``settings`` may cut from its
    jittered points. Objects of fewer than ``min_pixels`` pixels are skipped.
    """
    crops = []
    for s in sources:
        for index in np.ndindex(*s.stack_shape) if s.stack_shape else [()]:
            labels = s.labels[index]
            for value, box in sorted(object_boxes(labels, s.name).items()):
                extent = max(b.stop - b.start - 1 for b in box)
                shift = default_jitter(extent) if jitter is None else float(jitter)
                pad = int(np.ceil(max(settings.min_margin, settings.margin * (extent + 2 * shift)) + shift)) + 2
                region = tuple(slice(max(0, b.start - pad), min(n, b.stop + pad)) for b, n in zip(box, labels.shape))
                mask = np.asarray(compute_here(labels[region])) == value
                if mask.sum() < min_pixels:
                    continue
                image = np.asarray(compute_here(s.image[index + (slice(None),) + region]), np.float32)
                check_finite(image, s, f"neighbourhood of label {value} from {tuple(b.start for b in region)}"
                             + (f" of image {index}" if index else ""))
                where = f"{s.name}{'' if not index else ' ' + str(index)}"
                crops.append(ObjectCrop(image, mask, f"{where}, label {value}"))
    if not crops:
        raise ValueError(f"`labels` hold no object of at least {min_pixels} pixels: an extreme-point model trains "
                         "on instance labels (one value per object).")
    return crops


def object_boxes(labels, name: str = "the image") -> dict[int, tuple[slice, ...]]:
    """The bounding box of every label value > 0. A Dask array (a lazily read Zarr or TIFF) is read
    block by block, so instance labels of a whole slide never need to fit in memory. Negative labels
    raise (``name``: the image, for the message), in the same pass."""
    from scipy import ndimage

    if not hasattr(labels, "blocks"):
        labels = np.asarray(labels)
        check_no_negative(int(labels.min()), name)
        found = ndimage.find_objects(labels)
        return {value: box for value, box in enumerate(found, start=1) if box is not None}
    starts = [np.cumsum((0,) + tuple(c))[:-1] for c in labels.chunks]
    low: dict[int, np.ndarray] = {}
    high: dict[int, np.ndarray] = {}
    for block_index in np.ndindex(*labels.numblocks):
        block = compute_here(labels.blocks[block_index])
        check_no_negative(int(block.min()), name)
        origin = np.array([s[i] for s, i in zip(starts, block_index)])
        for value, box in enumerate(ndimage.find_objects(block), start=1):
            if box is None:
                continue
            lo = origin + [b.start for b in box]
            hi = origin + [b.stop for b in box]
            low[value] = np.minimum(low[value], lo) if value in low else lo
            high[value] = np.maximum(high[value], hi) if value in high else hi
    return {v: tuple(slice(int(a), int(b)) for a, b in zip(low[v], high[v])) for v in low}


def split_objects(objects: list[ObjectCrop], val_fraction: float, rng: np.random.Generator
                  ) -> tuple[list[ObjectCrop], list[ObjectCrop]]:
    """Hold out ``val_fraction`` of the objects (at least one when there are two or more)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"`val_fraction` must be in [0, 1), got {val_fraction!r}.")
    if val_fraction == 0 or len(objects) < 2:
        return objects, []
    n_val = min(len(objects) - 1, max(1, int(round(val_fraction * len(objects)))))
    chosen = set(rng.choice(len(objects), size=n_val, replace=False).tolist())
    return ([o for i, o in enumerate(objects) if i not in chosen], [o for i, o in enumerate(objects) if i in chosen])


def object_example(image: np.ndarray, mask: np.ndarray, points: np.ndarray, settings: PromptSettings
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """One pair: the network's input ``(C + 1, *size)`` and the target mask ``(*size)`` (uint8), from an
    object's ``mask`` in ``image`` ``(C, *spatial)`` and its (jittered) extreme ``points``."""
    dims = mask.ndim
    start, stop = crop_box(points, mask.shape, settings)
    box = tuple(slice(a, b) for a, b in zip(start, stop))
    crop = image[(slice(None),) + box]
    x = prompt_input(crop, points - np.asarray(start), settings)[0]
    target = torch.from_numpy(mask[box].astype(np.float32))[None, None]
    # Linear resizing then 0.5: the target's outline matches the prediction's resizing at test time.
    target = resize(target, (settings.size,) * dims)[0, 0] > 0.5
    return x, target.to(torch.uint8)


def _example(obj: ObjectCrop, rng: np.random.Generator, settings, jitter: float | None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    shift = default_jitter(obj.extent) if jitter is None else float(jitter)
    return object_example(obj.image, obj.mask, jittered_points(obj.mask, rng, shift), settings)


class ObjectSampler:
    """Training batches of extreme-point pairs: random objects, freshly jittered points, flips and rotations.

    Args:
        objects: the training objects.
        settings: the crop recipe (:class:`segarch.prompts.PromptSettings`).
        jitter: pixels each point may move (default: :func:`default_jitter` of each object).
        augment: flip and rotate the pairs.
        seed: random seed.
    """

    def __init__(self, objects: Sequence[ObjectCrop], settings, *, jitter: float | None = None,
                 augment: bool = True, seed: int = 0) -> None:
        if not objects:
            raise ValueError("`labels` have no object left for training after holding out validation objects.")
        self.objects = list(objects)
        self.settings = settings
        self.jitter = jitter
        self.augment = augment
        self.rng = np.random.default_rng(seed)

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(inputs (B, C + 1, *size), targets (B, 1, *size), masks (B, 1, *size))`` like the patch sampler's."""
        pairs = [_example(self.objects[i], self.rng, self.settings, self.jitter)
                 for i in self.rng.integers(0, len(self.objects), batch_size)]
        x = torch.stack([p[0] for p in pairs])
        y = torch.stack([p[1] for p in pairs]).long()
        if self.augment:
            x, y = augment_pairs(x, y, self.rng)
        return x.contiguous(), y[:, None].contiguous(), torch.ones((len(y), 1) + tuple(y.shape[1:]))


def object_validation(objects: Sequence[ObjectCrop], settings, *, jitter: float | None = None, seed: int = 0
                      ) -> list[Region]:
    """Fixed held-out pairs (points jittered once, from ``seed``) as regions the training loop validates on."""
    rng = np.random.default_rng(seed)
    regions = []
    for obj in objects:
        x, t = _example(obj, rng, settings, jitter)
        regions.append(Region(x.numpy(), t.numpy().astype(np.int64), np.ones(t.shape, bool)))
    return regions


def object_iou(model, objects: Sequence[ObjectCrop]) -> float | None:
    """Mean IoU over ``objects`` of :func:`segarch.prompts.segment_from_points` from their exact extreme
    points, at the image's resolution (what a user sees)."""
    if not objects:
        return None
    ious = []
    for obj in objects:
        axes = "C" + "ZYX"[-obj.mask.ndim:]
        pred = segment_from_points(model, obj.image, extreme_points(obj.mask), axes=axes)
        union = np.logical_or(pred, obj.mask).sum()
        ious.append(float(np.logical_and(pred, obj.mask).sum() / union) if union else 1.0)
    return float(np.mean(ious))
