"""Two well separated squares, the trivial image on which a detector of the zoo (Mask R-CNN's family) trained for a
few steps must find two objects."""

from __future__ import annotations

import numpy as np
import torch

from segarch import zoo
from segarch.instances.detections import detection_targets, labels_from_detections


def two_squares(rng, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image of two 16-pixel squares and their instance labels (1 and 2)."""
    labels = np.zeros((size, size), np.int64)
    # 16-pixel squares centred on cells of P2's anchor grid (centres at 4i + 2), at random among such places
    y, x = rng.choice([2, 6, 10], size=2)
    labels[y:y + 16, x:x + 16] = 1
    y, x = rng.choice([38, 42, 46], size=2)
    labels[y:y + 16, x:x + 16] = 2
    image = (labels > 0).astype(np.float32) + 0.1 * rng.normal(size=labels.shape).astype(np.float32)
    return image, labels


def random_squares(rng, size: int = 64, count: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """``count`` squares of random sides (12-20 pixels) anywhere in a noisy image, at least 2 pixels apart (not on
    the anchor grid), and their instance labels 1..count."""
    labels = np.zeros((size, size), np.int64)
    placed = 0
    while placed < count:
        side = int(rng.integers(12, 21))
        y, x = rng.integers(0, size - side + 1, size=2)
        if labels[max(0, y - 2):y + side + 2, max(0, x - 2):x + side + 2].any():
            continue
        placed += 1
        labels[y:y + side, x:x + side] = placed
    image = (labels > 0).astype(np.float32) + 0.1 * rng.normal(size=labels.shape).astype(np.float32)
    return image, labels


def train_on_two_squares(name: str, seed: int, steps: int = 200, lr: float = 1e-3):
    """Zoo detector ``name`` (its test configuration) trained ``steps`` Adam steps on one image of two squares
    (drawn with ``seed``); returns the labels, and the instance labels the trained detector finds on that image."""
    net, x, labels = train_detector_on_two_squares(name, seed, steps, lr)
    with torch.no_grad():
        return labels, labels_from_detections(net(x)[0])


def train_detector_on_two_squares(name: str, seed: int, steps: int = 200, lr: float = 1e-3):
    """As :func:`train_on_two_squares`; returns the trained detector (in eval mode), the image ``(1, 1, Y, X)``
    and its labels."""
    torch.manual_seed(0)
    image, labels = two_squares(np.random.default_rng(seed))
    net, x = train_detector(name, image, labels, steps, lr)
    return net, x, labels


def train_detector(name: str, image: np.ndarray, labels: np.ndarray, steps: int, lr: float):
    """Zoo detector ``name`` (its test configuration, 2D or 3D as ``image``) trained ``steps`` Adam steps on one
    image and its instance labels; returns the detector (in eval mode) and the image as ``(1, 1, *spatial)``."""
    net = zoo.create(name, spatial_dims=image.ndim, in_channels=1, out_channels=2, **zoo.card(name).test_config)
    x, targets = torch.from_numpy(image)[None, None], [detection_targets(labels)]
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        sum(net(x, targets).values()).backward()
        opt.step()
    return net.eval(), x


def assert_one_object_per_square(labels: np.ndarray, found: np.ndarray, share: float = 0.8) -> None:
    """As many objects found as squares, each square mostly one of them (more than ``share`` of it), a different
    one each, and that object mostly the square."""
    count = int(labels.max())
    assert found.max() == count, np.unique(found)
    for i in range(1, count + 1):
        ids, counts = np.unique(found[labels == i], return_counts=True)
        majority = ids[np.argmax(counts)]
        assert majority > 0 and counts.max() > share * (labels == i).sum()
        assert ((found == majority) & (labels == i)).sum() > share * (found == majority).sum()


def assert_two_squares_decoded(result, labels: np.ndarray, covered: float) -> None:
    """A panoptic decoder's ``result`` on :func:`two_squares` (class 1): two objects, each square one of them and more
    than ``covered`` of it, little background taken, panoptic ids 1001 and 1002."""
    found = result.instances
    assert found.max() == 2 and len(result.centers) == 2, np.unique(found)
    owners = set()
    for i in (1, 2):
        inside = found[labels == i]
        assert len(np.unique(inside[inside > 0])) == 1  # one object per square
        assert (inside > 0).mean() > covered
        owners.add(int(inside.max()))
    assert owners == {1, 2} and (found[labels == 0] > 0).mean() < 0.02
    assert set(np.unique(result.panoptic)) == {0, 1001, 1002} and result.classes.tolist() == [1, 1]
