"""``segarch.predict(..., precision="int8")``: real static quantisation by ONNX Runtime, on the image's own tiles,
kept only when its labels agree with fp32's (≥ 99.5%), refused with the reason logged otherwise."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

import segarch

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGARCH_CACHE_DIR", str(tmp_path / "cache"))


def _int8_files():
    from segarch.runtimes import cache_dir

    return sorted(cache_dir().glob("*.int8.onnx"))


def test_int8_of_the_shipped_unet_agrees_with_fp32_and_is_cached(caplog):
    from segarch.samples import nuclei

    model = segarch.models.resolve("unet.nuclei2d")
    image, truth = nuclei((256, 256), seed=int(np.random.default_rng().integers(1 << 16)))
    fp32 = segarch.predict(model, image, tile=128, device="cpu", runtime="onnxruntime")
    with caplog.at_level(logging.INFO, logger="segarch.runtimes"):
        int8 = segarch.predict(model, image, tile=128, device="cpu", runtime="onnxruntime", precision="int8")
    used = [r.getMessage() for r in caplog.records if "onnxruntime int8" in r.getMessage()]
    assert used, "the int8 graph was not used"
    measured = float(used[-1].split("agree with fp32 on ")[1].split("%")[0]) / 100
    assert 0.995 <= measured <= 1.0  # the agreement is measured and reported
    assert not any("pre-processing" in r.getMessage() for r in caplog.records)  # the quantiser's advice kept quiet
    assert (int8 == fp32).mean() >= 0.99  # over the whole image, not only the calibration tiles
    assert (fp32 > 0).mean() > 0.05 and ((int8 > 0) == (truth > 0)).mean() > 0.9  # real nuclei found, not one class
    [path] = _int8_files()
    import onnx

    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really quantised
    stamp = path.stat().st_mtime_ns
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="segarch.runtimes"):
        again = segarch.predict(model, image, tile=128, device="cpu", runtime="onnxruntime", precision="int8")
    assert np.array_equal(again, int8)
    assert _int8_files() == [path] and path.stat().st_mtime_ns == stamp  # cached: not quantised again
    assert not any("labels agree with fp32 on" in r.getMessage() and "bar" in r.getMessage() for r in caplog.records)


def test_a_corrupted_int8_entry_is_rebuilt(caplog):
    from segarch.samples import nuclei

    model = segarch.models.resolve("unet.nuclei2d")
    image, _ = nuclei((192, 192), seed=int(np.random.default_rng().integers(1 << 16)))
    first = segarch.predict(model, image, tile=128, device="cpu", runtime="onnxruntime", precision="int8")
    [path] = _int8_files()
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="segarch.runtimes"):
        second = segarch.predict(model, image, tile=128, device="cpu", runtime="onnxruntime", precision="int8")
    assert any("unusable" in r.getMessage() for r in caplog.records)
    assert np.array_equal(first, second)


class _NearlyTied(nn.Module):
    """Two class logits 0.1% apart: fp32 tells them apart (class 1 wherever the first is positive), int8's
    shared output scale cannot, so its labels disagree on a large share of pixels. The input itself is added to
    the first logit so that about half the pixels are positive whatever the random weights."""

    spatial_dims = 2

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))

    def forward(self, x):
        y = x + 0.1 * self.body(x)
        return torch.cat([y, y * 1.001], 1)


def test_int8_is_refused_when_labels_disagree_and_fp32_runs(caplog):
    from segarch.runtimes.int8 import int8_runner
    from segarch.models.model import as_model

    torch.manual_seed(int(np.random.default_rng().integers(1 << 16)))
    network = _NearlyTied()
    image = np.random.default_rng().standard_normal((128, 128)).astype(np.float32)
    fp32 = segarch.predict(network, image, axes="YX", tile=64, device="cpu", runtime="onnxruntime")
    assert 0.2 < fp32.mean() < 0.8  # both classes present: the decision is real
    with caplog.at_level(logging.INFO, logger="segarch.runtimes"):
        result = segarch.predict(network, image, axes="YX", tile=64, device="cpu", runtime="onnxruntime",
                                 precision="int8")
    refused = [r.getMessage() for r in caplog.records if "int8 refused" in r.getMessage()]
    assert refused and "under the 99.5% bar" in refused[0], [r.getMessage() for r in caplog.records]
    assert np.array_equal(result, fp32)  # fell back to fp32: the same labels
    # the measurement itself, on the same kind of tiles
    tiles = np.random.default_rng().standard_normal((4, 1, 64, 64)).astype(np.float32)
    decided = int8_runner(as_model(network, spatial_dims=2, in_channels=1, out_channels=2), (64, 64),
                          "onnxruntime", tiles)
    assert decided.runner is None and decided.agreement < 0.9 and "99.5%" in decided.reason


@pytest.mark.skipif(not __import__("importlib").util.find_spec("openvino"), reason="OpenVINO is not installed")
def test_int8_under_openvino_agrees_with_fp32(caplog):
    from segarch.samples import nuclei

    model = segarch.models.resolve("unet.nuclei2d")
    image, _ = nuclei((256, 256), seed=int(np.random.default_rng().integers(1 << 16)))
    fp32 = segarch.predict(model, image, tile=128, device="cpu", runtime="openvino")
    int8 = segarch.predict(model, image, tile=128, device="cpu", runtime="openvino", precision="int8")
    assert len(_int8_files()) == 1 and (int8 == fp32).mean() >= 0.99
    with caplog.at_level(logging.INFO, logger="segarch.runtimes"):
        auto = segarch.predict(model, image, tile=128, device="cpu", runtime="auto", precision="int8")
    assert "runtime: openvino int8" in caplog.text  # auto: OpenVINO first, the same int8 graph (cached)
    assert np.array_equal(auto, int8) and len(_int8_files()) == 1


def test_int8_bad_input_is_refused_by_name(tmp_path):
    model = segarch.Model.from_zoo("unet", features=(4, 8), out_channels=2)
    image = np.zeros((64, 64), np.float32)
    with pytest.raises(ValueError, match=r"`precision` must be one of \('fp32', 'int8'\), got 'int4'"):
        segarch.predict(model, image, precision="int4")
    with pytest.raises(ValueError, match=r"`precision`='int8' cannot be used: `runtime`='torch'"):
        segarch.predict(model, image, device="cpu", runtime="torch", precision="int8")
    with pytest.raises(ValueError, match=r"`precision`='int8' runs in this process.*`scheduler`"):
        segarch.predict(model, image, runtime="onnxruntime", precision="int8", scheduler="tcp://127.0.0.1:1",
                        out=tmp_path / "o.zarr")
    assert not (tmp_path / "o.zarr").exists()


def test_a_constant_image_has_nothing_to_calibrate_on_and_runs_fp32(caplog):
    model = segarch.Model.from_zoo("unet", features=(4, 8), out_channels=2)
    image = np.full((64, 64), 3.0, np.float32)
    with caplog.at_level(logging.WARNING, logger="segarch.runtimes"):
        got = segarch.predict(model, image, tile=32, device="cpu", runtime="onnxruntime", precision="int8")
    assert any("no usable calibration tiles" in r.getMessage() for r in caplog.records)
    assert np.array_equal(got, segarch.predict(model, image, tile=32, device="cpu", runtime="torch"))
    assert not _int8_files()


def test_cli_precision_int8(tmp_path, caplog):
    from segarch.cli import main
    from segarch.samples import nuclei

    image, _ = nuclei((160, 160), seed=int(np.random.default_rng().integers(1 << 16)))
    np.save(tmp_path / "img.npy", image)
    main(["predict", str(tmp_path / "img.npy"), str(tmp_path / "out.zarr"), "--model", "unet.nuclei2d",
          "--runtime", "onnxruntime", "--precision", "int8", "--device", "cpu"])
    assert len(_int8_files()) == 1
    import zarr

    labels = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")["0"][:]
    assert zarr.open_group(str(tmp_path / "out.zarr"), mode="r").attrs.asdict()
    expected = segarch.predict(segarch.models.resolve("unet.nuclei2d"), image, device="cpu", runtime="onnxruntime")
    assert (labels == expected).mean() >= 0.99
