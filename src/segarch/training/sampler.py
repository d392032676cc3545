"""Batches of augmented training patches and fixed validation patches, read lazily from :class:`Item` objects."""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
import torch

from segarch.training.data import Item, Region, read_region
from segarch.training.transforms import build_augmentation, region_to_dict

__all__ = ["PatchSampler", "validation_patches"]


class PatchSampler:
    """Draws training batches: a random item (weighted by annotated area), a random region around an
    annotated place (about twice the patch per axis, read lazily), then MONAI crops balanced between
    foreground and background, and augmentation.

    Args:
        items: the training items.
        patch: patch size per spatial axis.
        preprocess: ``preprocess(region, item)``, the model's pre-processing of each region read (see
            :class:`segarch.training.normalisation.PerImagePreprocessing`).
        num_classes: output channels (2: any label > 0 is foreground).
        augment: see :func:`segarch.training.transforms.build_augmentation`.
        seed: random seed for region choice and for the MONAI transforms.
        targets: ``targets(labels)``: what is learned from a region's labels (default: the class map, see
            :func:`~segarch.training.data.read_region`), integer classes or float values (e.g. a distance
            map); it is cropped, flipped and deformed with the image (nearest neighbour).
    """

    def __init__(self, items: Sequence[Item], patch: Sequence[int], preprocess: Callable, num_classes: int,
                 augment="default", seed: int = 0, samples_per_region: int = 2,
                 targets: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.items = list(items)
        self.patch = tuple(int(p) for p in patch)
        self.preprocess = preprocess
        self.num_classes = num_classes
        self.targets = targets
        self.float_targets = False  # set by the first region read: float targets stay float in batches
        self.samples_per_region = samples_per_region
        self.rng = np.random.default_rng(seed)
        dims = len(self.patch)
        self.transform = build_augmentation(dims, self.patch, augment, samples_per_region=samples_per_region)
        self.transform.set_random_state(seed=seed)
        weights = np.array([it.annotated_volume() for it in self.items], float)
        if not len(weights) or weights.sum() <= 0:
            raise ValueError("`labels` have no annotated pixels left for training after holding out validation data.")
        self.weights = weights / weights.sum()
        factor = 2.0 if dims == 2 else 1.5
        self.region = tuple(int(p * factor) for p in self.patch)

    def _region(self) -> Region:
        for _ in range(20):
            item = self.items[self.rng.choice(len(self.items), p=self.weights)]
            shape = item.shape
            size = [max(p, min(r, s)) for p, r, s in zip(self.patch, self.region, shape)]
            start = [b.start + int(self.rng.integers(0, max(1, s - min(n, s) + 1)))
                     for b, s, n in zip(item.bounds, shape, size)]
            if item.source.mask is None and item.source.spatial_dims == 3:
                # Place the region over an annotated Z-slice, so partly annotated volumes are used.
                zb = item.bounds[0]
                zs = np.flatnonzero(item.annotated[zb]) + zb.start
                if len(zs):
                    z = int(self.rng.choice(zs))
                    depth = min(size[0], shape[0])
                    start[0] = int(np.clip(z - self.rng.integers(0, depth), zb.start, zb.stop - depth))
            region = read_region(item, start, size, preprocess=self.preprocess, num_classes=self.num_classes,
                                 targets=self.targets)
            if region.mask.any():
                self.float_targets = region.target.dtype.kind == "f"
                return region
        raise ValueError("Could not find annotated pixels in 20 random regions: check the labels and `mask`.")

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(images (B, C, *patch), targets (B, 1, *patch), masks (B, 1, *patch))``: targets are int64 classes,
        or float32 when ``targets`` gives float values."""
        samples = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MONAI warns when a region has no foreground to centre on
            while len(samples) < batch_size:
                out = self.transform(region_to_dict(self._region()))
                samples.extend(out if isinstance(out, list) else [out])
        samples = samples[:batch_size]

        def stack(key, dtype):
            return torch.stack([torch.as_tensor(np.asarray(s[key])) for s in samples]).to(dtype)

        target_type = torch.float32 if self.float_targets else torch.int64
        return stack("image", torch.float32), stack("label", target_type), stack("mask", torch.float32)


def validation_patches(items: Sequence[Item], patch: Sequence[int], preprocess: Callable, num_classes: int,
                       max_patches: int, seed: int = 0,
                       targets: Callable[[np.ndarray], np.ndarray] | None = None) -> list[Region]:
    """Non-overlapping patches covering the held-out items (the last one along each axis flush with the end),
    those with annotated pixels only, at most ``max_patches`` of them (a fixed random subset); ``targets``
    as :class:`PatchSampler`'s."""
    patches = []
    for item in items:
        starts = []
        for b, p in zip(item.bounds, patch):
            length = b.stop - b.start
            pos = list(range(b.start, b.start + max(1, length - p + 1), p))
            if length > p and pos[-1] != b.stop - p:
                pos.append(b.stop - p)
            starts.append(pos)
        for start in np.stack(np.meshgrid(*starts, indexing="ij"), -1).reshape(-1, len(patch)):
            if item.source.mask is None and item.source.spatial_dims == 3:
                if not item.annotated[start[0]: start[0] + patch[0]].any():
                    continue
            patches.append((item, tuple(int(s) for s in start)))
    rng = np.random.default_rng(seed)
    if len(patches) > max_patches:
        patches = [patches[i] for i in sorted(rng.choice(len(patches), max_patches, replace=False))]
    regions = [read_region(item, start, patch, preprocess=preprocess, num_classes=num_classes, targets=targets)
               for item, start in patches]
    return [r for r in regions if r.mask.any()]
