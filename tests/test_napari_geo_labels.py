"""Labels GeoTIFFs/COGs that segarch wrote (GDAL metadata ``segarch_kind=labels``) open in a real napari viewer as
Labels layers over their source scene: integer values as written, the same map position for each pixel, a panoptic
COG as one Labels layer per named band, mode overviews as a multiscale Labels layer. Every raster is a real file:
scenes written by rasterio, results by the ``segarch`` command or segarch's own writers."""

from __future__ import annotations

import sys

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

import segarch.io as io  # noqa: E402
from napari_segarch._reader import read  # noqa: E402
from test_cli import segarch_cli  # noqa: E402
from test_scene_predict import write_raster  # noqa: E402

PLUGIN = "napari-segarch"
BANDS = ["classes", "instances", "panoptic"]


def _scene(path, rows, cols, *, bands=1, dtype=np.uint16):
    rng = np.random.default_rng()
    data = rng.integers(1, 4000, (bands, rows, cols)).astype(dtype)
    # An odd origin and non-square pixels, so a wrong scale or translate shows.
    transform = from_origin(399960.0 + rng.integers(0, 100) * 10, 5300040.0, 10.0, 7.5)
    return write_raster(path, data, nodata=None, names=tuple(f"b{i}" for i in range(bands)), transform=transform), data


