"""``segarch predict IMAGE OUT.zarr --output panoptic``: both label images written, as segarch.predict makes them."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import segarch
from panoptic_helpers import trained_panoptic_model
from test_cli import segarch_cli

pytestmark = pytest.mark.slow  # a training of 300 steps and the `segarch` command in a subprocess


def test_cli_writes_classes_and_instances(tmp_path):
    model, image, labels, _ = trained_panoptic_model(0)
    model_file = tmp_path / "panoptic.safetensors"
    segarch.save_model(model, model_file)
    np.save(tmp_path / "scene.npy", image)
    out = tmp_path / "scene.zarr"
    args = ["predict", str(tmp_path / "scene.npy"), str(out), "--model", str(model_file), "--output", "panoptic",
            "--thing-classes", "1", "2", "--tile", "64", "--overlap", "0.5", "--device", "cpu", "--axes", "YX"]
    result = segarch_cli(*args)
    assert result.returncode == 0, result.stderr
    assert "objects: 2" in result.stdout and "objects per class: round: 1, bright: 1" in result.stdout
    group = zarr.open_group(str(out), mode="r")
    assert group.attrs["ome"]["labels"] == ["classes", "instances"]
    expected = segarch.predict(model, image, output="panoptic", tile=64, overlap=0.5, device="cpu", axes="YX",
                               instance_options={"thing_classes": [1, 2]})
    assert np.array_equal(group["classes/0"][:], expected.classes)
    assert np.array_equal(group["instances/0"][:], expected.instances)
    for square in (1, 2):  # one object per square, of its class
        assert len(np.unique(group["instances/0"][:][labels == square])) <= 2
        assert np.bincount(group["classes/0"][:][labels == square]).argmax() == square

    wrong = segarch_cli("predict", str(tmp_path / "scene.npy"), str(tmp_path / "x.zarr"), "--model",
                        str(model_file), "--output", "panoptic", "--thing-classes", "7", "--axes", "YX")
    assert wrong.returncode != 0 and "--thing-classes must be distinct class indices from 0 to 2" in wrong.stderr
    assert not (tmp_path / "x.zarr").exists()
