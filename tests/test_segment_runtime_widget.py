"""The Segment widget's runtime choice, and a bioimage.io package as its model file, in a real napari viewer."""

from __future__ import annotations

import numpy as np
import pytest

import segarch
from gui_helpers import wait_done

pytestmark = pytest.mark.gui
pytest.importorskip("onnxruntime")


@pytest.fixture
def widget(tmp_path, monkeypatch, segment_widget):
    monkeypatch.setenv("SEGARCH_CACHE_DIR", str(tmp_path / "cache"))  # read at each export: a fresh cache
    return segment_widget


def _model_file(path):
    model = segarch.Model.from_zoo("unet", features=(4, 8, 16), out_channels=3,
                                   class_names=["background", "cell", "edge"])
    model.trained = True
    return segarch.save_model(model, path)


def _segment_probabilities(widget, qtbot, image, model_path, runtime: str) -> None:
    """Segment ``image`` (as layer 'img') with the model file at ``model_path`` under ``runtime``, tile 32."""
    widget.viewer.add_image(image, name="img")
    widget.image_combo.setCurrentText("img")
    widget.select_model("file")
    widget.file_edit.setText(str(model_path))
    widget.tile_spin.setValue(32)
    widget.runtime_combo.setCurrentText(runtime)
    widget.output_combo.setCurrentText("probabilities")
    widget.segment_button.click()
    wait_done(qtbot, widget)


def _shown_probabilities(widget) -> np.ndarray:
    return np.stack([np.asarray(widget.viewer.layers[f"img segmentation: {c}"].data) for c in ("cell", "edge")])


def test_runtime_choice_runs_onnxruntime_with_the_same_result(widget, qtbot, tmp_path):
    from segarch.runtimes import RUNTIMES, cache_dir

    qtbot.waitUntil(lambda: widget.runtime_combo.count() == len(RUNTIMES), timeout=120_000)
    assert [widget.runtime_combo.itemText(i) for i in range(widget.runtime_combo.count())] == list(RUNTIMES)
    path = _model_file(tmp_path / "m.safetensors")
    image = np.random.default_rng().random((100, 76)).astype(np.float32)
    widget.device_combo.setCurrentText("cpu")
    assert not list(cache_dir().glob("*.onnx"))
    _segment_probabilities(widget, qtbot, image, path, "onnxruntime")
    assert not widget.last_error
    assert len(list(cache_dir().glob("*.onnx"))) == 1  # the network was exported and run by ONNX Runtime
    expected = segarch.predict(segarch.load_model(path), image, tile=32, runtime="torch", output="probabilities")
    np.testing.assert_allclose(_shown_probabilities(widget), expected[1:], atol=1e-5)
    assert np.ptp(expected[1:]) > 1e-3  # scores that vary: not a comparison of constants


def test_a_bioimageio_package_segments_in_the_widget(widget, qtbot, tmp_path):
    from segarch.runtimes.export import export_model

    path = _model_file(tmp_path / "m.safetensors")
    package = export_model(str(path), tmp_path / "m.zip", format="bioimageio", tile=32)
    image = np.random.default_rng().random((64, 50)).astype(np.float32)
    _segment_probabilities(widget, qtbot, image, package, "auto")
    assert not widget.last_error  # the package's ONNX weights, run by ONNX Runtime
    expected = segarch.predict(segarch.load_model(path), image, tile=32, runtime="torch", output="probabilities")
    np.testing.assert_allclose(_shown_probabilities(widget), expected[1:], atol=1e-5)
