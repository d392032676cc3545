"""The Segment widget driven as a user drives it, in a real napari viewer (under Xvfb)."""

from __future__ import annotations


import numpy as np
import pytest

import segarch
from gui_helpers import wait_done

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(segment_widget):
    return segment_widget


def _tiny_model_file(path):
    import torch

    torch.manual_seed(0)
    model = segarch.Model.from_zoo("unet", features=(4, 8, 16), norm="batch", out_channels=3,
                                   class_names=["background", "cell", "edge"])
    model.trained = True
    return segarch.save_model(model, path)


def test_segment_a_sample_with_the_shipped_model(widget, qtbot, artifacts_dir):
    from PIL import Image as PILImage

    from segarch import pretrained

    viewer = widget.viewer
    viewer.open_sample("napari-segarch", "nuclei_2d")
    image_layer, truth = viewer.layers["nuclei 2D"], viewer.layers["nuclei 2D ground truth"]
    image_layer.scale = (0.5, 0.25)
    widget.image_combo.setCurrentText("nuclei 2D")
    widget.select_model("shipped", "unet.nuclei2d")
    assert widget.axes_edit.text() == "YX"
    widget.segment_button.click()
    wait_done(qtbot, widget)
    result = viewer.layers["nuclei 2D segmentation"]
    assert result.data.shape == image_layer.data.shape and result.data.dtype == np.uint8
    assert tuple(result.scale) == (0.5, 0.25)
    expected = segarch.predict(pretrained.load("unet.nuclei2d"), image_layer.data)
    np.testing.assert_array_equal(np.asarray(result.data), expected)
    pred, gt = np.asarray(result.data) > 0, truth.data > 0
    assert 2 * (pred & gt).sum() / (pred.sum() + gt.sum()) > 0.7  # a trained model segments the nuclei
    assert list(result.features["class"]) == pretrained.load("unet.nuclei2d").class_names
    assert widget.progress_bar.value() == widget.progress_bar.maximum()
    PILImage.fromarray(viewer.screenshot(canvas_only=False, flash=False)).save(artifacts_dir / "segment_widget.png")


def test_model_file_through_the_widget_and_probabilities(widget, qtbot, tmp_path):
    path = _tiny_model_file(tmp_path / "mine.safetensors")
    model = segarch.load_model(path)
    image = np.random.default_rng().random((90, 70)).astype(np.float32)
    widget.viewer.add_image(image, name="img")
    widget.image_combo.setCurrentText("img")
    widget.select_model("file")
    widget.file_edit.setText(str(path))
    widget.output_combo.setCurrentText("probabilities")
    widget.tile_spin.setValue(32)
    widget.segment_button.click()
    wait_done(qtbot, widget)
    expected = segarch.predict(segarch.load_model(path), image, tile=32, output="probabilities")
    # The background's probability is left out by default (it would cover the canvas); each class its colour.
    assert "img segmentation: background" not in widget.viewer.layers
    layers = [widget.viewer.layers[f"img segmentation: {c}"] for c in model.class_names[1:]]
    np.testing.assert_allclose(np.stack([np.asarray(layer.data) for layer in layers]), expected[1:], atol=1e-6)
    assert len({layer.colormap.name for layer in layers}) == 2 and {layer.blending for layer in layers} == {"additive"}
    widget.background_check.setChecked(True)
    widget.segment_button.click()
    wait_done(qtbot, widget)
    background = widget.viewer.layers["img segmentation: background"]
    np.testing.assert_allclose(np.asarray(background.data), expected[0], atol=1e-6)


def test_untrained_architecture_is_flagged_and_errors_are_notified(widget, qtbot, monkeypatch):
    import napari_segarch._segment_widget as module

    messages = []
    monkeypatch.setattr(module, "_notify_error", messages.append)
    widget.viewer.add_image(np.zeros((3, 40, 40), np.float32), name="stack")
    widget.image_combo.setCurrentText("stack")
    widget.select_model("zoo", "unet")
    assert "untrained" in widget.status.text() and "Train" in widget.status.text()
    widget.axes_edit.setText("CYX")  # 3 channels for a 1-channel model
    widget.segment_button.click()
    wait_done(qtbot, widget)
    assert len(messages) == 1 and "Channel mismatch" in messages[0]
    assert widget.segment_button.isEnabled() and not widget.cancel_button.isEnabled()
    assert "stack segmentation" not in widget.viewer.layers


