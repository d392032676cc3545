"""GeoTIFF / COG through rasterio: lazy windows, georeference kept through read-process-write, Zarr → COG.

Every file here is a real GeoTIFF written by rasterio (GDAL) or, for the malformed ones, by tifffile
with the GeoTIFF tags a real file would carry.
"""

from __future__ import annotations

import logging
import math
import sys
import tracemalloc

import dask
import dask.array as da
import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
from rasterio.transform import from_origin  # noqa: E402

import segarch.io as io  # noqa: E402
from segarch.io import GeoReference, NoCRSWarning  # noqa: E402

UTM33 = "EPSG:32633"


def _write(path, data, *, crs=UTM33, transform=None, nodata=0, names=("blue", "green", "red", "nir"), block=64,
           overviews=(), tiled=True):
    data = data if data.ndim == 3 else data[None]
    count, rows, cols = data.shape
    transform = transform if transform is not None else from_origin(399960.0, 5300040.0, 10.0, 10.0)
    profile = dict(driver="GTiff", width=cols, height=rows, count=count, dtype=data.dtype.name, transform=transform,
                   nodata=nodata)
    if crs is not None:
        profile["crs"] = crs
    if tiled:
        profile.update(tiled=True, blockxsize=block, blockysize=block)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        if names is not None:
            ds.descriptions = tuple(names[:count])
        if overviews:
            ds.build_overviews(list(overviews), rasterio.enums.Resampling.average)
    return path


@pytest.fixture
def scene(tmp_path):
    rng = np.random.default_rng(170)
    data = rng.integers(1, 10000, (4, 333, 517), dtype=np.uint16)
    data[:, :40, :55] = 0  # a nodata corner, as at the edge of a Sentinel-2 tile
    return _write(tmp_path / "scene.tif", data, overviews=(2, 4)), data


def test_lazy_reads_equal_full_reads_at_odd_windows(scene):
    path, data = scene
    image = io.open_image(path)
    assert image.geo is not None and image.axes == "CYX" and image.shape == data.shape
    assert image.geo.crs_code == UTM33 and image.geo.nodata == 0
    assert image.geo.band_names == ("blue", "green", "red", "nir")
    assert image.geo.pixel_size == (10.0, 10.0) and image.geo.units == "metre"
    # Chunks are whole blocks of the file (64×64), never a block split between two chunks.
    assert all(c % 64 == 0 for c in image.levels[0].chunks[1][:-1] + image.levels[0].chunks[2][:-1])
    rng = np.random.default_rng(171)
    level = image.levels[0]
    for _ in range(12):
        r0, c0 = rng.integers(0, 300), rng.integers(0, 480)
        r1, c1 = rng.integers(r0 + 1, 334), rng.integers(c0 + 1, 518)
        np.testing.assert_array_equal(level[:, r0:r1, c0:c1].compute(), data[:, r0:r1, c0:c1])
    np.testing.assert_array_equal(level[2, ::-7, 11:400:3].compute(), data[2, ::-7, 11:400:3])
    np.testing.assert_array_equal(level.compute(), data)
    # Overviews are the next levels, each what GDAL itself reads for that overview.
    assert [lv.shape for lv in image.levels] == [(4, 333, 517), (4, 167, 259), (4, 84, 130)]
    with rasterio.open(path, overview_level=1) as ov:
        np.testing.assert_array_equal(image.levels[2].compute(), ov.read())
    assert image.level_scales[1][1:] == pytest.approx((10 * 333 / 167, 10 * 517 / 259))


def test_scale_and_translate_place_pixels_in_map_units(scene):
    path, _ = scene
    image = io.open_image(path)
    assert image.units == {"Y": "meter", "X": "meter"}
    with rasterio.open(path) as ds:
        for row, col in [(0, 0), (17, 301), (332, 516)]:
            x, y = ds.xy(row, col)  # the pixel's centre on the map
            world = [t + s * i for t, s, i in zip(image.translate, image.scale, (0, row, col))]
            assert world[2] == pytest.approx(x) and -world[1] == pytest.approx(y)  # napari's Y is minus the northing


