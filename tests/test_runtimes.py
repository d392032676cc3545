"""``segarch.predict(..., runtime=...)``: ONNX Runtime inside the same tiling engine, the export cache, the errors,
and constant tiles computed once."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import segarch
from segarch import zoo
from segarch.runtimes import ExportError, RuntimeNotInstalled, cache_dir
from segarch.runtimes import onnx as onnx_runtime
from segarch.tiling import pipeline

pytest.importorskip("onnxruntime")  # the `fast` extra (installed with `testing`)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGARCH_CACHE_DIR", str(tmp_path / "cache"))


def _zoo_model(name: str, dims: int = 2) -> segarch.Model:
    torch.manual_seed(0)
    model = segarch.Model.from_zoo(name, spatial_dims=dims, out_channels=3, **zoo.card(name).test_config)
    # Fresh batch-norm statistics, so the logits are not all alike and labels test something.
    for module in model.network.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model


def _tile(model, edge: int) -> int:
    return -(-edge // model.size_divisor) * model.size_divisor


@pytest.mark.parametrize("name,dims", [("unet", 2), ("unet", 3), ("deeplab_v3_plus", 2), ("bisenet", 2),
                                       ("hrnet_v2", 2)])
def test_onnxruntime_gives_the_same_labels_as_torch(name, dims):
    model = _zoo_model(name, dims)
    rng = np.random.default_rng()
    shape = (150, 170) if dims == 2 else (40, 50, 45)
    image = (rng.random(shape) * 255).astype(np.uint8)
    tile = _tile(model, 64 if dims == 2 else 32)
    eager = segarch.predict(model, image, tile=tile, device="cpu", runtime="torch", output="probabilities")
    fast = segarch.predict(model, image, tile=tile, device="cpu", runtime="onnxruntime", output="probabilities")
    # fp32 both ways: differences far below how much the (untrained) network's output varies over the image
    spread = eager.std(axis=tuple(range(1, eager.ndim))).max()
    assert np.abs(fast - eager).max() < 0.01 * spread
    labels_eager = segarch.predict(model, image, tile=tile, device="cpu", runtime="torch")
    labels_fast = segarch.predict(model, image, tile=tile, device="cpu", runtime="onnxruntime")
    np.testing.assert_array_equal(labels_fast, labels_eager)


@pytest.mark.parametrize("name,shape", [("unet.nuclei2d", (200, 230)), ("unet.nuclei3d", (40, 72, 64))])
def test_a_trained_model_segments_the_same_under_onnxruntime(name, shape):
    from segarch.samples import nuclei

    model = segarch.models.resolve(name)
    image, truth = nuclei(shape, seed=int(np.random.default_rng().integers(1 << 16)))
    eager = segarch.predict(model, image, device="cpu", runtime="torch")
    fast = segarch.predict(model, image, device="cpu", runtime="onnxruntime")
    assert 0.1 < (eager > 0).mean() < 0.9  # real labels: nuclei and background
    np.testing.assert_array_equal(fast, eager)


def test_instances_of_the_shipped_instance_model_are_the_same_under_onnxruntime():
    from segarch.samples import nuclei

    model = segarch.models.resolve("unet.nuclei2d_instances")
    image, _ = nuclei((160, 192), seed=int(np.random.default_rng().integers(1 << 16)))
    eager = np.asarray(segarch.predict(model, image, device="cpu", runtime="torch", output="instances"))
    fast = np.asarray(segarch.predict(model, image, device="cpu", runtime="onnxruntime", output="instances"))
    assert eager.max() >= 3  # several nuclei found
    np.testing.assert_array_equal(fast, eager)


def test_export_is_cached_reused_and_rebuilt_when_corrupted(caplog):
    model = _zoo_model("unet")
    image = (np.random.default_rng().random((100, 120)) * 255).astype(np.uint8)
    first = segarch.predict(model, image, tile=64, device="cpu", runtime="onnxruntime")
    entries = sorted(cache_dir().glob("*.onnx"))
    assert len(entries) == 1
    record = json.loads(entries[0].with_suffix(".json").read_text())
    assert record["tile"] == [64, 64] and record["arch"] == "unet" and record["max_abs_difference"] < 1e-3

    stamp = entries[0].stat().st_mtime_ns
    assert np.array_equal(segarch.predict(model, image, tile=64, device="cpu", runtime="onnxruntime"), first)
    assert entries[0].stat().st_mtime_ns == stamp  # reused, not exported again

    # Other weights, another tile: other entries.
    segarch.predict(model, image, tile=32, device="cpu", runtime="onnxruntime")
    original = {k: v.clone() for k, v in model.network.state_dict().items()}
    with torch.no_grad():
        next(model.network.parameters()).add_(0.01)
    segarch.predict(model, image, tile=64, device="cpu", runtime="onnxruntime")
    assert len(list(cache_dir().glob("*.onnx"))) == 3
    model.network.load_state_dict(original)

    data = entries[0].read_bytes()
    entries[0].write_bytes(data[: len(data) // 2])  # truncated
    with caplog.at_level(logging.WARNING, logger="segarch.runtimes"):
        again = segarch.predict(model, image, tile=64, device="cpu", runtime="onnxruntime")
    assert "unusable" in caplog.text
    np.testing.assert_array_equal(again, first)
    assert entries[0].read_bytes() == data  # rebuilt whole


class _NoOnnxOperator(nn.Module):
    """A convolution followed by ``erfinv``, which the ONNX exporter has no operator for (opset 17)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)

    def forward(self, x):
        return torch.erfinv(0.5 * torch.tanh(self.conv(x)))