def test_cancel_keeps_the_finished_part_and_the_gui_stays_responsive(widget, qtbot, tmp_path):
    import dask.array as da

    from gui_helpers import GuiThreadMonitor

    rng = np.random.default_rng()
    big = da.from_array(rng.random((3000, 2600), dtype=np.float32), chunks=512)
    widget.viewer.add_image(big, name="big")
    widget.image_combo.setCurrentText("big")
    widget.select_model("file")
    widget.file_edit.setText(str(_tiny_model_file(tmp_path / "tiny.safetensors")))
    widget.tile_spin.setValue(128)
    widget.batch_spin.setValue(2)
    widget.out_edit.setText(str(tmp_path / "big.zarr"))

    from napari.utils import resize_dask_cache

    cache_size = resize_dask_cache(2 ** 31).cache.available_bytes
    widget.segment_button.click()  # the click adds the result layer (napari's own cost), then the work starts
    monitor = GuiThreadMonitor().start()
    assert resize_dask_cache().cache.available_bytes == 128 * 2 ** 20  # napari's view cache capped while it runs
    qtbot.waitUntil(lambda: widget.progress_bar.value() > 0.3 * widget.progress_bar.maximum(), timeout=300_000)
    widget.cancel_button.click()
    wait_done(qtbot, widget)
    monitor.stop()
    # What the GUI thread itself spent between two 10 ms ticks (its CPU time: not the machine's load).
    assert monitor.max_cpu_gap < 0.25, f"the GUI thread was busy for {monitor.max_cpu_gap:.3f} s at a stretch"
    layer = widget.viewer.layers["big segmentation"]
    from segarch.tiling.output import finished_blocks

    assert 0 < len(finished_blocks(tmp_path / "big.zarr")) < 6 * 6
    assert "cancelled" in widget.status.text()
    assert resize_dask_cache().cache.available_bytes == cache_size  # and given back
    assert layer.data[0].shape == big.shape
    np.testing.assert_array_equal(np.asarray(layer.data[0][:]), segarch.io.open_image(tmp_path / "big.zarr").levels[0])


@pytest.mark.parametrize("ext", [".tif", ".zarr"])
def test_the_result_keeps_the_images_geometry_and_saves_as_labels(widget, qtbot, tmp_path, ext):
    import dask.array as da

    viewer = widget.viewer
    from segarch.samples import nuclei

    image, _ = nuclei((700, 600), seed=5)
    where = {"scale": (0.5, 0.25), "translate": (100.0, -20.0), "units": ("micrometer", "micrometer")}
    viewer.add_image(da.from_array(image, chunks=256), name="cells", **where)
    widget.image_combo.setCurrentText("cells")
    widget.select_model("shipped", "unet.nuclei2d")
    widget.segment_button.click()
    wait_done(qtbot, widget)
    result = viewer.layers["cells segmentation"]
    assert [str(u) for u in result.units] == ["micrometer"] * 2  # no napari warning about mixed units
    np.testing.assert_allclose(result.scale, where["scale"])
    np.testing.assert_allclose(result.translate, where["translate"])
    path = str(tmp_path / f"saved{ext}")
    widget.save_result(path)
    (back,) = viewer.open(path, plugin="napari-segarch")
    assert type(back).__name__ == "Labels"
    np.testing.assert_allclose(back.scale, where["scale"])
    np.testing.assert_allclose(back.translate, where["translate"])
    assert [str(u) for u in back.units] == ["micrometer"] * 2
    level0 = back.data[0] if back.multiscale else back.data
    np.testing.assert_array_equal(np.asarray(level0), segarch.predict(segarch.pretrained.load("unet.nuclei2d"), image))
    with pytest.raises(ValueError, match="already exists"):
        widget.save_result(path)


def test_a_4d_stack_with_a_2d_model_is_a_stack_not_channels(widget):
    widget.viewer.add_image(np.zeros((3, 8, 96, 96), np.float32), name="movie")
    widget.image_combo.setCurrentText("movie")
    widget.select_model("shipped", "unet.nuclei2d")
    assert widget.axes_edit.text() == "TZYX"  # was CZYX: a channel error for a 1-channel model
    assert "slice by slice" in widget.hint.text() and "unet.nuclei3d" in widget.hint.text()  # a 3D model exists
    widget.select_model("shipped", "unet.nuclei3d")
    assert widget.axes_edit.text() == "TZYX" and widget.hint.text() == ""


def test_segment_offers_segmenters_only():
    from napari_segarch._segment_widget import model_choices

    keys = [key for _, key in model_choices()]
    assert "zoo:unet" in keys and "shipped:unet.nuclei2d" in keys
    assert "zoo:spade" not in keys  # a generator: label map -> image
    zoo_names = [key.partition(":")[2] for key in keys if key.startswith("zoo:")]
    assert zoo_names and all(segarch.zoo.card(name).task == "semantic" for name in zoo_names)