def test_a_window_read_touches_only_that_window(tmp_path):
    # 4000×4000 uint16 (32 MB decoded): reading a 100×100 window must not decode the scene.
    rows = cols = 4000
    with rasterio.open(tmp_path / "big.tif", "w", driver="GTiff", width=cols, height=rows, count=1, dtype="uint16",
                       crs=UTM33, transform=from_origin(0, 0, 10, 10), tiled=True, blockxsize=256, blockysize=256,
                       compress="deflate") as ds:
        for y in range(0, rows, 256):
            ds.write(np.full((1, min(256, rows - y), cols), y, np.uint16), window=((y, min(y + 256, rows)), (0, cols)))
    image = io.open_image(tmp_path / "big.tif")
    tracemalloc.start()
    window = image.levels[0][2510:2610, 1234:1334].compute()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert np.all(window[:, 0] == np.repeat([2304, 2560], [50, 50]))
    assert peak < 8 * 2 ** 20, f"a 100×100 window allocated {peak / 2 ** 20:.1f} MiB"


def test_plain_and_ome_tiffs_keep_going_through_tifffile(tmp_path):
    import tifffile

    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((32, 48), np.uint8))
    io.write_tiff(tmp_path / "cells.ome.tif", np.zeros((2, 32, 48), np.uint16), axes="CYX", scale=(1, 0.5, 0.5))
    for name in ("plain.tif", "cells.ome.tif"):
        assert not io.is_georeferenced_tiff(tmp_path / name)
        image = io.open_image(tmp_path / name)
        assert image.geo is None and "tifffile_axes" in image.metadata
    assert io.open_image(tmp_path / "cells.ome.tif").scale == (1.0, 0.5, 0.5)


def test_read_process_write_round_trip_keeps_crs_transform_nodata_and_alignment(scene, tmp_path):
    path, data = scene
    image = io.open_image(path)
    # "Process" a crop at an odd offset: water where NIR is low, nodata where the input is nodata.
    rows, cols = slice(21, 290), slice(37, 500)
    crop = image.levels[0][:, rows, cols]
    valid = (crop != 0).all(axis=0)
    labels = da.where(valid, (crop[3] < 5000).astype(np.uint8) + 1, 0).astype(np.uint8)
    out = io.write_geotiff(tmp_path / "labels.tif", labels, image.geo.window(rows, cols), tile=64)
    expected = np.where((data[:, rows, cols] != 0).all(0), (data[3, rows, cols] < 5000) + 1, 0)
    with rasterio.open(path) as src, rasterio.open(out) as ds:
        assert ds.crs == src.crs and ds.nodata == src.nodata == 0
        np.testing.assert_array_equal(ds.read(1), expected)
        for r, c in [(0, 0), (100, 33), (268, 462)]:  # the same pixel centre on the map as its source pixel
            assert ds.xy(r, c) == pytest.approx(src.xy(r + rows.start, c + cols.start))
        assert ds.tags()["segarch_kind"] == "labels"
    again = io.open_image(out)
    assert again.geo.crs_code == UTM33 and again.geo.nodata == 0
    assert again.geo.transform == pytest.approx(image.geo.window(rows, cols).transform)


def test_labels_are_written_as_a_cog_whose_overviews_hold_only_real_labels(tmp_path):
    rng = np.random.default_rng(172)
    coarse = rng.integers(0, 6, (40, 37)).astype(np.uint8)
    labels = np.kron(coarse, np.ones((31, 29), np.uint8))  # 1240×1073, blocks of one class
    labels[labels == 5] = 255  # nodata
    geo = GeoReference(crs=rasterio.crs.CRS.from_epsg(32633).to_wkt(), crs_code=UTM33,
                       transform=(10, 0, 500000, 0, -10, 4000000), shape=labels.shape, nodata=255)
    out = io.write_geotiff(tmp_path / "labels.tif", da.from_array(labels, chunks=300), geo, tile=256)
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert ds.overviews(1)[:2] == [2, 4] and ds.nodata == 255 and ds.block_shapes[0] == (256, 256)
        np.testing.assert_array_equal(ds.read(1), labels)
        assert ds.crs.to_epsg() == 32633 and tuple(ds.transform)[:6] == geo.transform
    with rasterio.open(out, overview_level=1) as ov:
        assert set(np.unique(ov.read(1))) <= set(np.unique(labels))  # mode: no invented class
        assert 0.9 < np.mean(ov.read(1) == labels[1::4, 1::4][: ov.height, : ov.width]) <= 1


