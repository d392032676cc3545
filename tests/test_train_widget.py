"""The Train widget driven as a user drives it, in a real napari viewer (under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

import segarch
from gui_helpers import wait_trained

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(train_widget):
    train_widget.batch_spin.setValue(4)
    train_widget.lr_spin.setValue(0.005)
    return train_widget


def test_train_from_the_dock_adds_a_session_model_and_saves_it(widget, qtbot, tmp_path, artifacts_dir):
    from PIL import Image as PILImage

    from napari_segarch._segment_widget import model_choices
    from segarch.models import SESSION

    assert widget.classes_spin.value() == 2  # dozens of instance labels: foreground vs background
    widget.steps_spin.setValue(20)
    widget.train_button.click()
    assert not widget.train_button.isEnabled() and widget.cancel_button.isEnabled()
    wait_trained(qtbot, widget)
    model = widget.model
    assert model is not None and model.trained
    assert widget.model_name in SESSION.names() and SESSION.get(widget.model_name) is model
    assert any(key == f"session:{widget.model_name}" for _, key in model_choices())  # the Segment widget offers it
    assert len(widget.plot.steps) == 20 and len(widget.plot.val_steps) >= 2
    assert widget.plot.smoothed()[-1] < widget.plot.smoothed()[0]
    assert model.class_names == ["background", "foreground"]
    assert "Trained" in widget.status.text()
    path = widget.save_model(str(tmp_path / "from_dock"))
    reloaded = segarch.load_model(path)
    image = widget.viewer.layers["cells"].data
    np.testing.assert_array_equal(segarch.predict(reloaded, image, device="cpu"),
                                  segarch.predict(model, image, device="cpu"))
    screenshot = widget.viewer.screenshot(canvas_only=False, flash=False)
    PILImage.fromarray(screenshot).save(artifacts_dir / "train_widget.png")
    # The new session model is now a start point for fine-tuning, too.
    widget.select_model("session", widget.model_name)


def test_cancel_keeps_the_best_model(widget, qtbot):
    widget.steps_spin.setValue(100_000)
    widget.train_button.click()
    qtbot.waitUntil(lambda: len(widget.plot.steps) >= 3, timeout=120_000)
    widget.cancel_button.click()
    wait_trained(qtbot, widget)
    assert widget.model is not None and widget.model.trained
    assert len(widget.plot.steps) < 100  # stopped long before the planned steps
    assert 1 <= widget.model.validation["best_step"] <= len(widget.plot.steps)  # validated when cancelled at the latest
    assert "Cancelled" in widget.status.text()
    labels = segarch.predict(widget.model, widget.viewer.layers["cells"].data, device="cpu")
    assert labels.shape == (64, 64)


def test_missing_layers_are_reported(make_napari_viewer, qtbot):
    from napari_segarch._train_widget import TrainWidget

    viewer = make_napari_viewer(show=False)
    w = TrainWidget(viewer)
    w.train_button.click()
    assert "Choose an image layer and a labels layer" in w.status.text()
    assert w.worker is None


def test_fine_tune_the_extreme_point_model_from_the_dock_then_click_with_it(widget, qtbot):
    from napari_segarch._prompt_widget import ExtremePointsWidget
    from napari_segarch._segment_widget import model_choices
    from segarch.models import SESSION
    from segarch.prompts import extreme_points, object_scene
    from segarch.prompts.evaluate import iou

    viewer = widget.viewer
    image, truth = object_scene((128, 128), seed=41)
    viewer.add_image(image, name="objects")
    viewer.add_labels(truth, name="objects annotations")
    widget.image_combo.setCurrentText("objects")
    widget.labels_combo.setCurrentText("objects annotations")
    widget.select_model("shipped", "dextr_light.objects2d")
    assert not widget.classes_spin.isEnabled() and not widget.patch_spin.isEnabled()
    assert "each object" in widget.status.text()
    widget.steps_spin.setValue(4)
    widget.lr_spin.setValue(1e-4)
    widget.train_button.click()
    wait_trained(qtbot, widget)
    model = widget.model
    assert model is not None and model.card.task == "interactive" and model.class_names == ["background", "object"]
    assert "held-out object IoU" in widget.status.text() and "Extreme points widget" in widget.status.text()
    assert widget.model_name in SESSION.names(task="interactive")
    assert all(key != f"session:{widget.model_name}" for _, key in model_choices())  # not a Segment model

    clicker = ExtremePointsWidget(viewer)
    viewer.window.add_dock_widget(clicker, name="Extreme points")
    entry = f"session:{widget.model_name}"  # the reference one would type
    assert clicker.model_combo.findText(entry) >= 0
    clicker.model_combo.setCurrentText(entry)
    clicker.image_combo.setCurrentText("objects")
    clicker.labels_combo.setCurrentText("cells annotations")  # another image's labels: refused with a message
    clicker.start()
    clicker.segment(extreme_points(truth == 1))
    assert "has shape (64, 64), the image 'objects' (128, 128)" in clicker.last_error and not clicker.history
    clicker.last_error = ""
    clicker.labels_combo.setCurrentText("New labels layer")
    clicker.start()
    value = int(np.bincount(truth.ravel())[1:].argmax()) + 1
    for p in extreme_points(truth == value):
        clicker.points_layer.add(p.astype(float))
    qtbot.waitUntil(lambda: len(clicker.history) == 1 or bool(clicker.last_error), timeout=60_000)
    qtbot.waitUntil(lambda: not clicker.worker.is_running, timeout=60_000)
    assert clicker.last_error == "" and clicker._model is model
    assert iou(viewer.layers["objects objects"].data == 1, truth == value) > 0.7


def test_a_cancelled_run_joins_the_session_only_when_asked(widget, qtbot):
    from segarch.models import SESSION

    widget.steps_spin.setValue(100_000)
    widget.train_button.click()
    qtbot.waitUntil(lambda: len(widget.plot.steps) >= 2, timeout=120_000)
    widget.cancel_button.click()
    wait_trained(qtbot, widget)
    assert widget.model is not None and SESSION.names() == []  # a false start does not clutter the model lists
    assert widget.keep_button.isVisible() and "Add to session" in widget.status.text()
    name = widget.keep_button.click() or widget.model_name
    assert SESSION.names() == [name] and SESSION.get(name) is widget.model and not widget.keep_button.isVisible()


def test_an_error_in_the_worker_is_one_message_and_the_widget_lives_on(widget, qtbot, monkeypatch):
    from napari.utils.notifications import notification_manager

    shown = []
    monkeypatch.setattr(notification_manager, "dispatch", lambda n: shown.append(n.message))
    viewer = widget.viewer
    viewer.add_labels(np.zeros((50, 64), np.uint8), name="wrong size")
    widget.labels_combo.setCurrentText("wrong size")
    widget.steps_spin.setValue(5)
    widget.train_button.click()
    wait_trained(qtbot, widget)
    assert len(shown) == 1 and shown[0].startswith("Training failed: ") and "Traceback" not in shown[0], shown
    assert "(50, 64)" in shown[0] or "shape" in shown[0]
    assert widget.train_button.isEnabled() and not widget.cancel_button.isEnabled()
    widget.labels_combo.setCurrentText("cells annotations")  # and it trains after that
    widget.train_button.click()
    wait_trained(qtbot, widget)
    assert widget.model is not None


def test_layer_choices_follow_renames_and_no_generator_is_offered(widget):
    viewer = widget.viewer
    viewer.layers["cells"].name = "cells (renamed)"
    assert widget.image_combo.currentText() == "cells (renamed)"
    assert widget.image_combo.layer() is viewer.layers["cells (renamed)"]
    assert widget.training_arguments()["images"] is viewer.layers["cells (renamed)"].data
    keys = [widget.model_combo.itemData(i) for i in range(widget.model_combo.count())]
    assert "zoo:unet" in keys and "zoo:spade" not in keys
