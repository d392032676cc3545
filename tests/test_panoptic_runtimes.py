"""Panoptic and detector outputs under ONNX Runtime and OpenVINO.

The bottom-up networks (Panoptic-DeepLab, DeeperLab) export: their blended heads (``output="raw"`` of
:class:`HeadsAsChannels`) under each runtime equal eager PyTorch's within the runtime check's tolerance, and a
model trained for a few steps finds the same objects, of the same classes. Detectors (Mask R-CNN's family for
``output="instances"``, EfficientPS for ``output="panoptic"``) are refused by name before any work, and
``runtime="auto"`` runs them in torch with a log line."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch

import segarch
from segarch import zoo
from segarch.instances.panoptic_predict import HeadsAsChannels
from segarch.runtimes import cache_dir
from segarch.runtimes.support import TOLERANCE
from segarch.tiling import predict as predict_tiles
from detector_helpers import two_squares
from panoptic_helpers import trained_panoptic_model, two_classes_scene
from test_deeperlab_trained_squares import RADIUS, train_deeperlab_network

pytest.importorskip("onnxruntime")  # the `fast` extra (installed with `testing`)
pytestmark = pytest.mark.slow  # two trainings of 300 steps (about 20 s each)

RUNTIMES = ["onnxruntime"] + (["openvino"] if __import__("importlib").util.find_spec("openvino") else [])


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGARCH_CACHE_DIR", str(tmp_path / "cache"))


def _heads_model(model):
    """The model (or bare network) whose one tensor is its heads, as output='panoptic' tiles it."""
    if not hasattr(model, "network"):
        return HeadsAsChannels(model)
    wrapper = HeadsAsChannels(model.network)
    return dataclasses.replace(model, network=wrapper, out_channels=len(wrapper.channel_names()),
                               class_names=wrapper.channel_names())


def _assert_heads_agree(model, image, tile: int, runtime: str) -> None:
    dense = _heads_model(model)
    options = dict(output="raw", tile=tile, overlap=0.5, device="cpu", axes="YX")
    eager = predict_tiles(dense, image, runtime="torch", **options)
    fast = predict_tiles(dense, image, runtime=runtime, **options)
    assert fast.shape == eager.shape and np.isfinite(fast).all()
    heads = dense.network if isinstance(dense, segarch.Model) else dense
    for name, (lo, hi) in heads.channels().items():  # each head against its own scale
        difference = float(np.abs(fast[lo:hi] - eager[lo:hi]).max())
        assert difference <= TOLERANCE * max(1.0, float(np.abs(eager[lo:hi]).max())), (runtime, name, difference)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_panoptic_deeplab_heads_and_objects_are_the_same_under_the_runtime(runtime):
    model, _, _, _ = trained_panoptic_model(0)
    image, labels, _ = two_classes_scene(np.random.default_rng())  # a fresh scene of the kind it was trained on
    _assert_heads_agree(model, image, 64, runtime)
    options = dict(output="panoptic", tile=64, overlap=0.5, device="cpu", axes="YX",
                   instance_options={"block": 48, "halo": 24})
    eager = segarch.predict(model, image, runtime="torch", **options)
    fast = segarch.predict(model, image, runtime=runtime, **options)
    np.testing.assert_array_equal(fast.instances, eager.instances)
    np.testing.assert_array_equal(fast.classes, eager.classes)
    assert list(cache_dir().glob("*.onnx"))  # it did run the export, not torch
    found = [np.unique(fast.instances[labels == square]) for square in (1, 2)]
    assert len(np.unique(fast.instances[labels > 0])) >= 2 and all(len(f[f > 0]) >= 1 for f in found)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_deeperlab_heads_and_objects_are_the_same_under_the_runtime(runtime):
    image, labels = two_squares(np.random.default_rng(0))
    model = train_deeperlab_network(image, labels)  # a bare network, as trained (no pre-processing)
    # the heads over several tiles (blended), on the scene amid a margin of its background
    _assert_heads_agree(model, np.pad(image, 16, constant_values=float(np.median(image))), 64, runtime)
    # the objects on tiles of the trained size (its keypoint radius, 16, wants tiles of 64)
    options = dict(output="panoptic", tile=64, overlap=0.5, device="cpu", axes="YX",
                   instance_options={"thing_classes": [1], "decoder_options": {"radius": RADIUS}})
    eager = segarch.predict(model, image, runtime="torch", **options)
    fast = segarch.predict(model, image, runtime=runtime, **options)
    np.testing.assert_array_equal(fast.instances, eager.instances)
    np.testing.assert_array_equal(fast.classes, eager.classes)
    assert int(fast.instances.max()) >= 2  # objects found, not an empty agreement


def _untrained(name: str, **kwargs) -> segarch.Model:
    torch.manual_seed(0)
    model = segarch.Model.from_zoo(name, in_channels=1, out_channels=3, class_names=["background", "a", "b"],
                                   **zoo.card(name).test_config, **kwargs)
    model.trained = True  # untrained weights: the refusal and the fallback do not depend on them
    return model


@pytest.mark.parametrize("name,output", [("mask_rcnn", "instances"), ("panet", "instances"),
                                         ("pointrend", "instances"), ("efficientps", "panoptic")])
def test_detectors_are_refused_by_name_before_any_work_and_auto_runs_torch(name, output, tmp_path, caplog):
    model = _untrained(name)
    image = np.random.default_rng().random((96, 80)).astype(np.float32)
    for runtime in ("onnxruntime", "openvino"):
        out = tmp_path / f"{runtime}.zarr"
        with pytest.raises(ValueError, match=rf"`runtime`='{runtime}' cannot run this model: \w+ is a detector.*"
                                             r"Use `runtime`='torch' \(or 'auto'"):
            segarch.predict(model, image, output=output, runtime=runtime, tile=64, device="cpu", out=str(out))
        assert not out.exists() and not out.with_name(out.name + ".heads").exists()
    with pytest.raises(ValueError, match=r"`precision`='int8' cannot be used for this model: \w+ is a detector"):
        segarch.predict(model, image, output=output, runtime="auto", precision="int8", tile=64, device="cpu")
    assert not cache_dir().exists() or not list(cache_dir().glob("*.onnx"))  # nothing exported
    with caplog.at_level(logging.INFO, logger="segarch.runtimes"):
        auto = segarch.predict(model, image, output=output, runtime="auto", tile=64, device="cpu")
    assert "runtime auto: torch (" in caplog.text and "is a detector" in caplog.text
    eager = segarch.predict(model, image, output=output, runtime="torch", tile=64, device="cpu")
    if output == "panoptic":
        np.testing.assert_array_equal(auto.instances, eager.instances)
        np.testing.assert_array_equal(auto.classes, eager.classes)
    else:
        np.testing.assert_array_equal(auto, eager)