@pytest.mark.slow
def test_probabilities_stream_to_disk_without_the_whole_raster_in_memory(tmp_path):
    # 3072×3072 float32 = 36 MiB, generated chunk by chunk; the writer holds a few chunks at a time.
    def render(block_info=None):
        (y0, y1), (x0, x1) = block_info[None]["array-location"]
        yy, xx = np.ogrid[y0:y1, x0:x1]
        return np.sin(yy / 50.0).astype(np.float32) * np.cos(xx / 70.0).astype(np.float32)

    n = 3072
    probs = da.map_blocks(render, chunks=((512,) * 6, (512,) * 6), dtype=np.float32)
    geo = GeoReference(crs=None, transform=(0.5, 0, 0, 0, -0.5, 0), shape=(n, n))
    with pytest.warns(NoCRSWarning):  # first call: GDAL's drivers and rasterio's modules load (not counted)
        io.write_geotiff(tmp_path / "warm.tif", probs[:256, :256], geo.window((0, 256), (0, 256)))
    tracemalloc.start()
    with dask.config.set(num_workers=2), pytest.warns(NoCRSWarning):
        out = io.write_geotiff(tmp_path / "probs.tif", probs, geo, nodata=float("nan"), tile=256)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # About 3.4 MiB here (a few 1 MiB chunks in flight), whatever the raster's size.
    assert peak < 0.2 * n * n * 4, f"writing took {peak / 2 ** 20:.1f} MiB for a {n * n * 4 / 2 ** 20:.0f} MiB raster"
    with rasterio.open(out) as ds:
        assert math.isnan(ds.nodata) and ds.overviews(1)[:3] == [2, 4, 8]
        window = ds.read(1, window=((1000, 1100), (2000, 2100)))
    np.testing.assert_allclose(window, render({None: {"array-location": [(1000, 1100), (2000, 2100)]}}))


def test_zarr_with_georeference_attributes_becomes_a_geotiff(scene, tmp_path):
    path, data = scene
    image = io.open_image(path)
    labels = (data[3] > 5000).astype(np.uint8)
    store = io.write_ome_zarr(tmp_path / "pred.zarr", labels, axes="YX", labels=True, chunks=(128, 128))
    io.add_georeference(store, image.geo)
    assert io.read_georeference(store) == image.geo
    reopened = io.open_image(store)
    assert reopened.geo == image.geo  # the Zarr store opens georeferenced
    out = io.geotiff_from_zarr(store, tmp_path / "pred.tif", nodata=None)
    with rasterio.open(out) as ds, rasterio.open(path) as src:
        assert ds.crs == src.crs and ds.transform == src.transform and ds.nodata is None
        np.testing.assert_array_equal(ds.read(1), labels)
    with pytest.raises(ValueError, match="carries no georeference.*`geo=`"):
        io.geotiff_from_zarr(io.write_ome_zarr(tmp_path / "plain.zarr", labels, axes="YX"), tmp_path / "x.tif")


