"""Corrective clicks the Extreme points widget must refuse (issue 20, *Bad input*): on another slice than the
object, outside the current object's crop, outside the image. Each gives a message and writes nothing; the
refused clicks are not kept, so the next valid click corrects the object."""

from __future__ import annotations

import re

import numpy as np
import pytest

from segarch import pretrained
from segarch.prompts import extreme_points, object_scene
from segarch.prompts.clicks import next_click
from segarch.prompts.recipe import crop_box
from segarch.prompts.segment import settings_for
from tests.test_prompt_widget import _click, _correct, _largest_object, widget  # noqa: F401 - the fixture

pytestmark = pytest.mark.gui


def test_refused_corrections_give_a_message_and_write_nothing(widget, qtbot):  # noqa: F811
    viewer = widget.viewer
    seed = int(np.random.default_rng().integers(50_000, 60_000))
    image, truth = object_scene((160, 160), seed=seed)
    stack = np.stack([np.zeros_like(image), image, np.zeros_like(image)])
    viewer.add_image(stack, name="stack")
    widget.image_combo.setCurrentText("stack")
    widget.model_combo.setCurrentText("dextr_light.clicks2d")
    widget.start()
    value = _largest_object(truth)
    points = extreme_points(truth == value)
    _click(widget, qtbot, np.c_[np.ones(4), points])
    labels = viewer.layers["stack objects"]
    painted = labels.data.copy()
    assert (painted[1] == 1).any() and widget.current is not None and widget.current["clicks"] == []

    start, stop = crop_box(points, truth.shape, settings_for(pretrained.load("dextr_light.clicks2d")))
    # A pixel of the image outside the object's crop: beyond the crop's far corner, else before its near one.
    outside = [stop[0] + 2 if stop[0] + 2 < 160 else start[0] - 3, stop[1] + 2 if stop[1] + 2 < 160 else start[1] - 3]
    inside = np.rint(points.mean(axis=0))
    refused = [((2, *inside), True, r"The correction lies on slice \(2,\), the object on \(1,\)"),
               ((1, *outside), False, r"`negative`\[0\].*outside the current object's crop"),
               ((1, 170.0, inside[1]), True, r"`positive`\[0\].*lies outside the image of shape \(160, 160\)")]
    for click, positive, message in refused:
        _correct(widget, qtbot, click, positive)
        assert re.search(message, widget.last_error), (click, widget.last_error)
        np.testing.assert_array_equal(labels.data, painted)
        assert widget.current["clicks"] == [] and len(widget.history) == 1

    # The refused clicks were not kept: a valid correction at the largest error repaints the object.
    click = next_click(painted[1] == 1, truth == value)
    assert click is not None
    _correct(widget, qtbot, (1, *click[0]), click[1])
    assert widget.last_error == "" and len(widget.current["clicks"]) == 1
    assert not np.array_equal(labels.data, painted) and not labels.data[0].any() and not labels.data[2].any()
    widget.undo()
    np.testing.assert_array_equal(labels.data, painted)
