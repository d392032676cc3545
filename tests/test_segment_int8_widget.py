"""The Segment widget's int8 box, in a real napari viewer: the network quantised on the image's tiles is used."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import segarch

pytestmark = pytest.mark.gui
pytest.importorskip("onnxruntime")


@pytest.fixture
def widget(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_segarch._segment_widget import SegmentWidget

    monkeypatch.setenv("SEGARCH_CACHE_DIR", str(tmp_path / "cache"))  # read at each export: a fresh cache
    viewer = make_napari_viewer(show=True)
    w = SegmentWidget(viewer)
    viewer.window.add_dock_widget(w, name="Segment")
    yield w
    if w.worker is not None and w.worker.is_running:  # never close the viewer under a running worker
        w.cancel()
        qtbot.waitUntil(lambda: not w.worker.is_running, timeout=120_000)


def test_the_int8_box_runs_the_quantised_network(widget, qtbot):
    from segarch.runtimes import RUNTIMES, cache_dir
    from segarch.samples import nuclei

    qtbot.waitUntil(lambda: widget.runtime_combo.count() == len(RUNTIMES), timeout=120_000)
    image, _ = nuclei((192, 192), seed=int(np.random.default_rng().integers(1 << 16)))
    widget.viewer.add_image(image, name="img")
    widget.image_combo.setCurrentText("img")
    widget.select_model("file")
    widget.file_edit.setText(str(Path(segarch.__file__).parent / "models" / "weights" / "unet.nuclei2d.safetensors"))
    widget.tile_spin.setValue(128)
    widget.device_combo.setCurrentText("cpu")
    widget.runtime_combo.setCurrentText("onnxruntime")
    widget.int8_check.setChecked(True)
    widget.segment_button.click()
    qtbot.waitUntil(lambda: widget.segment_button.isEnabled() and widget.worker is not None
                    and not widget.worker.is_running, timeout=120_000)
    assert not widget.last_error
    assert len(list(cache_dir().glob("*.int8.onnx"))) == 1  # quantised on the image's tiles, and used
    got = np.asarray(widget.viewer.layers["img segmentation"].data)
    expected = segarch.predict(segarch.models.resolve("unet.nuclei2d"), image, tile=128, device="cpu",
                               runtime="onnxruntime")
    assert (got == expected).mean() >= 0.99 and (expected > 0).mean() > 0.05
