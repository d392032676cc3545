"""A fast runtime keeps the engine's behaviour: progress, cancel within a batch, and resume to the labels of an
uninterrupted run under the same runtime (and torch's)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

import segarch

pytest.importorskip("onnxruntime")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGARCH_CACHE_DIR", str(tmp_path / "cache"))


def _model() -> segarch.Model:
    torch.manual_seed(0)
    model = segarch.Model.from_zoo("unet", spatial_dims=2, features=(8, 16, 32), out_channels=3)
    for module in model.network.modules():  # fresh statistics: labels that are not all one class
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_cancel_then_resume_under_a_runtime_equals_an_uninterrupted_run(runtime, tmp_path):
    if runtime == "openvino":
        pytest.importorskip("openvino")
    model = _model()
    image = (np.random.default_rng().random((400, 260)) * 255).astype(np.uint8)
    run = dict(tile=64, batch_size=2, device="cpu", output="probabilities")
    reference = segarch.predict(model, image, runtime=runtime, **run)
    eager = segarch.predict(model, image, runtime="torch", **run)
    assert reference.std(axis=(1, 2)).min() > 1e-4  # the tiles' probabilities vary: the comparison tests something
    np.testing.assert_allclose(reference, eager, atol=1e-5)  # fp32: torch's probabilities
    cancel = threading.Event()
    calls = []

    def progress(done, total):
        calls.append((done, total))
        if len(calls) == 8:
            cancel.set()

    with pytest.raises(segarch.PredictionCancelled) as err:
        segarch.predict(model, image, runtime=runtime, out=tmp_path / "c.zarr", progress=progress, cancel=cancel, **run)
    assert len(calls) == 8 and 0 < calls[-1][0] < calls[-1][1]  # stopped within the run, not one batch more
    assert err.value.output.attrs["complete"] is False
    resumed = segarch.predict(model, image, runtime=runtime, out=tmp_path / "c.zarr", resume=True, **run)
    np.testing.assert_allclose(resumed[:], reference, atol=1e-6)
    np.testing.assert_array_equal(resumed[:].argmax(0), reference.argmax(0))
