"""``segarch predict ... --output panoptic --stuff-area N --stuff-regions connected``: small stuff regions void in
the classes image, as ``segarch.predict`` makes them; a bad value refused before anything is written."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import segarch
from panoptic_helpers import trained_panoptic_model
from test_cli import segarch_cli

pytestmark = pytest.mark.slow  # a training of 300 steps and the `segarch` command in a subprocess


def test_cli_stuff_area_voids_a_small_stuff_region(tmp_path):
    model, image, labels, _ = trained_panoptic_model(0)  # two squares, of classes 1 and 2, on background 0
    model_file = tmp_path / "panoptic.safetensors"
    segarch.save_model(model, model_file)
    np.save(tmp_path / "scene.npy", image)
    out = tmp_path / "scene.zarr"
    # class 2 as stuff: its square (at most 20 x 20 pixels) is a stuff region smaller than 500 pixels
    common = ["--model", str(model_file), "--output", "panoptic", "--thing-classes", "1", "--tile", "64",
              "--overlap", "0.5", "--device", "cpu", "--axes", "YX"]
    result = segarch_cli("predict", str(tmp_path / "scene.npy"), str(out), *common, "--stuff-area", "500",
                         "--stuff-regions", "connected")
    assert result.returncode == 0, result.stderr
    group = zarr.open_group(str(out), mode="r")
    classes, instances = group["classes/0"][:], group["instances/0"][:]
    expected = segarch.predict(model, image, output="panoptic", tile=64, overlap=0.5, device="cpu", axes="YX",
                               instance_options={"thing_classes": [1], "stuff_area": 500,
                                                 "stuff_regions": "connected"})
    assert np.array_equal(classes, expected.classes) and np.array_equal(instances, expected.instances)
    void = 3
    assert (classes[labels == 2] == void).mean() > 0.9  # the small stuff square: void
    assert (classes[labels == 0] == 0).mean() > 0.97  # the background, one large region: kept
    assert (instances[labels == 1] > 0).mean() > 0.9  # the thing square: an object, untouched

    refused = segarch_cli("predict", str(tmp_path / "scene.npy"), str(tmp_path / "x.zarr"), *common,
                          "--stuff-area", "-5")
    assert refused.returncode != 0 and "--stuff-area must be an integer >= 0" in refused.stderr, refused.stderr
    assert not (tmp_path / "x.zarr").exists()
