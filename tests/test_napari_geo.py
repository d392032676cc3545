"""A georeferenced raster in napari: it opens in map units, the Segment dock's result overlays it exactly,
and the plugin's writer saves that result as a GeoTIFF with the source's CRS and transform (real viewer,
real GeoTIFFs written by rasterio)."""

from __future__ import annotations

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")

import segarch  # noqa: E402
from test_scene_predict import write_raster  # noqa: E402

pytestmark = pytest.mark.gui
PLUGIN = "napari-segarch"


@pytest.fixture
def widget(segment_widget):
    return segment_widget


def test_a_geotiff_opens_in_map_units_and_its_segmentation_saves_as_a_geotiff(widget, qtbot, tmp_path):
    from segarch.samples import nuclei

    image, _ = nuclei((200, 260), seed=int(np.random.default_rng().integers(1000)))
    path = write_raster(tmp_path / "scene.tif", (image * 1000).astype(np.uint16)[None], nodata=None, names=("pan",))
    viewer = widget.viewer
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    # 10 m pixels; napari's Y is minus the northing; the translate is the first pixel's centre.
    np.testing.assert_allclose(layer.scale, (10.0, 10.0))
    np.testing.assert_allclose(layer.translate, (-(5300040.0 - 5.0), 399960.0 + 5.0))
    widget.image_combo.setCurrentText(layer.name)
    widget.select_model("shipped", "unet.nuclei2d")
    widget.segment_button.click()
    qtbot.waitUntil(lambda: widget.segment_button.isEnabled() and widget.worker is not None
                    and not widget.worker.is_running, timeout=120_000)
    result = viewer.layers[f"{layer.name} segmentation"]
    np.testing.assert_allclose(result.scale, layer.scale)
    np.testing.assert_allclose(result.translate, layer.translate)
    # Exact overlay: a pixel's world position is the same in both layers.
    assert np.allclose(result.data_to_world((17, 23)), layer.data_to_world((17, 23)))
    out = str(tmp_path / "segmentation.tif")
    widget.save_result(out)
    with rasterio.open(out) as ds, rasterio.open(path) as src:
        assert ds.crs == src.crs and ds.transform == src.transform
        saved = ds.read(1)
    expected = segarch.predict(segarch.pretrained.load("unet.nuclei2d"), str(path))
    np.testing.assert_array_equal(saved, expected)
    (back,) = viewer.open(out, plugin=PLUGIN)
    np.testing.assert_allclose(back.translate, layer.translate)
