"""Labels to polygons: block by block, merged across seams, in map / µm / pixel coordinates, written with the CRS."""

from __future__ import annotations

import json

import dask.array as da
import numpy as np
import pytest
from scipy import ndimage

rasterio = pytest.importorskip("rasterio")
shapely = pytest.importorskip("shapely")
pyogrio = pytest.importorskip("pyogrio")
from rasterio.features import rasterize  # noqa: E402

import segarch.io as io  # noqa: E402
from segarch.io.vectors import polygons, write_qupath_geojson, write_vectors  # noqa: E402
from segarch.samples import SATELLITE_CLASSES, satellite  # noqa: E402

UTM33 = rasterio.crs.CRS.from_epsg(32633).to_wkt()


def _geo(shape, nodata=None):
    return io.GeoReference(crs=UTM33, crs_code="EPSG:32633", transform=(10, 0, 399960, 0, -10, 5300040),
                           shape=shape, nodata=nodata)


def _burn(shapes, shape, transform=None):
    out = np.zeros(shape, np.int64)
    pairs = [(g, int(v)) for g, v in zip(shapes.geometries, shapes.values)]
    kwargs = {"transform": rasterio.Affine(*transform)} if transform else {}
    return rasterize(pairs, out_shape=shape, fill=0, dtype="int32", **kwargs) if pairs else out


def test_objects_across_seams_become_one_polygon_each():
    labels = np.zeros((200, 300), np.uint16)
    labels[50:150, 20:280] = 1      # a field crossing four seams of a 64-pixel grid
    labels[60:70, 100:120] = 0      # ... with a hole that must stay a hole
    labels[100:190, 120:140] = 2    # a road across a seam, cutting into the field
    labels[10:30, 60:70] = 3        # a building exactly on the seam at x=64
    blocked = polygons(labels, block=64)
    whole = polygons(labels, block=4096)
    expected = sum(ndimage.label(labels == v)[1] for v in (1, 2, 3))
    assert len(blocked) == len(whole) == expected
    for a, b in zip(blocked.geometries, whole.geometries):
        assert a.equals(b) and a.is_valid
    field = blocked.geometries[list(blocked.values).index(1)]
    assert field.geom_type == "Polygon" and len(field.interiors) == 1
    assert sorted(blocked.pixels) == sorted(int((labels == v).sum()) for v in (1, 2, 3))
    np.testing.assert_array_equal(_burn(blocked, labels.shape), labels)


def test_a_generated_scene_traced_in_blocks_burns_back_into_the_same_labels():
    _, labels = satellite((256, 320), seed=int(np.random.default_rng().integers(1000)))
    lazy = da.from_array(labels, chunks=77)  # a lazy source, read block by block
    shapes = polygons(lazy, block=48, class_names=SATELLITE_CLASSES)
    np.testing.assert_array_equal(_burn(shapes, labels.shape), labels)
    for v in range(1, 5):  # one polygon per connected region of each class, seams or not
        assert (shapes.values == v).sum() == ndimage.label(labels == v)[1]
    assert set(shapes.names()) <= set(SATELLITE_CLASSES[1:])


def test_instances_are_one_feature_per_id_even_in_several_parts():
    labels = np.zeros((128, 128), np.uint32)
    labels[10:40, 50:80] = 7             # across the seam at 64
    labels[100:110, 5:15] = 7            # the same id elsewhere: one feature in two parts
    labels[60:70, 60:70] = 2 ** 31 + 5   # an id beyond int32
    shapes = polygons(labels, kind="instances", block=32)
    assert list(shapes.values) == [7, 2 ** 31 + 5]
    assert shapes.geometries[0].geom_type == "MultiPolygon" and len(shapes.geometries[0].geoms) == 2
    assert list(shapes.pixels) == [30 * 30 + 100, 100]


