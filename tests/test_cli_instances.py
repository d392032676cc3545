"""Instances on the command line: train --task instance, predict --output instances (summary, table, SIGKILL and
--resume), demo with an instance model. Real subprocesses, real TIFF and Zarr files."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import segarch
from segarch.synthetic import nuclei_sample
from test_cli import segarch_cli

pytestmark = pytest.mark.slow

FEATURES = '{"features": [4, 8, 16, 32]}'


@pytest.fixture(scope="module")
def instance_model(tmp_path_factory):
    """A small instance model trained for a few steps by ``segarch train --task instance``."""
    from segarch import io

    root = tmp_path_factory.mktemp("cli_instances")
    (root / "images").mkdir()
    (root / "labels").mkdir()
    for i in range(3):
        s = nuclei_sample((96, 96), seed=70 + i, hard=True)
        io.write_tiff(root / "images" / f"n{i}.tif", s.image)
        io.write_tiff(root / "labels" / f"n{i}.tif", s.labels.astype(np.uint16), labels=True)
    out = root / "nuclei_instances.safetensors"
    result = segarch_cli("train", str(root / "images"), str(root / "labels"), "--model", "unet", "--task", "instance",
                         "--options", FEATURES, "--steps", "4", "--patch", "48", "--batch-size", "2",
                         "--device", "cpu", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and out.exists()
    model = segarch.load_model(out)
    assert model.instance is not None and model.instance["decoder"] == "distance"
    return out


def test_predict_output_instances_prints_the_summary_and_writes_the_table(instance_model, tmp_path):
    import zarr

    from segarch import io

    s = nuclei_sample((200, 180), seed=int(np.random.default_rng().integers(1000)), hard=True)
    io.write_tiff(tmp_path / "cells.tif", s.image)
    out = tmp_path / "cells.zarr"
    result = segarch_cli("predict", str(tmp_path / "cells.tif"), str(out), "--model", str(instance_model),
                         "--output", "instances", "--tile", "64", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    labels = zarr.open_group(str(out), mode="r")["0"][:]
    expected = segarch.predict(segarch.load_model(instance_model), s.image, output="instances", tile=64,
                               device="cpu")
    assert labels.dtype == np.uint32 and np.array_equal(labels, expected)
    report = zarr.open_group(str(out), mode="r").attrs["segarch"]["instances"]
    table = tmp_path / "cells_objects.csv"
    assert f"objects: {int(labels.max())}" in result.stdout
    assert f"{report['merged_across_seams']} merged across block seams" in result.stdout
    assert f"{report['touching_border']} touching the image border" in result.stdout
    assert f"table: {table}" in result.stdout
    sizes = np.bincount(labels.ravel())[1:]
    assert f"median size {float(np.median(sizes)):g} pixels" in result.stdout
    with open(table, newline="") as f:
        assert len(list(csv.DictReader(f))) == labels.max()
    # A TIFF output: the labels as an OME-TIFF, the table beside it, no partial store left.
    tif = tmp_path / "cells_labels.tif"
    result = segarch_cli("predict", str(tmp_path / "cells.tif"), str(tif), "--model", str(instance_model),
                         "--output", "instances", "--tile", "64", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert np.array_equal(io.open_image(tif).levels[0][:], expected)
    assert (tmp_path / "cells_labels_objects.csv").exists() and f"table: {tmp_path / 'cells_labels_objects.csv'}" \
        in result.stdout
    assert not any(p.name.endswith(".partial.zarr") or "partial_objects" in p.name for p in tmp_path.iterdir())


def test_instances_of_a_semantic_model_or_a_bad_pixel_size_exit_2_naming_the_flag(tmp_path):
    image = tmp_path / "img.npy"
    np.save(image, nuclei_sample((64, 64), seed=1).image)
    semantic = segarch.save_model(segarch.Model.from_zoo("unet", out_channels=2, features=(4, 8, 16, 32)),
                                  tmp_path / "semantic.safetensors")
    out = tmp_path / "never.zarr"
    result = segarch_cli("predict", str(image), str(out), "--model", str(semantic), "--output", "instances")
    assert result.returncode == 2
    assert "--output instances is not available" in result.stderr or "--output='instances'" in result.stderr
    assert "--output labels" in result.stderr or "--output='labels'" in result.stderr
    assert not out.exists() and not (tmp_path / "never.zarr.probabilities").exists()


def test_a_killed_instances_run_resumes_to_the_same_labels(instance_model, tmp_path):
    import zarr

    from segarch.tiling.output import finished_blocks

    s = nuclei_sample((1300, 1100), seed=int(np.random.default_rng().integers(1000)))
    np.save(tmp_path / "big.npy", s.image)
    out = tmp_path / "big.zarr"
    args = ["predict", str(tmp_path / "big.npy"), str(out), "--model", str(instance_model), "--output", "instances",
            "--device", "cpu", "--tile", "128"]
    exe = shutil.which("segarch")
    command = ([exe] if exe else [sys.executable, "-m", "segarch.cli"]) + args
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    probabilities = tmp_path / "big.zarr.probabilities"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if probabilities.exists() and len(finished_blocks(probabilities)) >= 2:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert 2 <= len(finished_blocks(probabilities)) < 9  # killed part-way through the network pass
    refused = segarch_cli(*args)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = segarch_cli(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert "objects:" in resumed.stdout
    clean = segarch_cli(*args[:2], str(tmp_path / "clean.zarr"), *args[3:])
    assert clean.returncode == 0, clean.stderr
    a = zarr.open_group(str(out), mode="r")["0"][:]
    b = zarr.open_group(str(tmp_path / "clean.zarr"), mode="r")["0"][:]
    assert a.max() > 0 and np.array_equal(a, b)
    assert not probabilities.exists()


def test_demo_shows_objects_and_their_f1_for_an_instance_model(instance_model):
    result = segarch_cli("demo", "--model", str(instance_model), "--size", "96", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "segarch.predict(output='instances')" in result.stdout
    assert "F1 at IoU 0.5 against the generated truth:" in result.stdout
    count = int(result.stdout.split("instances: uint32 (96, 96); ")[1].split(" objects")[0])
    assert count >= 0 and "merged across block seams" in result.stdout


@pytest.mark.parametrize("bad, message", [
    ("negative", "hold negative values"),
    ("fractional", "must hold integers"),
    ("empty", "hold no objects"),
    ("pixel size", "--pixel-size"),
])
def test_bad_instance_training_input_exits_2_naming_it_and_writes_nothing(bad, message, tmp_path):
    from segarch import io

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    s = nuclei_sample((64, 64), seed=int(np.random.default_rng().integers(1000)), hard=True)
    labels = {"negative": s.labels.astype(np.int16) - 1, "fractional": s.labels.astype(np.float32) + 0.5,
              "empty": np.zeros(s.labels.shape, np.uint16)}.get(bad, s.labels.astype(np.uint16))
    io.write_tiff(tmp_path / "images" / "n0.tif", s.image)
    io.write_tiff(tmp_path / "labels" / "n0.tif", labels)
    out = tmp_path / "never.safetensors"
    extra = ["--pixel-size", "0", "1"] if bad == "pixel size" else []
    result = segarch_cli("train", str(tmp_path / "images"), str(tmp_path / "labels"), "--model", "unet",
                         "--task", "instance", "--options", FEATURES, "--steps", "1", "--patch", "32",
                         "--device", "cpu", "--out", str(out), *extra)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()