def test_an_architecture_that_does_not_export(caplog):
    torch.manual_seed(0)
    model = segarch.Model(_NoOnnxOperator(), "no_onnx_operator", {}, 2, 1, 3)
    image = (np.random.default_rng().random((80, 80)) * 255).astype(np.uint8)
    with pytest.raises(ExportError, match="'no_onnx_operator' does not export to ONNX.*erfinv.*runtime`='torch'"):
        segarch.predict(model, image, tile=64, device="cpu", runtime="onnxruntime")
    assert not list(cache_dir().glob("*.onnx"))  # nothing cached
    with caplog.at_level(logging.INFO, logger="segarch.runtimes"):
        auto = segarch.predict(model, image, tile=64, device="cpu", runtime="auto")
    assert "runtime auto: torch" in caplog.text and "'no_onnx_operator' does not export" in caplog.text
    np.testing.assert_array_equal(auto, segarch.predict(model, image, tile=64, device="cpu", runtime="torch"))


def test_bad_runtime_and_missing_onnxruntime(monkeypatch, caplog):
    model = _zoo_model("unet")
    image = np.zeros((64, 64), np.uint8)
    with pytest.raises(ValueError, match=r"`runtime` must be one of \('auto', 'torch', 'onnxruntime', 'openvino'\), "
                                         r"got 'tvm'"):
        segarch.predict(model, image, runtime="tvm")
    # ONNX Runtime cannot be uninstalled for one test: the check that finds it is told it is absent.
    monkeypatch.setattr(onnx_runtime, "onnxruntime_available", lambda: False)
    monkeypatch.setattr(segarch.runtimes, "onnxruntime_available", lambda: False)
    monkeypatch.setattr(segarch.runtimes, "openvino_available", lambda: False)
    with pytest.raises(RuntimeNotInstalled, match=r"pip install 'napari-segarch\[fast\]'"):
        segarch.predict(model, image, tile=64, device="cpu", runtime="onnxruntime")
    monkeypatch.setattr(segarch.runtimes.openvino, "openvino_available", lambda: False)
    with pytest.raises(RuntimeNotInstalled, match=r"`runtime`='openvino' needs OpenVINO.*napari-segarch\[openvino\]"):
        segarch.predict(model, image, tile=64, device="cpu", runtime="openvino")
    with caplog.at_level(logging.INFO, logger="segarch.runtimes"):
        segarch.predict(model, image, tile=64, device="cpu", runtime="auto")
    assert "onnxruntime is not installed: pip install 'napari-segarch[fast]'" in caplog.text
    assert "openvino is not installed: pip install 'napari-segarch[openvino]'" in caplog.text


