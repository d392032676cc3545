"""The plugin in a real napari viewer (under Xvfb): manifest, widgets, sample data."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.gui


def _manifest():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    return pm.get_manifest("napari-segarch")


def test_manifest_is_discovered_and_valid():
    manifest = _manifest()
    assert manifest.display_name == "Segmentation Architectures"
    assert {w.display_name for w in manifest.contributions.widgets} >= {"Model zoo"}
    # Every command points at an importable callable.
    import importlib

    for command in manifest.contributions.commands:
        module, attr = command.python_name.split(":")
        assert callable(getattr(importlib.import_module(module), attr)), command.python_name


def test_every_declared_widget_opens_with_a_screenshot(make_napari_viewer, artifacts_dir, qtbot):
    from PIL import Image

    viewer = make_napari_viewer(show=True)
    for contribution in _manifest().contributions.widgets:
        dock, widget = viewer.window.add_plugin_dock_widget("napari-segarch", contribution.display_name)
        assert widget is not None
        qtbot.waitUntil(widget.isVisible, timeout=5000)
        name = contribution.display_name.lower().replace(" ", "_")
        shot = widget.grab()
        path = artifacts_dir / f"widget_{name}.png"
        assert shot.save(str(path))
        assert np.asarray(Image.open(path)).std() > 0  # a real rendering, not a blank grab
        full = viewer.screenshot(canvas_only=False, flash=False)
        Image.fromarray(full).save(artifacts_dir / f"viewer_{name}.png")


def test_zoo_widget_filters_and_shows_cards(make_napari_viewer):
    from napari_segarch._widget import ZooWidget
    from segarch import zoo

    viewer = make_napari_viewer()
    widget = ZooWidget(viewer)
    viewer.window.add_dock_widget(widget)
    assert widget.visible_names() == zoo.names()
    widget.set_filters(task="interactive")
    assert widget.visible_names() == zoo.names(task="interactive")
    widget.set_filters(task="semantic", dims=3)
    expected = [n for n in zoo.names(task="semantic") if 3 in zoo.card(n).spatial_dims]
    assert widget.visible_names() == expected
    row = expected.index("unet_plus_plus")
    widget.table.selectRow(row)
    assert widget.selected_name() == "unet_plus_plus"
    text = widget.details.toPlainText()
    assert "arXiv:1807.10165" in text and "9.04M" in text and "UNet++" in text
    params = widget.table.item(row, 3).text()
    assert params == f"{zoo.parameter_count('unet_plus_plus') / 1e6:.2f}"


@pytest.mark.parametrize("key,ndim", [("nuclei_2d", 2), ("nuclei_3d", 3)])
def test_sample_data_opens_with_ground_truth(make_napari_viewer, key, ndim):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-segarch", key)
    image, labels = viewer.layers
    assert image.data.ndim == ndim and labels.data.shape == image.data.shape
    assert labels.data.max() > 3
    inside = image.data[labels.data > 0].mean()
    outside = image.data[labels.data == 0].mean()
    assert inside > 2 * outside  # nuclei are bright on a dark background
