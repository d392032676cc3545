"""Detectors (Mask R-CNN) through segarch.train(task="instance"): targets made from instance labels by the
pipeline, real training for a few steps, then segarch.predict(output="instances") on a fresh image."""

from __future__ import annotations

import numpy as np
import pytest

import segarch
from segarch import zoo


def _squares_image(rng, size=64, count=2):
    """``count`` squares of random sides (12-20) at random places, not touching, on noise."""
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


@pytest.mark.slow
def test_mask_rcnn_trains_through_segarch_train_and_predicts_instances():
    rng = np.random.default_rng()
    data = [_squares_image(rng) for _ in range(6)]
    options = dict(zoo.card("mask_rcnn").test_config)
    model = segarch.train("mask_rcnn", [d[0] for d in data], [d[1] for d in data], task="instance", steps=150,
                          lr=2e-3, batch_size=2, patch=64, augment="none", options=options, val_every=150)
    assert model.arch == "mask_rcnn" and model.trained
    assert model.validation["object_f1"] is not None
    image, labels = _squares_image(rng)
    found = np.asarray(segarch.predict(model, image, axes="YX", output="instances"))
    assert found.max() == 2
    for i in (1, 2):  # each square is one found object, a different one each
        inside = found[labels == i]
        assert (inside > 0).mean() > 0.6 and len(np.unique(inside[inside > 0])) == 1
    assert len({int(found[labels == i].max()) for i in (1, 2)}) == 2
    assert (found[labels == 0] > 0).mean() < 0.05


def test_detector_task_is_chosen_by_instance_and_by_default():
    from segarch.training.detection import DetectionTask
    from segarch.training.task import task_for

    card = zoo.card("mask_rcnn")
    assert task_for("instance", card) is DetectionTask and task_for(None, card) is DetectionTask
    with pytest.raises(ValueError, match="`decoder` does not apply to a detector"):
        rng = np.random.default_rng()
        image, labels = _squares_image(rng)
        segarch.train("mask_rcnn", [image], [labels], task="instance", steps=1, decoder="boundary",
                      options=dict(card.test_config))


@pytest.mark.slow
def test_efficientps_trains_as_a_detector_through_segarch_train_and_predicts_instances():
    # a few steps only: that the panoptic detector goes through the detector task and the tiled instance path
    from segarch.training.detection import DetectionTask
    from segarch.training.task import task_for

    card = zoo.card("efficientps")
    assert task_for("instance", card) is DetectionTask and task_for(None, card) is DetectionTask
    rng = np.random.default_rng()
    data = [_squares_image(rng) for _ in range(3)]
    model = segarch.train("efficientps", [d[0] for d in data], [d[1] for d in data], task="instance", steps=3,
                          batch_size=2, patch=64, augment="none", options=dict(card.test_config), val_every=3)
    assert model.arch == "efficientps" and model.trained and model.network.thing_classes == (1,)
    found = np.asarray(segarch.predict(model, data[0][0], axes="YX", output="instances"))
    assert found.shape == (64, 64) and found.dtype.kind in "iu"
