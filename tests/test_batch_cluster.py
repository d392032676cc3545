"""A folder of scenes on a real Dask cluster: one task per file, each result equal to the serial run's, a corrupt
file reported while the others succeed, the run report and per-file resume as in a serial run."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

rasterio = pytest.importorskip("rasterio")
distributed = pytest.importorskip("distributed")

import segarch  # noqa: E402
from segarch.batch import open_client, predict_files  # noqa: E402
from test_cli import segarch_cli  # noqa: E402
from test_scene_predict import write_raster  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three fresh random 4-band GeoTIFFs (different sizes, a nodata corner), a corrupt TIFF, and a model file."""
    root = tmp_path_factory.mktemp("batch_cluster")
    scenes = root / "scenes"
    scenes.mkdir()
    rng = np.random.default_rng()
    for i, shape in enumerate([(96, 130), (140, 100), (80, 80)]):
        field = np.cumsum(np.cumsum(rng.normal(size=(4, *shape)), axis=1), axis=2)
        data = (5000 + 4000 * np.tanh(field / field.std())).astype(np.uint16)
        data[:, :20, :20] = 0
        write_raster(scenes / f"scene{i}.tif", data)
    (scenes / "broken.tif").write_bytes(b"II*\x00" + bytes(range(256)) * 4)  # a TIFF header and garbage
    model = segarch.Model.from_zoo("unet", in_channels=4, out_channels=3, features=(4, 8, 16),
                                   class_names=["background", "field", "water"])
    model.bands = ["red", "green", "blue", "nir"]
    last = [m for m in model.network.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 3][-1]
    with torch.no_grad():  # an untrained network: favour "field" a little so the labels hold regions
        last.bias[1] += 1.0
    model.network.eval()
    path = root / "model.safetensors"
    segarch.save_model(model, path)
    return {"scenes": scenes, "model": path, "root": root}


def _jobs(scenes, out, suffix=".zarr"):
    return [(p, out / (p.stem + suffix)) for p in sorted(scenes.glob("*.tif"))]


@pytest.mark.slow
def test_files_on_a_local_cluster_equal_the_serial_run_and_a_corrupt_file_is_reported(folder, tmp_path):
    model = segarch.load_model(folder["model"])
    settings = {"tile": 64, "output": "labels"}
    serial = predict_files(model, _jobs(folder["scenes"], tmp_path / "serial"), settings)
    from distributed import Client, LocalCluster, get_task_stream

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        seen = []
        with get_task_stream(client) as stream:
            rows = predict_files(model, _jobs(folder["scenes"], tmp_path / "cluster"), settings, scheduler=client,
                                 on_row=seen.append)
        assert sorted(r.file for r in seen) == sorted(r.file for r in rows)
        # every file went to the cluster as its own task
        assert sum(str(t["key"]).startswith("segarch-file-") for t in stream.data) == len(rows) == 4
    assert [r.file for r in rows] == [r.file for r in serial]  # the jobs' order
    status = {r.file.rsplit("/", 1)[-1]: r for r in rows}
    assert status["broken.tif"].status == "failed" and status["broken.tif"].error
    for left, right in zip(serial, rows):
        assert left.status == right.status
        if left.status != "done":
            continue
        a = np.asarray(segarch.io.open_image(left.output).levels[0])
        b = np.asarray(segarch.io.open_image(right.output).levels[0])
        np.testing.assert_array_equal(a, b)
        assert len(np.unique(b)) >= 2  # the labels hold regions, not one constant
        assert left.class_pixels == right.class_pixels and left.objects == right.objects
        with rasterio.open(right.file) as src:  # the georeference went along
            assert segarch.io.open_image(right.output).geo.transform == tuple(src.transform)[:6]


