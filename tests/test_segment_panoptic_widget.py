"""The Segment dock's "panoptic" output: two layers, the classes (named) and the instances (with their table)."""

from __future__ import annotations

import numpy as np
import pytest

import segarch
from gui_helpers import wait_done
from panoptic_helpers import CLASS_NAMES, trained_panoptic_model

pytestmark = [pytest.mark.gui, pytest.mark.slow]  # a training of 300 steps, then a shown viewer


def test_panoptic_output_adds_a_classes_and_an_instances_layer(segment_widget, qtbot, tmp_path):
    widget = segment_widget
    model, image, labels, _ = trained_panoptic_model(0)
    path = segarch.save_model(model, tmp_path / "panoptic.safetensors")
    widget.viewer.add_image(image, name="scene")
    widget.image_combo.setCurrentText("scene")
    widget.select_model("file")
    widget.file_edit.setText(str(path))
    widget.output_combo.setCurrentText("panoptic")
    widget.tile_spin.setValue(64)
    widget.axes_edit.setText("YX")
    widget.segment_button.click()
    wait_done(qtbot, widget)
    expected = segarch.predict(segarch.load_model(path), image, output="panoptic", tile=64, axes="YX",
                               overlap=widget.overlap_spin.value(), device=widget.device_combo.currentText())
    classes, instances = widget.viewer.layers["scene classes"], widget.viewer.layers["scene instances"]
    np.testing.assert_array_equal(np.asarray(classes.data), expected.classes)
    np.testing.assert_array_equal(np.asarray(instances.data), expected.instances)
    assert list(classes.features["class"]) == CLASS_NAMES
    table = instances.features
    assert sorted(table["label"]) == sorted(np.unique(expected.instances[expected.instances > 0]).tolist())
    for label, cls in zip(table["label"], table["class"]):  # each object's class, as in the classes layer
        assert set(np.unique(expected.classes[expected.instances == label])) == {cls}
    assert {int(np.bincount(expected.classes[labels == s]).argmax()) for s in (1, 2)} == {1, 2}
    assert "objects" in widget.status.text() and widget.result_layer is instances