@pytest.mark.parametrize("name,dims", [("unet", 2), ("unet", 3), ("hrnet_v2", 2)])
def test_openvino_gives_the_same_labels_as_torch_and_auto_picks_it(name, dims, caplog):
    pytest.importorskip("openvino")
    model = _zoo_model(name, dims)
    rng = np.random.default_rng()
    image = (rng.random((150, 170) if dims == 2 else (40, 50, 45)) * 255).astype(np.uint8)
    tile = _tile(model, 64 if dims == 2 else 32)
    eager = segarch.predict(model, image, tile=tile, device="cpu", runtime="torch", output="probabilities")
    fast = segarch.predict(model, image, tile=tile, device="cpu", runtime="openvino", output="probabilities")
    spread = eager.std(axis=tuple(range(1, eager.ndim))).max()
    assert np.abs(fast - eager).max() < 0.01 * spread  # fp32 forced: no bf16 on this AVX-512 CPU
    np.testing.assert_array_equal(fast.argmax(0), eager.argmax(0))
    with caplog.at_level(logging.INFO, logger="segarch.runtimes"):
        auto = segarch.predict(model, image, tile=tile, device="cpu", runtime="auto")
    first = "openvino" if dims == 3 else "onnxruntime"  # segarch.runtimes.auto_order: measured fastest here
    assert f"runtime: {first}" in caplog.text
    np.testing.assert_array_equal(auto, eager.argmax(0))


def test_openvino_refuses_what_does_not_export():
    pytest.importorskip("openvino")
    torch.manual_seed(0)
    model = segarch.Model(_NoOnnxOperator(), "no_onnx_operator", {}, 2, 1, 3)
    image = np.zeros((64, 64), np.uint8)
    with pytest.raises(ExportError, match="'no_onnx_operator' does not export to ONNX"):
        segarch.predict(model, image, tile=64, device="cpu", runtime="openvino")


@pytest.mark.slow
def test_onnxruntime_on_a_dask_cluster_gives_the_in_process_labels(tmp_path):
    from distributed import Client, LocalCluster

    model = _zoo_model("unet")
    image = (np.random.default_rng().random((300, 260)) * 255).astype(np.uint8)
    single = segarch.predict(model, image, tile=64, device="cpu", runtime="torch", output="probabilities")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        out = segarch.predict(model, image, tile=64, device="cpu", runtime="onnxruntime", output="probabilities",
                              out=tmp_path / "d.zarr", scheduler=client)
        with pytest.raises(ExportError, match="'no_onnx_operator' does not export"):  # refused before any task
            segarch.predict(segarch.Model(_NoOnnxOperator(), "no_onnx_operator", {}, 2, 1, 3), image, tile=64,
                            device="cpu", runtime="onnxruntime", out=tmp_path / "e.zarr", scheduler=client)
    assert len(list(cache_dir().glob("*.onnx"))) == 1  # exported and checked once, by the client
    assert np.abs(out[:] - single).max() < 1e-4
    np.testing.assert_array_equal(out[:].argmax(0), single.argmax(0))


class _Counting(nn.Module):
    """A small convolutional net that counts the tiles it is given (on the class: the engine runs a copy)."""

    tiles = 0

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, x):
        type(self).tiles += x.shape[0]
        return self.net(x)


def test_constant_tiles_are_computed_once(monkeypatch):
    torch.manual_seed(0)
    network = _Counting()
    rng = np.random.default_rng()
    image = np.full((640, 640), 7, np.uint8)  # 70% empty: content in the left 30%
    image[:, :192] = rng.integers(0, 255, (640, 192))
    kwargs = dict(axes="YX", tile=64, overlap=0.25, batch_size=1, device="cpu")
    monkeypatch.setattr(pipeline, "SKIP_CONSTANT_TILES", False)
    _Counting.tiles = 0
    every = segarch.predict(network, image, output="probabilities", **kwargs)
    computed_all, _Counting.tiles = _Counting.tiles, 0
    monkeypatch.setattr(pipeline, "SKIP_CONSTANT_TILES", True)
    progress = []
    skipped = segarch.predict(network, image, output="probabilities", progress=lambda d, t: progress.append((d, t)),
                              **kwargs)
    np.testing.assert_array_equal(skipped, every)
    assert progress[-1][0] == progress[-1][1]  # every tile counted, computed or reused
    assert _Counting.tiles < 0.5 * computed_all
    labels = segarch.predict(network, image, **kwargs)
    np.testing.assert_array_equal(labels, every.argmax(0))


