"""``output="instances"`` on a raster with nodata: the nodata pixels are 0 (the result's nodata), tiles that are all
nodata are not computed, and the labels store carries the scene's georeference and the network's provenance, so
``segarch convert`` writes a GeoTIFF a GIS lays over the scene (checked by reading it back with rasterio)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

rasterio = pytest.importorskip("rasterio")
zarr = pytest.importorskip("zarr")

import segarch  # noqa: E402
from segarch import io  # noqa: E402
from segarch.io.convert import convert_store  # noqa: E402
from test_scene_predict import UTM33, write_raster  # noqa: E402

THRESHOLD = 5000.0


class BrightInterior(nn.Module):
    """A boundary-decoder instance network: "interior" where band ``band`` exceeds the threshold; counts tiles."""

    size_divisor = 1
    tiles_seen = 0  # on the class: predict runs a copy of the network

    def __init__(self, band: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 3, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[1, band] = 1.0
            self.conv.bias[1] = -THRESHOLD
            self.conv.bias[2] = -50.0  # no boundary class: every interior pixel seeds its object

    def forward(self, x):
        assert torch.isfinite(x).all(), "the network was shown NaN"
        type(self).tiles_seen += x.shape[0]
        return self.conv(x)


def _model():
    return segarch.Model(BrightInterior(band=0), arch="fcn", in_channels=4, out_channels=3,
                         class_names=["background", "interior", "boundary"], preprocessing=[],
                         bands=["red", "green", "blue", "nir"])


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    rng = np.random.default_rng()
    field = ndimage.gaussian_filter(rng.normal(size=(4, 200, 260)), 5)
    data = (5000 + 4000 * np.tanh(field / field.std())).astype(np.uint16)
    data[data == 0] = 1
    data[:, :130, :130] = 0  # a nodata corner covering whole tiles
    return write_raster(tmp_path_factory.mktemp("instances") / "scene.tif", data), data


def test_instances_are_0_at_nodata_and_all_nodata_tiles_are_skipped(scene, tmp_path):
    path, data = scene
    valid = (data != 0).any(0)
    BrightInterior.tiles_seen = 0
    labels, report = segarch.predict(_model(), str(path), output="instances", tile=64, batch_size=1,
                                     out=str(tmp_path / "objects.zarr"), instance_options={"return_report": True})
    labels = np.asarray(labels)
    with_nodata = BrightInterior.tiles_seen
    assert not labels[~valid].any()
    bright = (data[0] > THRESHOLD) & valid
    clear = np.abs(data[0].astype(float) - THRESHOLD) > 2  # float32 logits round at the threshold itself
    # the bright valid pixels are the objects (the decoder's watershed may move a stray pixel)
    assert np.mean((labels > 0)[clear] != bright[clear]) < 1e-3
    assert report["objects"] == len(np.unique(labels)) - 1 >= 2
    BrightInterior.tiles_seen = 0
    segarch.predict(_model(), str(path), output="instances", tile=64, batch_size=1, nodata=None)
    assert BrightInterior.tiles_seen > with_nodata > 0


def test_the_instance_store_is_georeferenced_with_provenance_and_converts_to_a_geotiff(scene, tmp_path):
    path, data = scene
    store = tmp_path / "objects.zarr"
    labels = np.asarray(segarch.predict(_model(), str(path), output="instances", tile=64, out=str(store)))
    source = io.read_raster(path)
    result = io.open_image(store)
    assert result.geo.crs_code == UTM33 and result.geo.transform == source.geo.transform
    assert result.geo.shape == labels.shape and result.geo.nodata == 0
    settings = dict(zarr.open_group(str(store), mode="r").attrs)["segarch"]["settings"]
    assert settings["output"] == "instances" and settings["weights_sha256"]
    assert settings["source_georeference"]["crs"] == UTM33 and settings["source_pixel_size"] == [10.0, 10.0]
    assert settings["decoding"]["decoder"]["decoder"] == "boundary"
    tif = convert_store(store, tmp_path / "objects.tif")
    with rasterio.open(tif) as ds, rasterio.open(path) as src:
        assert ds.crs == src.crs and ds.transform == src.transform and ds.nodata == 0
        assert ds.dtypes[0] == "uint32"
        np.testing.assert_array_equal(ds.read(1), labels)
        provenance = json.loads(ds.tags()["segarch_provenance"])  # the provenance travels into the GeoTIFF
    assert provenance["source_georeference"]["transform"] == list(source.geo.transform)
    assert provenance["weights_sha256"] == settings["weights_sha256"] and provenance["output"] == "instances"
