"""An oracle panoptic network that reads its objects from class masks, so it still finds them in an image that was
resampled (linear interpolation blurs masks, not ids): for the tiled panoptic path at other pixel sizes."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from skimage.transform import resize

from panoptic_helpers import OracleHeads


class MaskOracleHeads(OracleHeads):
    """Input ``(B, 2, *S)``: the masks of classes 1 and 2 (objects at least 2 pixels apart); output: the heads of
    ``arch`` for the objects in the tile (connected components of the masks above 0.5), as
    :class:`panoptic_helpers.OracleHeads` makes them (DeeperLab's keypoint disks of ``radius``)."""

    def __init__(self, arch: str, spatial_dims: int = 2, radius: float = 3) -> None:
        super().__init__(arch, spatial_dims)
        self.radius = radius

    def heads_for(self, labels, classes) -> dict:
        heads = super().heads_for(labels, classes)
        if "offset" in heads:  # one peak per object, as a network's: a centre of mass between pixels makes a
            # plateau of 2^d equal maxima, each a centre, and pixels whose interpolated offsets fall short (the object's
            # border on a resampled grid) would split between them; the pixel after the centre on every axis wins
            heads["center"] = heads["center"] - 1e-3 * heads["offset"].sum(0, keepdims=True) * (heads["center"] > 0)
        if self.arch == "deeperlab" and self.radius != 3:
            from segarch.instances.deeperlab import keypoint_targets

            labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)
            heads.update(keypoint_targets(labels, radius=self.radius))
        return heads

    def forward(self, x):
        outs = []
        for masks in x.numpy():
            classes = np.where(masks[1] > 0.5, 2, np.where(masks[0] > 0.5, 1, 0))
            labels = ndimage.label(classes > 0)[0]
            outs.append(self.heads_for(labels, classes))
        return {h.name: torch.from_numpy(np.stack([o[h.name] for o in outs])).float() for h in self.heads}


def masks_of(classes: np.ndarray) -> np.ndarray:
    """The oracle's input for a class map: one float channel per object class."""
    return np.stack([classes == 1, classes == 2]).astype(np.float32)


def at_pixel_size(labels: np.ndarray, classes: np.ndarray, factors) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The scene taken with pixels ``factors`` times larger per axis (smaller for factors < 1): ``(image, labels,
    classes)`` on the new grid; the image's masks averaged over each new pixel (anti-aliased), the labels and
    classes nearest."""
    shape = tuple(max(1, int(round(n / f))) for n, f in zip(labels.shape, factors))
    image = np.stack([resize(m, shape, order=1, anti_aliasing=any(f > 1 for f in factors), preserve_range=True)
                      for m in masks_of(classes)]).astype(np.float32)
    coarse_labels = resize(labels, shape, order=0, anti_aliasing=False, preserve_range=True).astype(np.int64)
    coarse_classes = resize(classes, shape, order=0, anti_aliasing=False, preserve_range=True).astype(np.int64)
    return image, coarse_labels, coarse_classes
