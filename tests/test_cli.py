"""The ``segarch`` command line, run as a user runs it: a real subprocess."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import segarch

pytestmark = pytest.mark.slow  # runs the `segarch` command in subprocesses


def segarch_cli(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("segarch")
    command = [exe] if exe else [sys.executable, "-m", "segarch.cli"]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=300)


def test_zoo_table_lists_every_architecture_with_its_parameters():
    result = segarch_cli("zoo")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["name", "task", "dims"]
    for name in segarch.zoo.names():
        row = next(line for line in lines if line.startswith(name + " "))
        counted = segarch.zoo.parameter_count(name) / 1e6
        assert f"{counted:.2f}" in row and segarch.zoo.card(name).reference in row


def test_zoo_json_and_filters():
    rows = json.loads(segarch_cli("zoo", "--json", "--dims", "3").stdout)
    assert {r["name"] for r in rows} == {n for n in segarch.zoo.names() if 3 in segarch.zoo.card(n).spatial_dims}
    assert all(abs(r["params_m"] - r["paper_params_m"]) / r["paper_params_m"] <= 0.05 for r in rows)


def test_card_and_info(tmp_path):
    card = json.loads(segarch_cli("card", "unet_plus_plus").stdout)
    assert card["reference"] == "arXiv:1807.10165" and card["params_at_paper_config"] > 9e6
    model = segarch.Model.from_zoo("unet", out_channels=3, features=(4, 8, 16))
    path = segarch.save_model(model, tmp_path / "m.safetensors")
    info = json.loads(segarch_cli("info", str(path)).stdout)
    assert info["arch"] == "unet" and info["out_channels"] == 3 and info["options"]["features"] == [4, 8, 16]


def test_demo_runs_a_forward_pass_and_writes_labels(tmp_path):
    import tifffile

    out = tmp_path / "labels.tif"
    result = segarch_cli("demo", "--model", "attention_unet", "--dims", "3", "--size", "40", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "generated nuclei 40×40×40" in result.stdout
    assert "segarch.predict: 1 tiles of 64 px" in result.stdout and "padded to a multiple of 16" in result.stdout
    assert "untrained" in result.stdout
    labels = tifffile.imread(out)
    assert labels.shape == (40, 40, 40) and labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, 1}


def test_the_3d_demo_of_the_readme_runs_on_a_stack_sized_for_a_cpu():
    """`segarch demo --dims 3` as the README gives it: the shipped 3D instance model on a 96³ stack (512³, the
    2D size, took minutes), objects counted and scored against the generated nuclei."""
    result = segarch_cli("demo", "--dims", "3", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "generated nuclei 96×96×96" in result.stdout and "instances: uint32 (96, 96, 96)" in result.stdout
    f1 = float(result.stdout.split("F1 at IoU 0.5 against the generated truth: ")[1].split()[0])
    assert 0.0 < f1 <= 1.0


@pytest.mark.parametrize("args,message", [
    (("demo", "--model", "unetpp"), "Did you mean"),
    (("card", "nope"), "Unknown architecture"),
    (("info", "/nonexistent.safetensors"), "No model file"),
])
def test_errors_exit_2_with_the_message(args, message):
    result = segarch_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
