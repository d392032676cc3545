"""A Panoptic-DeepLab trained for a few steps on a 128² image of two squares of two classes, each square crossing
the middle (a block seam at 64, and tile seams of 64-pixel tiles with overlap 0.5), for the tiled panoptic tests.

Trained on random 64² crops (the tile size) with the whole image's targets cropped, so the network sees what a
tile sees; 300 Adam steps, about 20-25 s on one CPU thread.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
import torch
import torch.nn.functional as F

from segarch import zoo
from segarch.instances.deeperlab import keypoint_targets
from segarch.instances.panoptic import center_offset_targets
from segarch.models.model import Model

CLASS_NAMES = ["background", "round", "bright"]


def two_classes_scene(rng, size: int = 128):
    """``(image, instance labels, semantic classes)``: square 1 (class 1) across x = 64, square 2 (class 2, twice
    as bright) across y = 64, sides 14-20 pixels."""
    labels = np.zeros((size, size), np.int64)
    side_a, side_b = (int(s) for s in rng.integers(14, 21, 2))
    y, x = int(rng.integers(8, 40)), int(rng.integers(64 - side_a + 3, 64 - 3))
    labels[y:y + side_a, x:x + side_a] = 1
    y, x = int(rng.integers(64 - side_b + 3, 64 - 3)), int(rng.integers(80, size - side_b - 4))
    labels[y:y + side_b, x:x + side_b] = 2
    classes = labels.copy()  # object i is of class i
    image = np.where(classes == 2, 2.0, (classes == 1) * 1.0) + 0.1 * rng.normal(size=labels.shape)
    return image.astype(np.float32), labels, classes


@functools.lru_cache(maxsize=2)
def trained_panoptic_model(seed: int = 0, steps: int = 300):
    """``(model, image, labels, classes)``: the test configuration of ``panoptic_deeplab`` (3 classes) trained on
    the scene of ``seed``."""
    torch.manual_seed(0)
    image, labels, classes = two_classes_scene(np.random.default_rng(seed))
    card = zoo.card("panoptic_deeplab")
    model = Model.from_zoo("panoptic_deeplab", in_channels=1, out_channels=3, class_names=CLASS_NAMES,
                           **card.test_config)
    net = model.network
    x = torch.from_numpy(model.preprocess(image[None]))[None]
    semantic = torch.from_numpy(classes)[None]
    center, offset = (torch.from_numpy(t)[None] for t in center_offset_targets(labels, sigma=4))
    optimizer = torch.optim.Adam(net.parameters(), lr=card.test_lr)
    crops = np.random.default_rng(seed + 1)
    for _ in range(steps):
        corners = crops.integers(0, image.shape[0] - 64 + 1, size=(4, 2))

        def cut(t):
            return torch.stack([t[0, ..., a:a + 64, b:b + 64] for a, b in corners])

        optimizer.zero_grad()
        out = net(cut(x))
        loss = (F.cross_entropy(out["semantic"], cut(semantic)) + 10 * F.mse_loss(out["center"], cut(center))
                + F.l1_loss(out["offset"] / 8, cut(offset) / 8))
        loss.backward()
        optimizer.step()
    net.eval()
    model.trained = True
    return model, image, labels, classes


@functools.lru_cache(maxsize=1)
def trained_efficientps(seed: int = 0, steps: int = 400):
    """``(model, image, labels, classes)``: the test configuration of ``efficientps`` (3 classes, things 1 and 2)
    trained on pairs of random 64² crops (holding part of an object) of the scene of ``seed``, with the crops'
    detection targets and semantic maps. Draw 0 and 400 steps (about 60-100 s): the whole-image fusion and the
    tiled path both find the two squares, each of its class (200 steps: a third, spurious object tiled)."""
    from segarch.instances.detections import detection_targets

    torch.manual_seed(0)
    image, labels, classes = two_classes_scene(np.random.default_rng(seed))
    model = Model.from_zoo("efficientps", in_channels=1, out_channels=3, class_names=CLASS_NAMES,
                           **zoo.card("efficientps").test_config)
    x = torch.from_numpy(model.preprocess(image[None]))
    optimizer = torch.optim.Adam(model.network.parameters(), lr=1e-3)
    crops = np.random.default_rng(seed + 1)
    for _ in range(steps):
        batch, targets = [], []
        while len(batch) < 2:
            a, b = (int(v) for v in crops.integers(0, image.shape[0] - 64 + 1, 2) // 4 * 4)  # on the anchor grid
            ids = labels[a:a + 64, b:b + 64]
            if not ids.any():
                continue
            ids = np.unique(ids, return_inverse=True)[1].reshape(ids.shape)
            target = detection_targets(ids, classes[a:a + 64, b:b + 64])
            target["semantic"] = torch.from_numpy(classes[a:a + 64, b:b + 64])
            batch.append(x[:, a:a + 64, b:b + 64])
            targets.append(target)
        optimizer.zero_grad()
        sum(model.network(torch.stack(batch), targets).values()).backward()
        optimizer.step()
    model.network.eval()
    model.trained = True
    return model, image, labels, classes


def whole_image_panoptic(model, image):
    """The per-image reference: the network on the whole (pre-processed) image, grouped by its decoder."""
    from segarch.instances.panoptic import PanopticDeepLabDecoder

    with torch.no_grad():
        outputs = model.network(torch.from_numpy(model.preprocess(image[None]))[None])
    return PanopticDeepLabDecoder(thing_classes=(1, 2), top_k=None)(outputs)


class OracleHeads(torch.nn.Module):
    """Input ``(B, 2, *S)``: instance ids and their classes; output: the heads of ``arch`` made from them (semantic
    logits ±10, targets for the rest), as the architecture's network returns them."""

    def __init__(self, arch: str, spatial_dims: int = 2) -> None:
        super().__init__()
        real = zoo.create(arch, spatial_dims=spatial_dims, in_channels=2, out_channels=3, **zoo.card(arch).test_config)
        self.arch, self.heads, self.spatial_dims, self.size_divisor = arch, real.heads, spatial_dims, real.size_divisor
        self.scale = torch.nn.Parameter(torch.ones(()))  # a weight for the provenance's hash

    def forward(self, x):
        ids, classes = np.rint(x[:, 0].numpy()).astype(np.int64), np.rint(x[:, 1].numpy()).astype(np.int64)
        outs = [self.heads_for(i, c) for i, c in zip(ids, classes)]
        return {h.name: torch.from_numpy(np.stack([o[h.name] for o in outs])).float() for h in self.heads}

    def heads_for(self, labels, classes) -> dict:
        """The heads for one image of instance ids ``labels`` and their ``classes`` (2D or 3D)."""
        labels = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)  # ids 1..n within the tile
        semantic = 20 * np.stack([classes == c for c in range(3)]).astype(np.float32) - 10
        if self.arch == "deeperlab":
            return {"semantic": semantic, **keypoint_targets(labels, radius=3)}
        center, offset = center_offset_targets(labels, sigma=2)
        return {"semantic": semantic, "center": center, "offset": offset}


def random_scene(rng, shape=(160, 160), count=14, sides=(6, 15)):
    """``(labels, classes)``: ``count`` squares (cubes for a 3D ``shape``) of sides in ``sides`` (end excluded), at
    least 4 pixels apart, each of class 1 or 2."""
    labels = np.zeros(shape, np.int64)
    classes = np.zeros_like(labels)
    placed = 0
    while placed < count:
        side = int(rng.integers(*sides))
        corner = [int(rng.integers(0, n - side + 1)) for n in shape]
        if labels[tuple(slice(max(0, c - 4), c + side + 4) for c in corner)].any():
            continue
        placed += 1
        box = tuple(slice(c, c + side) for c in corner)
        labels[box] = placed
        classes[box] = int(rng.integers(1, 3))
    return labels, classes


def cancel_in_the_decoding():
    """``(cancel, progress)`` for a panoptic run: ``progress`` sets ``cancel`` once the steps' total grows past the
    network pass's, i.e. once the block decoding has begun (the network pass complete, its heads kept)."""
    cancel, seen = threading.Event(), []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if len(seen) > 1 and total > seen[0][1]:
            cancel.set()
    return cancel, progress
