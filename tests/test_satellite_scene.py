"""The generated satellite landscape: RGB photo and multispectral bands in four seasons, georeferenced."""

from __future__ import annotations

import numpy as np
import pytest

from segarch.satellite import (BAND_SETS, NODATA_LABEL, SATELLITE_CLASSES, SEASONS, multispectral, satellite,
                               scene_layout)


@pytest.fixture(scope="module")
def seed():
    return int(np.random.default_rng().integers(10_000))


def _ndvi(scene):
    bands = dict(zip(scene.band_names, scene.image.astype(np.float64) / 10000))
    red, nir = (bands["red"], bands["nir"]) if "red" in bands else (bands["B04"], bands["B08"])
    return (nir - red) / (nir + red)


def test_every_rendering_shows_the_same_landscape(seed):
    _, labels = satellite((192, 256), seed=seed)
    layout = scene_layout((192, 256), seed=seed)
    np.testing.assert_array_equal(layout.labels, labels)
    for season in SEASONS:
        scene = multispectral((192, 256), season=season, seed=seed)
        np.testing.assert_array_equal(scene.labels, labels, err_msg=f"seed {seed}, {season}")
    assert set(np.unique(labels)) >= {1, 2, 4}, f"seed {seed}"  # fields, roads and water in every scene


@pytest.mark.parametrize("bands, count", [("rgbn", 4), ("sentinel2", 13), (["B02", "B8A", "B11"], 3)])
def test_band_sets_are_reflectances_with_their_names(bands, count, seed):
    scene = multispectral((128, 160), bands=bands, seed=seed)
    assert scene.image.shape == (count, 128, 160) and scene.image.dtype == np.uint16
    assert len(scene.band_names) == len(scene.wavelengths) == count == len(scene.geo.band_names)
    assert scene.image.min() >= 1 and scene.image.max() <= 10000  # 0 is kept for no data
    if bands == "rgbn":
        assert scene.band_names == BAND_SETS["rgbn"][0]


def test_classes_have_their_spectra_and_fields_change_with_the_seasons(seed):
    scenes = {s: multispectral((256, 256), season=s, seed=seed) for s in SEASONS}
    labels = scenes["summer"].labels
    for season, scene in scenes.items():
        ndvi = _ndvi(scene)
        nir = scene.image[3].astype(float) / 10000
        assert ndvi[labels == 4].mean() < 0 < ndvi[labels == 2].mean() < ndvi[labels == 0].mean(), (season, seed)
        assert nir[labels == 4].mean() < 0.06, (season, seed)  # water is dark in the near-infrared
    # Parcels follow crop calendars: a field's NDVI swings over the year (green crop, ripe, bare soil), a road's not.
    swing = np.ptp(np.array([_ndvi(scene) for scene in scenes.values()]), axis=0)
    field, road = labels == 1, labels == 2
    assert np.quantile(swing[field], 0.9) > 0.3, seed        # the most changing tenth swings by 0.33-0.67
    assert np.median(swing[field]) > 2 * np.median(swing[road]), seed


def test_sentinel2_bands_have_their_native_resolution(seed):
    scene = multispectral((256, 256), bands="sentinel2", seed=seed)
    bands = dict(zip(scene.band_names, scene.image.astype(np.float64)))

    def sharpness(band):  # fine detail relative to contrast: neighbour differences over the spread
        return np.abs(np.diff(band, axis=1)).mean() / band.std()

    assert sharpness(bands["B04"]) > 1.3 * sharpness(bands["B05"])   # 10 m vs 20 m
    assert sharpness(bands["B05"]) > 1.3 * sharpness(bands["B01"])   # 20 m vs 60 m
    assert bands["B10"].mean() < 0.2 * bands["B08"].mean()           # cirrus band: little reaches the ground


def test_a_scene_is_georeferenced_and_writes_as_a_real_geotiff(tmp_path, seed):
    rasterio = pytest.importorskip("rasterio")
    import segarch.io as io

    scene = multispectral((200, 240), seed=seed, nodata_corner=True, origin=(500000.0, 4800000.0))
    assert scene.geo.crs_code == "EPSG:32633" and scene.geo.pixel_size == (10.0, 10.0)
    assert scene.geo.bounds == (500000.0, 4798000.0, 502400.0, 4800000.0)
    outside = scene.labels == NODATA_LABEL
    assert outside[0, 0] and not outside[-1, -1] and (scene.image[:, outside] == 0).all()
    image_path, labels_path = scene.write(tmp_path / "scene.tif", tmp_path / "labels.tif", tile=64)
    image = io.open_image(image_path)
    assert image.geo.crs_code == "EPSG:32633" and image.geo.transform == scene.geo.transform
    assert image.geo.nodata == 0 and image.geo.band_names == ("red", "green", "blue", "nir")
    np.testing.assert_array_equal(image.data.compute(), scene.image)
    with rasterio.open(labels_path) as ds:
        assert ds.nodata == NODATA_LABEL and ds.crs.to_epsg() == 32633
        np.testing.assert_array_equal(ds.read(1), scene.labels)
        assert ds.tags()["classes"] == ",".join(SATELLITE_CLASSES)


def test_bad_arguments_name_the_parameter():
    with pytest.raises(ValueError, match="`season` must be one of"):
        multispectral((64, 64), season="monsoon")
    with pytest.raises(ValueError, match="`bands` must be one of"):
        multispectral((64, 64), bands="landsat")
    with pytest.raises(ValueError, match="`bands` must name Sentinel-2 bands"):
        multispectral((64, 64), bands=["B02", "B13"])
    with pytest.raises(ValueError, match="`shape` must be two sizes of at least 64"):
        multispectral((32, 64))
