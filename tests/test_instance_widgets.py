"""Instances in napari, driven as a user drives them in a real viewer (under Xvfb): the Train widget trains an
instance model from a Labels layer of instances; the Segment widget offers it the 'instances' output, fills a
live layer from a Zarr store, and puts the per-object table in the Labels layer's features."""

from __future__ import annotations

import numpy as np
import pytest

import segarch

pytestmark = pytest.mark.gui


@pytest.fixture
def viewer_with_cells(make_napari_viewer):
    from segarch.models.session import SESSION
    from segarch.synthetic import nuclei_sample

    SESSION.clear()
    viewer = make_napari_viewer(show=True)
    s = nuclei_sample((96, 96), seed=4, hard=True)
    viewer.add_image(s.image, name="cells")
    viewer.add_labels(s.labels, name="cells objects")
    yield viewer
    SESSION.clear()


def _wait_train(qtbot, w, timeout=180_000):
    qtbot.waitUntil(lambda: w.train_button.isEnabled() and w.worker is not None and not w.worker.is_running,
                    timeout=timeout)


def _wait_segment(qtbot, w, timeout=180_000):
    qtbot.waitUntil(lambda: w.segment_button.isEnabled() and w.worker is not None and not w.worker.is_running,
                    timeout=timeout)


def test_train_an_instance_model_then_segment_objects_with_features(viewer_with_cells, qtbot, tmp_path):
    import zarr

    from napari_segarch._segment_widget import SegmentWidget
    from segarch.models.session import SESSION
    from napari_segarch._train_widget import TrainWidget

    viewer = viewer_with_cells
    train = TrainWidget(viewer)
    viewer.window.add_dock_widget(train, name="Train")
    train.image_combo.setCurrentText("cells")
    train.labels_combo.setCurrentText("cells objects")
    train.select_model("zoo", "unet")
    train.learn_combo.setCurrentIndex(train.learn_combo.findData("instance"))
    assert not train.classes_spin.isEnabled()  # objects: the decoder's classes, not the user's
    train.patch_spin.setValue(48)
    train.batch_spin.setValue(2)
    train.steps_spin.setValue(3)
    train.device_combo.setCurrentText("cpu")
    arguments = train.training_arguments()
    assert arguments["task"] == "instance" and arguments["num_classes"] is None
    train.train_button.click()
    _wait_train(qtbot, train)
    assert train.model is not None and train.model.instance is not None, train.status.text()
    assert "object F1" in train.status.text() and "output: instances" in train.status.text()
    name = train.model_name
    assert name in SESSION.names() and name.endswith("instances")

    segment = SegmentWidget(viewer)
    viewer.window.add_dock_widget(segment, name="Segment")
    segment.image_combo.setCurrentText("cells")
    qtbot.waitUntil(segment.models_ready, timeout=60_000)
    segment.select_model("zoo", "unet")
    instances_item = segment.output_combo.model().item(2)
    assert segment.output_combo.itemText(2) == "instances" and not instances_item.isEnabled()
    segment.select_model("session", name)
    assert instances_item.isEnabled() and segment.output_combo.currentText() == "instances"
    segment.device_combo.setCurrentText("cpu")
    segment.tile_spin.setValue(64)
    out = tmp_path / "objects.zarr"
    segment.out_edit.setText(str(out))  # a store: the layer is added at once and fills as blocks are decoded
    segment.segment_button.click()
    live = segment._live_layer
    assert live is not None and live in viewer.layers
    _wait_segment(qtbot, segment)
    layer = viewer.layers["cells segmentation"]
    assert layer is live and not layer.multiscale
    shown = np.asarray(layer.data)
    expected = segarch.predict(SESSION.get(name), viewer.layers["cells"].data, output="instances", tile=64,
                               device="cpu")
    assert shown.dtype == np.uint32 and np.array_equal(shown, expected)
    count = int(expected.max())
    assert count > 0
    features = layer.features
    assert list(features["index"]) == list(range(1, count + 1)) == list(features["label"])
    assert list(features["area_pixels"]) == np.bincount(expected.ravel())[1:].tolist()
    assert f"{count} objects" in segment.status.text()
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["segarch"]["instances"]["objects"] == count
    assert (tmp_path / "objects_objects.csv").exists()
    # In memory (a small image, no store): the same labels and features.
    segment.out_edit.setText("")
    segment.segment_button.click()
    _wait_segment(qtbot, segment)
    result = segment.result_layer
    assert result is not live and np.array_equal(np.asarray(result.data), expected)
    assert len(result.features) == count and "centroid_y" in result.features


def test_a_semantic_model_file_asked_for_instances_says_so(viewer_with_cells, qtbot, tmp_path):
    from napari_segarch._segment_widget import SegmentWidget

    model = segarch.Model.from_zoo("unet", features=(4, 8, 16), out_channels=2)
    model.trained = True
    path = segarch.save_model(model, tmp_path / "semantic.safetensors")
    segment = SegmentWidget(viewer_with_cells)
    viewer_with_cells.window.add_dock_widget(segment, name="Segment")
    segment.image_combo.setCurrentText("cells")
    qtbot.waitUntil(segment.models_ready, timeout=60_000)
    segment.select_model("file")
    segment.file_edit.setText(str(path))
    assert segment.output_combo.model().item(2).isEnabled()  # a file is not read before Segment
    segment.output_combo.setCurrentText("instances")
    out = tmp_path / "never.zarr"
    segment.out_edit.setText(str(out))
    segment.segment_button.click()
    _wait_segment(qtbot, segment)
    assert "`output`='instances' is not available" in segment.last_error
    assert not out.exists() and "cells segmentation" not in viewer_with_cells.layers