def test_georeference_attributes_round_trip_and_follow_geozarr():
    geo = GeoReference(crs="PROJCRS[...]", crs_code=UTM33, transform=(10, 0, 399960, 0, -10, 5300040),
                       shape=(1098, 1098), nodata=float("nan"), band_names=("B02", "B03"), units="metre")
    attrs = io.geo_attrs(geo)
    assert attrs["proj:code"] == UTM33 and attrs["spatial:transform"] == [10, 0, 399960, 0, -10, 5300040]
    assert {c["name"] for c in attrs["zarr_conventions"]} == {"proj", "spatial"}
    back = io.geo_from_attrs(attrs)
    assert math.isnan(back.nodata) and back.transform == geo.transform and back.band_names == geo.band_names
    assert io.geo_from_attrs({"ome": {}}) is None
    with pytest.raises(ValueError, match="spatial:transform"):
        io.geo_from_attrs({"proj:code": UTM33})
    half = geo.for_shape((549, 549))
    assert half.pixel_size == (20.0, 20.0) and half.bounds == pytest.approx(geo.bounds)


def test_a_raster_with_no_crs_opens_and_says_so(tmp_path):
    data = np.arange(50 * 60, dtype=np.float32).reshape(1, 50, 60)
    path = _write(tmp_path / "nocrs.tif", data, crs=None, nodata=None, names=None,
                  transform=from_origin(1000.0, 2000.0, 0.5, 0.5))
    with pytest.warns(NoCRSWarning, match="no CRS"):
        image = io.open_image(path)
    assert image.geo.crs is None and image.geo.pixel_size == (0.5, 0.5) and image.axes == "YX"
    np.testing.assert_array_equal(image.data.compute(), data[0])


def test_a_nodata_value_outside_the_dtype_is_refused_with_the_file_and_the_parameter(tmp_path):
    import tifffile

    geokeys = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633)
    path = tmp_path / "bad_nodata.tif"
    tifffile.imwrite(path, np.ones((40, 40), np.uint8), metadata=None, extratags=[
        (33550, "d", 3, (10.0, 10.0, 0.0), True), (33922, "d", 6, (0, 0, 0, 400000.0, 5000000.0, 0), True),
        (34735, "H", len(geokeys), geokeys, True), (42113, "s", 0, "-9999", True)])
    with pytest.raises(ValueError, match=r"`nodata`=-9999.0 cannot be stored in uint8.*bad_nodata.tif.*0 to 255"):
        io.open_image(path)
    assert io.read_raster(path, nodata=None).geo.nodata is None  # the way out the message names
    with pytest.raises(ValueError, match=r"`nodata`=300 cannot be stored in uint8.*out.tif"):
        io.write_geotiff(tmp_path / "out.tif", np.ones((32, 32), np.uint8),
                         GeoReference(crs=None, transform=(1, 0, 0, 0, -1, 0), shape=(32, 32)), nodata=300)
    assert not (tmp_path / "out.tif").exists()


def test_writer_refuses_misaligned_or_unwritable_input(scene, tmp_path):
    path, data = scene
    geo = io.open_image(path).geo
    with pytest.raises(ValueError, match=r"`data` is 100×100.*`geo`.*geo.window"):
        io.write_geotiff(tmp_path / "a.tif", np.zeros((100, 100), np.uint8), geo)
    with pytest.raises(ValueError, match="`axes` of a GeoTIFF"):
        io.write_geotiff(tmp_path / "a.tif", np.zeros((2, 3, 333, 517), np.uint8), geo, axes="TCYX")
    io.write_geotiff(tmp_path / "a.tif", data[0], geo, labels=False)
    with pytest.raises(ValueError, match="already exists.*overwrite=True"):
        io.write_geotiff(tmp_path / "a.tif", data[0], geo)


def test_without_rasterio_the_message_names_the_extra_and_geotiffs_still_open(scene, monkeypatch, caplog):
    path, data = scene
    monkeypatch.setitem(sys.modules, "rasterio", None)
    with pytest.raises(ImportError, match=r"napari-segarch\[geo\]"):
        io.read_raster(path)
    with caplog.at_level(logging.WARNING, logger="segarch.io.api"):
        image = io.open_image(path)  # pixels through tifffile, georeference lost, and the log says so
    assert image.geo is None and "napari-segarch[geo]" in caplog.text
    np.testing.assert_array_equal(np.moveaxis(np.asarray(image.data), -1, 0) if image.axes.endswith("C")
                                  else np.asarray(image.data), data)
