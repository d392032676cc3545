"""``segarch.predict`` on satellite scenes: georeference kept, nodata left out, bands picked by name.

Every raster here is a real GeoTIFF written by rasterio. The models are 1×1 convolutions whose labels
can be computed by hand from the bands (a threshold on one band), so the tests check values and pixel
alignment, not only shapes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

import segarch  # noqa: E402
import segarch.io as io  # noqa: E402

UTM33 = "EPSG:32633"
NAMES = ("blue", "green", "red", "nir")


def write_raster(path, data, *, crs=UTM33, nodata=0, names=NAMES, transform=None):
    count, rows, cols = data.shape
    transform = transform or from_origin(399960.0, 5300040.0, 10.0, 10.0)
    profile = dict(driver="GTiff", width=cols, height=rows, count=count, dtype=data.dtype.name, transform=transform,
                   nodata=nodata, tiled=True, blockxsize=64, blockysize=64)
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        ds.descriptions = tuple(names[:count])
    return path


class BandThreshold(nn.Module):
    """Class 1 where input channel ``band`` exceeds ``threshold``; counts the tiles it is shown."""

    size_divisor = 1
    tiles_seen = 0  # on the class: predict runs a copy of the network (channels-last)

    def __init__(self, in_channels: int, band: int, threshold: float) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 2, 1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()
            self.conv.weight[1, band] = 1.0
            self.conv.bias[1] = -threshold

    def forward(self, x):
        assert torch.isfinite(x).all(), "the network was shown NaN"
        type(self).tiles_seen += x.shape[0]
        return self.conv(x)


def threshold_model(in_channels=4, band=0, threshold=5000.0, *, preprocessing=(), bands=None):
    # "fcn" only names a zoo card for the Model (its size divisor is overridden by the network's own).
    return segarch.Model(BandThreshold(in_channels, band, threshold), arch="fcn", in_channels=in_channels,
                         out_channels=2, class_names=["background", "bright"], preprocessing=list(preprocessing),
                         bands=bands)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    rng = np.random.default_rng()
    data = rng.integers(1, 10000, (4, 300, 389), dtype=np.uint16)
    data[:, :150, :200] = 0           # a nodata corner covering whole tiles
    data[:, 200:203, 300:305] = 0     # and a few nodata pixels inside the scene
    path = write_raster(tmp_path_factory.mktemp("scene") / "scene.tif", data)
    return path, data


def test_a_zarr_result_keeps_crs_transform_and_nodata_and_lines_up_with_the_bands(scene, tmp_path):
    path, data = scene
    model = threshold_model(band=2)  # red is the file's third band
    out = segarch.predict(model, str(path), tile=64, out=str(tmp_path / "labels.zarr"))
    labels = np.asarray(out)
    valid = (data != 0).any(0)
    np.testing.assert_array_equal(labels, ((data[2] > 5000) & valid).astype(np.uint8))
    result = io.open_image(tmp_path / "labels.zarr")
    source = io.read_raster(path)
    assert result.geo.crs_code == UTM33 and result.geo.transform == source.geo.transform
    assert result.geo.shape == (300, 389) and result.geo.nodata == 0
    settings = dict(__import__("zarr").open_group(str(tmp_path / "labels.zarr")).attrs)["segarch"]["settings"]
    assert settings["source_georeference"]["crs"] == UTM33
    assert settings["source_pixel_size"] == [10.0, 10.0] and settings["nodata"] == 0


def test_tiles_that_are_all_nodata_are_not_computed(scene):
    path, data = scene
    model = threshold_model(band=2)
    BandThreshold.tiles_seen = 0
    segarch.predict(model, str(path), tile=64, batch_size=1)
    with_nodata = BandThreshold.tiles_seen
    BandThreshold.tiles_seen = 0
    everything = segarch.predict(model, str(path), tile=64, batch_size=1, nodata=None)
    assert BandThreshold.tiles_seen > with_nodata > 0
    # With nodata ignored the corner is segmented like any other pixel (0 < 5000: background there anyway).
    np.testing.assert_array_equal(everything, (data[2] > 5000).astype(np.uint8))


def test_probabilities_are_nan_at_nodata_and_the_geotiff_records_it(scene, tmp_path):
    path, data = scene
    model = threshold_model(band=2)
    store = segarch.predict(model, str(path), tile=64, output="probabilities", out=str(tmp_path / "p.zarr"))
    probs = np.asarray(store)
    valid = (data != 0).any(0)
    assert np.isnan(probs[:, ~valid]).all() and np.isfinite(probs[:, valid]).all()
    tif = io.geotiff_from_zarr(tmp_path / "p.zarr", tmp_path / "p.tif")
    with rasterio.open(tif) as ds:
        assert ds.crs.to_epsg() == 32633 and ds.transform == from_origin(399960.0, 5300040.0, 10.0, 10.0)
        assert np.isnan(ds.nodata) and ds.count == 2 and ds.descriptions == ("background", "bright")
        np.testing.assert_allclose(ds.read(2)[valid], probs[1][valid], rtol=1e-6)


def test_percentiles_are_measured_without_the_nodata_pixels(tmp_path):
    rng = np.random.default_rng()
    data = rng.integers(1000, 2001, (1, 256, 256), dtype=np.uint16)
    data[:, :, :160] = 0  # 62% nodata: with it, the 1st percentile would be 0
    path = write_raster(tmp_path / "half.tif", data, names=("red",))
    pre = [{"_target_": "ScaleIntensityRangePercentiles", "lower": 1.0, "upper": 99.0, "b_min": 0.0, "b_max": 1.0,
            "clip": True, "relative": False}]
    model = threshold_model(in_channels=1, band=0, threshold=0.5, preprocessing=pre)
    valid = data[0] != 0
    kept = segarch.predict(model, str(path), tile=64)
    assert 0.4 < kept[valid].mean() < 0.6  # normalised over 1000..2000: half the pixels above the middle
    assert not kept[~valid].any()
    ignored = segarch.predict(model, str(path), tile=64, nodata=None)
    assert ignored[valid].mean() > 0.9     # normalised over 0..2000: nearly all above the middle


def test_the_model_s_bands_are_picked_by_name_and_bands_reorders_them(scene):
    path, data = scene
    model = threshold_model(band=0, bands=["red", "green", "blue", "nir"])  # the file holds blue, green, red, nir
    valid = (data != 0).any(0)
    labels = segarch.predict(model, str(path), tile=64)
    np.testing.assert_array_equal(labels, ((data[2] > 5000) & valid).astype(np.uint8))
    nir_first = segarch.predict(model, str(path), tile=64, bands=["nir", "red", "green", "blue"])
    np.testing.assert_array_equal(nir_first, ((data[3] > 5000) & valid).astype(np.uint8))
    by_number = segarch.predict(model, str(path), tile=64, bands=[4, 1, 2, 3])
    np.testing.assert_array_equal(by_number, nir_first)


def test_band_mismatches_are_clear_errors(scene, tmp_path):
    path, data = scene
    model = threshold_model(band=0, bands=["red", "green", "blue", "nir"])
    with pytest.raises(ValueError, match=r"`bands` must pick the model's 4 input band\(s\), got 1"):
        segarch.predict(model, str(path), bands=["nir"])
    with pytest.raises(ValueError, match=r"'swir' is not a band of the image; its bands are \['blue'"):
        segarch.predict(model, str(path), bands=["swir", "red", "green", "blue"])
    with pytest.raises(ValueError, match="band of the image, which has 4 band"):
        segarch.predict(model, str(path), bands=[5, 1, 2, 3])
    three = write_raster(tmp_path / "rgb.tif", data[:3], names=("red", "green", "blue"))
    with pytest.raises(ValueError, match=r"trained on the 4 bands \['red', 'green', 'blue', 'nir'\]; the image has 3"):
        segarch.predict(model, str(three))
    with pytest.raises(ValueError, match="has only 3"):
        segarch.predict(model, str(three), bands=["red", "green", "blue", "red"])


def test_nodata_outside_the_dtype_is_refused_naming_the_parameter(scene):
    path, _ = scene
    with pytest.raises(ValueError, match=r"`nodata`=70000 cannot be stored in uint16 data"):
        segarch.predict(threshold_model(), str(path), nodata=70000)


def test_a_raster_without_crs_works_and_says_so(tmp_path):
    rng = np.random.default_rng()
    data = rng.integers(1, 10000, (4, 96, 96), dtype=np.uint16)
    path = write_raster(tmp_path / "nocrs.tif", data, crs=None)
    with pytest.warns(io.NoCRSWarning, match="has no CRS"):
        labels = segarch.predict(threshold_model(band=2), str(path), tile=64, out=str(tmp_path / "l.zarr"))
    np.testing.assert_array_equal(np.asarray(labels), (data[2] > 5000).astype(np.uint8))
    geo = io.open_image(tmp_path / "l.zarr").geo
    assert geo.crs is None and geo.transform == tuple(from_origin(399960.0, 5300040.0, 10.0, 10.0))[:6]