@pytest.mark.slow
def test_cli_runtime_flag(tmp_path):
    import tifffile
    import zarr

    model = _zoo_model("unet")
    segarch.save_model(model, tmp_path / "unet.safetensors")
    image = (np.random.default_rng().random((96, 96)) * 255).astype(np.uint8)
    tifffile.imwrite(tmp_path / "in.tif", image)
    env_cache = {"SEGARCH_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-m", "segarch.cli", "predict", str(tmp_path / "in.tif"),
                          str(tmp_path / "out.zarr"), "--model", str(tmp_path / "unet.safetensors"), "--tile", "64",
                          "--device", "cpu", "--runtime", "onnxruntime"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, **env_cache})
    assert run.returncode == 0, run.stderr
    assert list((tmp_path / "cache" / "onnx").glob("*.onnx"))
    got = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["0"][:]
    expected = segarch.predict(segarch.load_model(tmp_path / "unet.safetensors"), image, tile=64, device="cpu")
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("name,shape", [("dextr_light.objects2d", (160, 160)), ("dextr_light.objects3d", (48, 64, 64))])
def test_extreme_point_clicks_through_the_fast_runtimes_give_the_same_masks(name, shape):
    from segarch.prompts import extreme_points, object_scene, segment_from_points

    model = segarch.models.resolve(name)
    # A fixed scene: the test compares runtimes with eager torch; the models' quality on fresh objects is held by
    # test_prompts (a random object is sometimes one the 3D model outlines poorly, which says nothing here).
    image, labels = object_scene(shape, seed=2024)
    runtimes = ["onnxruntime"] + (["openvino"] if onnx_runtime.importlib.util.find_spec("openvino") else [])
    objects = [i for i in np.unique(labels) if i and (labels == i).sum() > 30][:3]
    assert objects
    for label in objects:
        points = extreme_points(labels == label)
        eager = segment_from_points(model, image, points, runtime="torch")
        assert eager.sum() > 0.3 * (labels == label).sum()  # a real object, not an empty mask
        for runtime in runtimes:
            fast = segment_from_points(model, image, points, runtime=runtime)
            # fp32 both ways: only a pixel whose probability sits at the threshold could flip
            assert (fast != eager).sum() <= 2, (runtime, label)
    assert list(cache_dir().glob("*.onnx"))  # exported once per crop size and cached
    with pytest.raises(ValueError, match="`runtime` must be one of"):
        segment_from_points(model, image, extreme_points(labels == objects[0]), runtime="tensorrt")


def test_a_fast_runtime_with_autocast_is_refused_by_name_and_auto_runs_torch(caplog):
    model = _zoo_model("unet")
    image = (np.random.default_rng().random((64, 64)) * 255).astype(np.uint8)
    for runtime in ("onnxruntime", "openvino"):
        with pytest.raises(ValueError, match=rf"`runtime`='{runtime}' cannot be used: `amp`=True asks for autocast"):
            segarch.predict(model, image, tile=64, device="cpu", amp=True, runtime=runtime)
    with caplog.at_level(logging.INFO, logger="segarch.runtimes"):
        auto = segarch.predict(model, image, tile=64, device="cpu", amp=True, runtime="auto")
    assert "runtime auto: torch (`amp`=True asks for autocast" in caplog.text
    np.testing.assert_array_equal(auto, segarch.predict(model, image, tile=64, device="cpu", amp=True,
                                                        runtime="torch"))
    assert not list(cache_dir().glob("*.onnx"))  # refused before anything was exported