def test_map_coordinates_and_geopackage_with_the_crs(tmp_path):
    labels = np.zeros((100, 120), np.uint8)
    labels[10:30, 40:90] = 1
    labels[0:5, 0:5] = 255  # nodata: not a polygon
    geo = _geo(labels.shape, nodata=255)
    shapes = polygons(labels, geo=geo, block=32, class_names=["background", "field"])
    assert len(shapes) == 1 and shapes.units == "map"
    # The field's corners on the map: column 40 → x = 399960 + 400, row 10 → y = 5300040 - 100.
    assert shapes.geometries[0].bounds == (400360.0, 5299740.0, 400860.0, 5299940.0)
    assert shapes.geometries[0].exterior.is_ccw
    out = write_vectors(tmp_path / "fields.gpkg", shapes)
    info = pyogrio.read_info(out)
    assert info["crs"] == "EPSG:32633" and info["features"] == 1
    assert list(info["fields"]) == ["value", "class", "pixels"]
    meta, _, geometry, field_data = pyogrio.raw.read(out)
    assert shapely.from_wkb(geometry[0]).equals(shapes.geometries[0]) and field_data[1][0] == "field"
    np.testing.assert_array_equal(_burn(shapes, labels.shape, geo.transform), np.where(labels == 1, 1, 0))
    gj = write_vectors(tmp_path / "fields.geojson", shapes)
    assert "32633" in json.loads(gj.read_text())["crs"]["properties"]["name"]
    lonlat = json.loads(write_vectors(tmp_path / "wgs84.geojson", shapes, rfc7946=True).read_text())
    lon, lat = lonlat["features"][0]["geometry"]["coordinates"][0][0]
    assert 13 < lon < 14 and 47 < lat < 48  # UTM 33N, 400 km east, 5300 km north: Austria
    with pytest.raises(ValueError, match="already exists"):
        write_vectors(tmp_path / "fields.gpkg", shapes)


def test_qupath_geojson_in_pixels_and_micrometres(tmp_path):
    labels = np.zeros((64, 96), np.uint16)
    labels[8:24, 10:30], labels[40:60, 50:90] = 1, 2
    cells = polygons(labels, kind="instances", block=32)
    doc = json.loads(write_qupath_geojson(tmp_path / "cells.geojson", cells).read_text())
    assert doc["type"] == "FeatureCollection" and len(doc["features"]) == 2
    first = doc["features"][0]
    assert first["properties"]["objectType"] == "detection" and first["properties"]["classification"]["name"]
    xs = [x for x, _ in first["geometry"]["coordinates"][0]]
    ys = [y for _, y in first["geometry"]["coordinates"][0]]
    assert (min(xs), max(xs), min(ys), max(ys)) == (10, 30, 8, 24)  # level-0 pixels: x is the column
    regions = polygons(labels, pixel_size=0.5, class_names={1: "tumour", 2: "stroma"})
    doc = json.loads(write_qupath_geojson(tmp_path / "regions.geojson", regions).read_text())
    assert [f["properties"]["classification"]["name"] for f in doc["features"]] == ["tumour", "stroma"]
    assert doc["features"][0]["properties"]["objectType"] == "annotation"
    assert shapely.geometry.shape(doc["features"][1]["geometry"]).bounds == (25.0, 20.0, 45.0, 30.0)
    with pytest.raises(ValueError, match="QuPath places objects in slide pixels"):
        write_qupath_geojson(tmp_path / "x.geojson", polygons(labels, geo=_geo(labels.shape)))


def test_bad_input_is_refused_with_the_parameter():
    with pytest.raises(ValueError, match="`labels` must be a 2-D"):
        polygons(np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="`kind` must be"):
        polygons(np.zeros((8, 8), np.uint8), kind="objects")
    with pytest.raises(ValueError, match="`labels` is 8×8 but `geo`"):
        polygons(np.zeros((8, 8), np.uint8), geo=_geo((16, 16)))
    with pytest.raises(ValueError, match="integer"):
        polygons(np.zeros((8, 8), np.complex64))
    with pytest.raises(ValueError, match="cannot tell the format"):
        write_vectors("out.txt", polygons(np.ones((8, 8), np.uint8)))
