"""The plugin's reader, writers and sample data in a real napari viewer (under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from segarch import io as sio
from segarch.samples import SATELLITE_CLASSES, nuclei

pytestmark = pytest.mark.gui

PLUGIN = "napari-segarch"


@pytest.fixture(scope="module")
def cells():
    image, labels = nuclei((4, 64, 72), count=10, seed=7)
    return image.astype(np.uint16), labels


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_open_ome_zarr_with_its_labels(make_napari_viewer, tmp_path, cells, version):
    image, labels = cells
    path = sio.write_ome_zarr(tmp_path / "cells.zarr", image, axes="ZYX", scale=(2.0, 0.5, 0.5),
                              translate=(0, 8, 4), units="micrometer", name="cells", levels=2, version=version)
    sio.add_labels(path, "nuclei", labels, levels=2)
    viewer = make_napari_viewer()
    layers = viewer.open(str(path), plugin=PLUGIN)
    assert [(type(layer).__name__, layer.name) for layer in layers] == [("Image", "cells"), ("Labels", "nuclei")]
    img, lab = layers
    assert img.multiscale and len(img.data) == 2 and lab.multiscale
    np.testing.assert_allclose(img.scale, (2.0, 0.5, 0.5))
    np.testing.assert_allclose(lab.translate, (0, 8, 4))
    assert tuple(img.axis_labels) == ("z", "y", "x")
    assert str(img.units[-1]) == "micrometer"
    np.testing.assert_array_equal(np.asarray(img.data[0]), image)
    np.testing.assert_array_equal(np.asarray(lab.data[0]), labels)


def test_channels_split_with_omero_names_and_windows(make_napari_viewer, tmp_path, cells):
    import zarr

    image, _ = cells
    two = np.stack([image, image // 2])
    path = sio.write_ome_zarr(tmp_path / "two.zarr", two, axes="CZYX", scale=(1, 2.0, 0.5, 0.5), name="two")
    group = zarr.open_group(str(path), mode="a")
    group.attrs["omero"] = {"channels": [{"label": "DAPI", "window": {"start": 0, "end": 900}},
                                         {"label": "GFP", "window": {"start": 10, "end": 400}}]}
    viewer = make_napari_viewer()
    dapi, gfp = viewer.open(str(path), plugin=PLUGIN)
    assert (dapi.name, gfp.name) == ("two [DAPI]", "two [GFP]")
    assert tuple(gfp.contrast_limits) == (10, 400) and gfp.data.shape == image.shape
    np.testing.assert_allclose(gfp.scale, (2.0, 0.5, 0.5))
    np.testing.assert_array_equal(np.asarray(gfp.data), image // 2)


@pytest.mark.parametrize("ext", [".zarr", ".tif"])
def test_save_labels_and_image_then_open_them_again(make_napari_viewer, tmp_path, cells, ext):
    image, labels = cells
    viewer = make_napari_viewer()
    features = {"index": [0, 1], "class": ["background", "nucleus"]}
    where = {"scale": (2.0, 0.5, 0.25), "translate": (4.0, 10.0, -3.5), "units": ("micrometer",) * 3}
    lab = viewer.add_labels(labels, name="my nuclei", features=features, **where)
    img = viewer.add_image(image, name="my cells", **where)
    lab_path, img_path = str(tmp_path / f"labels{ext}"), str(tmp_path / f"image{ext}")
    viewer.layers.selection = {lab}
    assert viewer.layers.save(lab_path, selected=True, plugin=PLUGIN) == [lab_path]
    viewer.layers.selection = {img}
    assert viewer.layers.save(img_path, selected=True, plugin=PLUGIN) == [img_path]

    viewer.layers.clear()
    (lab_back,) = viewer.open(lab_path, plugin=PLUGIN)
    (img_back,) = viewer.open(img_path, plugin=PLUGIN)
    assert type(lab_back).__name__ == "Labels" and lab_back.name == "my nuclei"
    assert type(img_back).__name__ == "Image" and img_back.name == "my cells"
    for layer, data in ((lab_back, labels), (img_back, image)):
        np.testing.assert_allclose(layer.scale, (2.0, 0.5, 0.25))
        np.testing.assert_allclose(layer.translate, (4.0, 10.0, -3.5))  # the OME-TIFF kept the origin too
        assert [str(u) for u in layer.units] == ["micrometer"] * 3
        level0 = layer.data[0] if layer.multiscale else layer.data
        np.testing.assert_array_equal(np.asarray(level0), data)
    if ext == ".zarr":  # class names travel as OME-Zarr image-label properties
        assert list(lab_back.features["class"]) == ["background", "nucleus"]


def test_writer_functions_keep_rgb_and_multiscale(tmp_path):
    from napari.layers import Image

    from napari_segarch._writer import write_image

    rgb = np.random.default_rng(0).integers(0, 255, (96, 80, 3), dtype=np.uint8)
    layer = Image([rgb, rgb[::2, ::2]], multiscale=True, rgb=True, name="colour", scale=(0.3, 0.3))
    data, meta, _ = layer.as_layer_data_tuple()
    for ext in (".zarr", ".tif"):
        (path,) = write_image(str(tmp_path / f"colour{ext}"), data, meta)
        back = sio.open_image(path)
        assert back.name == "colour" and back.scale[back.axes.index("Y")] == pytest.approx(0.3)
        level0 = back.data.compute()
        np.testing.assert_array_equal(level0 if back.axes == "YXC" else np.moveaxis(level0, 0, -1), rgb)
    with pytest.raises(ValueError, match=r"must end in \.zarr, \.tif or \.tiff"):
        write_image(str(tmp_path / "colour.png"), data, meta)


def test_reader_probe_and_clear_errors(make_napari_viewer, tmp_path):
    from napari_segarch._reader import get_reader

    assert get_reader(str(tmp_path / "a.png")) is None
    assert get_reader(str(tmp_path / "missing.tif")) is None
    fake = tmp_path / "fake.tif"
    fake.write_bytes(b"GIF89a" + b"\0" * 32)
    assert get_reader(str(fake)) is not None  # claimed by name, answered with a clear error
    viewer = make_napari_viewer()
    with pytest.raises(ValueError, match=r"fake\.tif' is not a TIFF file"):
        viewer.open(str(fake), plugin=PLUGIN)
    assert len(viewer.layers) == 0


@pytest.mark.parametrize("key", ["satellite", "large_nuclei"])
def test_sample_data_opens_with_ground_truth(make_napari_viewer, artifacts_dir, qtbot, key):
    from PIL import Image as PILImage

    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, key)
    image, labels = viewer.layers
    assert type(labels).__name__ == "Labels" and "ground truth" in labels.name
    if key == "satellite":
        assert image.rgb and image.data.shape == (512, 512, 3) and labels.data.shape == (512, 512)
        assert set(np.unique(labels.data)) == set(range(len(SATELLITE_CLASSES)))
        assert list(labels.features["class"]) == list(SATELLITE_CLASSES)
    else:
        assert image.multiscale and labels.multiscale
        assert image.data[0].shape == (20000, 20000) and labels.data[0].shape == (20000, 20000)
        tile = np.asarray(image.data[0][:256, :256])  # one chunk, computed on demand
        tile_labels = np.asarray(labels.data[0][:256, :256])
        assert tile[tile_labels > 0].mean() > 2 * tile[tile_labels == 0].mean()
        # Zoom in to full resolution: napari fetches only the few level-0 chunks in view.
        viewer.camera.center = (10000, 10000)
        viewer.camera.zoom = 1.5
        labels.opacity = 0.35
        qtbot.waitUntil(lambda: image.data_level == 0 and labels.data_level == 0, timeout=20000)
    shot = viewer.screenshot(canvas_only=True, flash=False)
    assert shot.std() > 5  # something rendered
    PILImage.fromarray(shot).save(artifacts_dir / f"sample_{key}.png")
