"""A panoptic ``.tif`` (one OME-TIFF, channels classes / instances / panoptic) opened in a real napari viewer with
the plugin's reader: one Labels layer per channel, named by the file's channel names, with the file's values."""

from __future__ import annotations

import numpy as np
import pytest

from segarch.io.tiff import write_tiff

pytestmark = pytest.mark.gui
PLUGIN = "napari-segarch"


def test_each_named_channel_of_a_labels_tiff_opens_as_its_own_labels_layer(make_napari_viewer, tmp_path):
    rng = np.random.default_rng()
    classes = rng.integers(0, 3, (40, 56)).astype(np.uint32)
    instances = rng.integers(0, 50, (40, 56)).astype(np.uint32)
    panoptic = classes * 1000 + instances
    path = write_tiff(tmp_path / "scene.tif", np.stack([classes, instances, panoptic]), axes="CYX", labels=True,
                      scale=(1.0, 0.5, 0.25), channel_names=["classes", "instances", "panoptic"])
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert [layer.name for layer in layers] == ["scene [classes]", "scene [instances]", "scene [panoptic]"]
    assert all(type(layer).__name__ == "Labels" for layer in layers)
    for layer, expected in zip(layers, (classes, instances, panoptic)):
        assert np.array_equal(np.asarray(layer.data), expected)
        np.testing.assert_allclose(layer.scale, (0.5, 0.25))
