"""Detectors (Mask R-CNN) through segarch.train(task="instance"): targets made from instance labels by the
pipeline, real training for a few steps, then segarch.predict(output="instances") on a fresh image."""

from __future__ import annotations

import numpy as np
import pytest

import segarch
from segarch import zoo
from detector_helpers import random_squares


@pytest.mark.slow
def test_mask_rcnn_trains_through_segarch_train_and_predicts_instances():
    rng = np.random.default_rng()
    # 24 images with flips and rotations, 300 steps at 3e-3: 8 of 8 fixed draws (seeds 1000-1007) found both
    # squares of a fresh image; 6 images without augmentation for 150 steps: 5 of 8
    data = [random_squares(rng) for _ in range(24)]
    events = []
    options = dict(zoo.card("mask_rcnn").test_config)
    model = segarch.train("mask_rcnn", [d[0] for d in data], [d[1] for d in data], task="instance", steps=300,
                          lr=3e-3, batch_size=2, patch=64, options=options, val_every=300,
                          progress=events.append)
    assert model.arch == "mask_rcnn" and model.trained
    assert model.validation["object_f1"] is not None
    said = [e.message for e in events if e.kind == "validation"]
    assert said and all("F1@0.5" in m and "nan" not in m for m in said), said  # no loss to report: not "nan"
    image, labels = random_squares(rng)
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
        image, labels = random_squares(rng)
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
    data = [random_squares(rng) for _ in range(3)]
    model = segarch.train("efficientps", [d[0] for d in data], [d[1] for d in data], task="instance", steps=3,
                          batch_size=2, patch=64, augment="none", options=dict(card.test_config), val_every=3)
    assert model.arch == "efficientps" and model.trained and model.network.thing_classes == (1,)
    found = np.asarray(segarch.predict(model, data[0][0], axes="YX", output="instances"))
    assert found.shape == (64, 64) and found.dtype.kind in "iu"