def _panoptic_cog(tmp_path, scene_path, rows, cols):
    """A panoptic result store (OME-Zarr labels images classes/instances/panoptic, the scene's georeference), turned
    into one COG by the writer the CLI uses for ``--output panoptic`` to a ``.tif``."""
    import zarr

    from segarch.io.label_bands import label_bands_to_tiff

    rng = np.random.default_rng()
    classes = np.kron(rng.integers(0, 4, (rows // 8 + 1, cols // 8 + 1)), np.ones((8, 8), int))[:rows, :cols]
    instances = np.where(classes > 1, rng.integers(1, 60, (rows, cols)), 0)
    arrays = dict(zip(BANDS, (a.astype(np.uint32) for a in (classes, instances, classes * 1000 + instances))))
    store = tmp_path / "result.zarr"
    zarr.open_group(str(store), mode="w")
    for name, array in arrays.items():
        io.write_ome_zarr(store / name, array, axes="YX", labels=True)
    io.add_georeference(store, io.open_image(scene_path).geo)
    return label_bands_to_tiff(store, BANDS, tmp_path / "result.tif"), arrays


@pytest.mark.gui
def test_a_labels_cog_from_the_cli_opens_as_a_labels_layer_on_top_of_its_scene(make_napari_viewer, tmp_path):
    scene, _ = _scene(tmp_path / "scene.tif", 200, 260)
    out = tmp_path / "labels.tif"
    result = segarch_cli("predict", str(scene), str(out), "--model", "unet.nuclei2d")
    assert result.returncode == 0, result.stderr
    with rasterio.open(out) as ds:
        assert ds.tags()["segarch_kind"] == "labels"
        written, written_dtype = ds.read(1), np.dtype(ds.dtypes[0])
    assert written.max() > 0  # something was segmented, so equal values mean something
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(scene), plugin=PLUGIN)
    (labels,) = viewer.open(str(out), plugin=PLUGIN)
    assert type(image).__name__ == "Image" and type(labels).__name__ == "Labels"
    assert labels.data.dtype == written_dtype and np.issubdtype(labels.data.dtype, np.integer)
    np.testing.assert_array_equal(np.asarray(labels.data), written)
    np.testing.assert_allclose(labels.scale, (7.5, 10.0))
    np.testing.assert_allclose(labels.translate, image.translate)
    for pixel in [(0, 0), (17, 23), (199, 259)]:  # the same place on the map in both layers
        np.testing.assert_allclose(labels.data_to_world(pixel), image.data_to_world(pixel))
    geo = labels.metadata["geo"]
    assert geo.crs_code == "EPSG:32633" and geo.transform == image.metadata["geo"].transform
    # Picking: the value under a world position is the written label of that pixel.
    row, col = np.argwhere(written > 0)[0]
    assert labels.get_value(image.data_to_world((row, col)), world=True) == written[row, col]
    # Editing: paint a new label, save through the plugin, and it re-opens as labels in the same place.
    new = int(written.max()) + 1
    labels.brush_size = 5
    labels.paint((100, 130), new, refresh=True)
    edited = np.asarray(labels.data)
    assert (edited == new).sum() >= 9 and np.array_equal(edited[edited != new], written[edited != new])
    labels.save(str(tmp_path / "edited.tif"), plugin=PLUGIN)
    (again,) = viewer.open(str(tmp_path / "edited.tif"), plugin=PLUGIN)
    assert type(again).__name__ == "Labels"
    np.testing.assert_array_equal(np.asarray(again.data), edited)
    np.testing.assert_allclose(again.data_to_world((5, 7)), image.data_to_world((5, 7)))


@pytest.mark.gui
def test_a_panoptic_cog_opens_as_one_multiscale_labels_layer_per_named_band(make_napari_viewer, tmp_path):
    rows, cols = 700, 610  # over one 512-pixel block: the COG has a mode overview
    scene, _ = _scene(tmp_path / "scene.tif", rows, cols)
    cog, arrays = _panoptic_cog(tmp_path, scene, rows, cols)
    with rasterio.open(cog) as ds:
        assert ds.descriptions == tuple(BANDS) and ds.overviews(1) == [2]
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(scene), plugin=PLUGIN)
    layers = viewer.open(str(cog), plugin=PLUGIN)
    assert [layer.name for layer in layers] == [f"result [{name}]" for name in BANDS]
    assert all(type(layer).__name__ == "Labels" and layer.multiscale for layer in layers)
    for band, (layer, (name, expected)) in enumerate(zip(layers, arrays.items()), start=1):
        assert layer.data[0].dtype == np.uint32
        np.testing.assert_array_equal(np.asarray(layer.data[0]), expected)
        with rasterio.open(cog, overview_level=0) as overview:
            np.testing.assert_array_equal(np.asarray(layer.data[1]), overview.read(band))
        # Mode overviews: only labels that exist at full resolution (an average would invent some).
        assert set(np.unique(np.asarray(layer.data[1]))) <= set(np.unique(expected))
        for pixel in [(0, 0), (345, 17), (rows - 1, cols - 1)]:
            np.testing.assert_allclose(layer.data_to_world(pixel), image.data_to_world(pixel))


def test_a_three_band_uint8_labels_cog_is_labels_not_an_rgb_photo(tmp_path):
    scene, data = _scene(tmp_path / "photo.tif", 96, 128, bands=3, dtype=np.uint8)
    with rasterio.open(scene, "r+") as ds:
        ds.colorinterp = [rasterio.enums.ColorInterp.red, rasterio.enums.ColorInterp.green,
                          rasterio.enums.ColorInterp.blue]
    labels = np.random.default_rng().integers(0, 5, (3, 96, 128)).astype(np.uint8)
    out = io.write_geotiff(tmp_path / "labels.tif", labels, io.open_image(scene).geo, labels=True)
    with rasterio.open(out) as ds:  # GDAL marks a 3-band byte file as red, green, blue
        assert [c.name for c in ds.colorinterp] == ["red", "green", "blue"]
    (photo,) = read(str(scene))  # an untagged scene is still an RGB image
    assert photo[2] == "image" and photo[1]["rgb"]
    np.testing.assert_array_equal(np.moveaxis(np.asarray(photo[0]), -1, 0), data)
    layers = read(str(out))
    assert [kind for _, _, kind in layers] == ["labels"] * 3
    assert [meta["name"] for _, meta, _ in layers] == ["labels [b0]", "labels [b1]", "labels [b2]"]
    for (data_, meta, _), expected in zip(layers, labels):
        np.testing.assert_array_equal(np.asarray(data_), expected)
        assert meta["scale"] == photo[1]["scale"] and meta["translate"] == photo[1]["translate"]


def test_without_rasterio_a_labels_geotiff_still_opens_as_named_labels(tmp_path, monkeypatch):
    scene, _ = _scene(tmp_path / "scene.tif", 64, 80)
    cog, arrays = _panoptic_cog(tmp_path, scene, 64, 80)
    monkeypatch.setitem(sys.modules, "rasterio", None)  # pixels through tifffile, the GDAL metadata still read
    layers = read(str(cog))
    assert [(meta["name"], kind) for _, meta, kind in layers] == [(f"result [{n}]", "labels") for n in BANDS]
    for (data, _, _), expected in zip(layers, arrays.values()):
        np.testing.assert_array_equal(np.asarray(data), expected)
    ((_, meta, kind),) = read(str(scene))
    assert kind == "image"