@pytest.mark.slow
def test_the_cli_runs_a_folder_on_local_workers_with_report_and_resume(folder, tmp_path):
    out = tmp_path / "out"
    args = ("predict", str(folder["scenes"]), str(out), "--model", str(folder["model"]), "--tile", "64",
            "--format", "tif", "--scheduler", "local:2")
    result = segarch_cli(*args)
    assert result.returncode == 1, result.stderr  # one file failed
    assert "one task per file" in result.stdout and "3 of 4 images segmented; failed: broken.tif" in result.stdout
    with open(out / "segarch-report.csv", newline="") as f:
        rows = {r["file"].rsplit("/", 1)[-1]: r for r in csv.DictReader(f)}
    assert rows["broken.tif"]["status"] == "failed" and rows["broken.tif"]["error"]
    model = segarch.load_model(folder["model"])
    for i in range(3):
        row = rows[f"scene{i}.tif"]
        assert row["status"] == "done" and float(row["pixels_per_s"]) > 0
        with rasterio.open(out / f"scene{i}.tif") as ds, rasterio.open(folder["scenes"] / f"scene{i}.tif") as src:
            assert ds.crs == src.crs and ds.transform == src.transform
            labels = ds.read(1)
        np.testing.assert_array_equal(labels, segarch.predict(model, str(folder["scenes"] / f"scene{i}.tif"),
                                                              tile=64))
    assert not list(out.glob("*.partial.zarr"))

    again = segarch_cli(*args, "--resume")
    with open(out / "segarch-report.csv", newline="") as f:
        rows = {r["file"].rsplit("/", 1)[-1]: r for r in csv.DictReader(f)}
    assert all(rows[f"scene{i}.tif"]["status"] == "complete" for i in range(3)), again.stderr
    assert rows["broken.tif"]["status"] == "failed"


def test_an_output_folder_inside_the_input_folder_is_refused_and_nothing_is_written(folder, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for p in folder["scenes"].glob("scene*.tif"):
        (inputs / p.name).write_bytes(p.read_bytes())
    before = sorted((p.name, p.stat().st_size) for p in inputs.rglob("*"))
    result = segarch_cli("predict", str(inputs), str(inputs / "results"), "--model", str(folder["model"]))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "OUTPUT" in lines[0] and "lies inside the input" in lines[0], result.stderr
    assert sorted((p.name, p.stat().st_size) for p in inputs.rglob("*")) == before


def test_local_needs_a_positive_worker_count():
    with pytest.raises(ValueError, match=r"local:N.*positive integer"):
        open_client("local:0")
    with pytest.raises(ValueError, match=r"local:N.*positive integer"):
        open_client("local:many")


def test_a_file_that_runs_out_of_memory_fails_alone_in_a_serial_run(folder, tmp_path, monkeypatch):
    """Not only bad input: any error of one file (here torch running out of memory on the largest scene, which
    cannot be caused for real on this machine, so the network raises it) is that file's row; the others finish."""
    model = segarch.load_model(folder["model"])
    forward = type(model.network).forward
    largest = max(sorted(folder["scenes"].glob("scene*.tif")), key=lambda p: p.stat().st_size)
    current = {}

    def forward_or_out_of_memory(self, x):
        if current.get("source") == largest:
            raise RuntimeError("CPU out of memory: tried to allocate 12.00 GiB")
        return forward(self, x)

    monkeypatch.setattr(type(model.network), "forward", forward_or_out_of_memory)
    jobs = _jobs(folder["scenes"], tmp_path / "out")
    rows = predict_files(model, jobs, {"tile": 64, "output": "labels"},
                         progress=lambda source: current.update(source=source) or None)
    status = {r.file.rsplit("/", 1)[-1]: r for r in rows}
    assert len(rows) == 4 and status["broken.tif"].status == "failed"
    assert status[largest.name].status == "failed"
    assert status[largest.name].error.startswith("RuntimeError: CPU out of memory")
    done = [r for r in rows if r.status == "done"]
    assert len(done) == 2 and all(len(np.unique(np.asarray(segarch.io.open_image(r.output).levels[0]))) >= 2
                                  for r in done)
