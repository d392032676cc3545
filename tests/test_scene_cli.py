"""``segarch predict`` / ``segarch convert`` on satellite scenes, run as a user runs them (real subprocesses).

A GeoTIFF in EPSG:32633 at 10 m goes in; a COG with the same CRS, transform and nodata comes out, pixel for
pixel what ``segarch.predict`` computes; a folder run with a corrupt file writes a run report and a rerun
skips what is complete.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("pyogrio")

import segarch  # noqa: E402
from test_cli import segarch_cli  # noqa: E402
from test_scene_predict import write_raster  # noqa: E402

pytestmark = pytest.mark.slow  # every test runs the command line in subprocesses


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_scene")
    rng = np.random.default_rng()
    # Smooth bands so a small network's labels form regions (polygons), with a nodata corner.
    field = np.cumsum(np.cumsum(rng.normal(size=(4, 160, 200)), axis=1), axis=2)
    data = (5000 + 4000 * np.tanh(field / field.std())).astype(np.uint16)
    data[:, :64, :64] = 0
    scenes = root / "scenes"
    scenes.mkdir()
    scene = write_raster(scenes / "scene.tif", data)
    model = segarch.Model.from_zoo("unet", in_channels=4, out_channels=3, features=(4, 8, 16),
                                   class_names=["background", "field", "water"])
    model.bands = ["red", "green", "blue", "nir"]
    # An untrained network may call every pixel background; favour "field" a little so the labels hold regions.
    last = [m for m in model.network.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 3][-1]
    with torch.no_grad():
        last.bias[1] += 1.0
    model.network.eval()
    path = root / "landcover.safetensors"
    segarch.save_model(model, path)
    return {"root": root, "scene": scene, "data": data, "model": path, "scenes": scenes}


def test_predict_to_geotiff_keeps_crs_transform_nodata_and_matches_the_api(files, tmp_path):
    out = tmp_path / "labels.tif"
    result = segarch_cli("predict", str(files["scene"]), str(out), "--model", str(files["model"]), "--tile", "64")
    assert result.returncode == 0, result.stderr
    model = segarch.load_model(files["model"])
    expected = segarch.predict(model, str(files["scene"]), tile=64)
    with rasterio.open(out) as ds, rasterio.open(files["scene"]) as src:
        assert ds.crs == src.crs and ds.transform == src.transform and ds.nodata == 0
        labels = ds.read(1)
        assert len(ds.overviews(1)) >= 1 or max(ds.shape) <= 512
    np.testing.assert_array_equal(labels, expected)
    assert not labels[:64, :64].any()


def test_convert_turns_a_store_into_a_cog_and_polygons_with_the_crs(files, tmp_path):
    store = tmp_path / "labels.zarr"
    assert segarch_cli("predict", str(files["scene"]), str(store), "--model", str(files["model"]), "--tile", "64",
                       "--bands", "red", "green", "blue", "nir").returncode == 0
    tif, gpkg = tmp_path / "labels.tif", tmp_path / "fields.gpkg"
    result = segarch_cli("convert", str(store), str(tif), "--vectors", str(gpkg))
    assert result.returncode == 0, result.stderr
    import pyogrio

    with rasterio.open(tif) as ds:
        assert ds.crs.to_epsg() == 32633
        labels = ds.read(1)
    np.testing.assert_array_equal(labels, np.asarray(segarch.io.open_image(store).levels[0]))
    info = pyogrio.read_info(gpkg)
    assert "32633" in info["crs"] and info["features"] > 0
    _, bounds = pyogrio.read_bounds(gpkg)  # every polygon lies on the scene, in metres
    assert bounds[0].min() >= 399960.0 and bounds[2].max() <= 399960.0 + 2000
    assert bounds[1].min() >= 5300040.0 - 1600 and bounds[3].max() <= 5300040.0


def test_a_band_mismatch_is_one_clear_line(files, tmp_path):
    result = segarch_cli("predict", str(files["scene"]), str(tmp_path / "x.zarr"), "--model", str(files["model"]),
                         "--bands", "nir")
    assert result.returncode == 2
    assert "--bands must pick the model's 4 input band(s), got 1" in result.stderr
    assert not (tmp_path / "x.zarr").exists()


def test_a_folder_run_reports_each_file_and_a_rerun_skips_the_complete_ones(files, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "scene.tif").write_bytes(files["scene"].read_bytes())
    (inputs / "broken.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 4)  # a TIFF header and garbage
    out = tmp_path / "out"
    result = segarch_cli("predict", str(inputs), str(out), "--model", str(files["model"]), "--tile", "64",
                         "--format", "tif")
    assert result.returncode == 1, result.stderr
    with open(out / "segarch-report.csv", newline="") as f:
        rows = {r["file"].split("/")[-1]: r for r in csv.DictReader(f)}
    assert rows["broken.tif"]["status"] in ("failed", "skipped") and rows["broken.tif"]["error"]
    done = rows["scene.tif"]
    assert done["status"] == "done" and done["output"].endswith("scene.tif") and float(done["pixels_per_s"]) > 0
    labels = rasterio.open(out / "scene.tif").read(1)
    pixels = json.loads(done["class_pixels"])
    assert sum(pixels.values()) == int((labels > 0).sum())
    objects = json.loads(done["objects"])
    assert set(objects) == set(pixels) and all(n >= 1 for n in objects.values())

    again = segarch_cli("predict", str(inputs), str(out), "--model", str(files["model"]), "--tile", "64",
                        "--format", "tif", "--resume", "--report", str(tmp_path / "again.json"))
    report = {r["file"].split("/")[-1]: r for r in json.loads((tmp_path / "again.json").read_text())}
    assert report["scene.tif"]["status"] == "complete", again.stderr
    assert "already complete" in again.stdout
