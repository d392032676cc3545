"""A model file runs no code: hostile pre-processing, options and prompts are refused, never executed.

Each payload, if it ran, would create a marker file. The negative control shows MONAI's
``ConfigParser`` (what loaded the pre-processing before) does run them; every segarch entry point
(``load_model``, ``predict``, ``train``/fine-tune, ``segarch info``, ``segarch predict``, ``segarch
train``) must refuse the file with a message naming the step, and the marker must never appear.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import segarch
from segarch.models import check_metadata


def _small_model() -> segarch.Model:
    torch.manual_seed(0)
    return segarch.Model.from_zoo("unet", features=(4, 8, 16), norm="batch", out_channels=2,
                                  class_names=["background", "cell"])


def _with_metadata(good: Path, path: Path, **changes) -> Path:
    """A copy of the model file ``good`` whose segarch metadata has ``changes`` (as an attacker writes it)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(good), framework="pt") as f:
        raw = dict(f.metadata())
    meta = json.loads(raw["segarch"])
    meta.update(changes)
    raw["segarch"] = json.dumps(meta)
    save_file(load_file(str(good)), str(path), metadata=raw)
    return path


def _payloads(marker: Path) -> dict[str, list]:
    """Pre-processing lists that run ``touch marker`` when handed to MONAI's ConfigParser."""
    cmd = f"touch {marker}"
    expr = f"$__import__('os').system('{cmd}')"
    lam = f"$lambda x: __import__('os').system('{cmd}') or x"
    return {
        "os.system": [{"_target_": "os.system", "command": cmd}],
        "subprocess.run": [{"_target_": "subprocess.run", "args": ["touch", str(marker)]}],
        "dollar target": [{"_target_": expr}],
        "dollar step": [expr],
        "dollar argument": [{"_target_": "ScaleIntensity", "minv": expr}],
        "Lambda": [{"_target_": "Lambda", "func": lam}],
        "monai Lambda": [{"_target_": "monai.transforms.Lambda", "func": lam}],
        "requires": [{"_target_": "ScaleIntensity", "_requires_": expr}],
        "mode": [{"_target_": "ScaleIntensity", "_mode_": "callable"}],
        "reference": [{"_target_": "ScaleIntensity", "minv": "@other"}],
        "nested in a list": [{"_target_": "NormalizeIntensity",
                              "subtrahend": [{"_target_": "os.system", "command": cmd}]}],
        "nested in a dict": [{"_target_": "ScaleIntensity", "factor": {"_target_": "os.system", "command": cmd}}],
        "Compose of payloads": [{"_target_": "Compose", "transforms": [{"_target_": "os.system", "command": cmd}]}],
        "exec": [{"_target_": "builtins.exec", "source": f"import os; os.system('{cmd}')"}],
        "second step": [{"_target_": "ScaleIntensity"}, {"_target_": "os.system", "command": cmd}],
    }


PAYLOAD_NAMES = list(_payloads(Path("m")))


@pytest.fixture
def good_file(tmp_path) -> Path:
    return segarch.save_model(_small_model(), tmp_path / "good.safetensors")


@pytest.mark.parametrize("name", ["os.system", "dollar target", "Lambda"])
def test_negative_control_monai_config_parser_runs_these_payloads(tmp_path, name):
    from monai.bundle import ConfigParser

    marker = tmp_path / "ran"
    config = _payloads(marker)[name]
    try:
        ConfigParser({"t": config}).get_parsed_content("t", instantiate=True)
        if name == "Lambda":
            from monai.transforms import Compose

            Compose(ConfigParser({"t": config}).get_parsed_content("t", instantiate=True))(np.zeros((1, 2, 2)))
    except Exception:
        pass
    assert marker.exists(), "the payload is live: the checks below guard against a real threat"


@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_each_payload_is_refused_at_load_model_and_never_runs(tmp_path, good_file, name):
    marker = tmp_path / "ran"
    steps = _payloads(marker)[name]
    evil = _with_metadata(good_file, tmp_path / "evil.safetensors", preprocessing=steps)
    index = 1 if name == "second step" else 0
    with pytest.raises(ValueError, match=rf"`preprocessing\[{index}\]` in '.*evil.safetensors'"):
        segarch.load_model(evil)
    with pytest.raises(ValueError, match=r"preprocessing\["):
        segarch.models.read_metadata(evil)
    with pytest.raises(ValueError, match=r"preprocessing\["):
        segarch.models.resolve(evil)  # what the CLI and the widgets call
    assert not marker.exists()


@pytest.mark.parametrize("changes", [
    {"options": {"features": [4, 8, 16], "norm": "$__import__('os').system('touch MARK')"}},
    {"options": {"features": [4, 8, 16], "act": {"_target_": "os.system", "command": "touch MARK"}}},
    {"options": {"features": [4, 8, 16], "norm": "@ref"}},
    {"prompt": {"size": "$__import__('os').system('touch MARK')"}},
    {"prompt": {"size": 64, "_target_": "os.system"}},
    {"arch": "$__import__('os').system('touch MARK')"},
    {"instance": {"decoder": "$__import__('os').system('touch MARK')"}},
    {"instance": {"decoder": "distance", "_target_": "os.system", "command": "touch MARK"}},
    {"instance": {"decoder": "distance", "seed_threshold": "$__import__('os').system('touch MARK')"}},
    {"instance": {"decoder": "distance", "bins": 10 ** 9}},
    {"instance": {"decoder": "distance", "seed_threshold": 1.5}},
    {"instance": "distance"},
])
def test_payloads_in_options_prompt_and_arch_are_refused(tmp_path, good_file, monkeypatch, changes):
    monkeypatch.chdir(tmp_path)
    evil = _with_metadata(good_file, tmp_path / "evil.safetensors", **changes)
    with pytest.raises(ValueError, match="refused|must be"):
        segarch.load_model(evil)
    assert not (tmp_path / "MARK").exists()


def test_a_model_whose_preprocessing_was_changed_in_memory_is_refused_before_saving_and_predicting(tmp_path):
    model = _small_model()
    model.preprocessing = [{"_target_": "os.system", "command": f"touch {tmp_path / 'ran'}"}]
    with pytest.raises(ValueError, match=r"`preprocessing\[0\]` in the model to save was refused"):
        segarch.save_model(model, tmp_path / "copy.safetensors")
    assert not (tmp_path / "copy.safetensors").exists()
    with pytest.raises(ValueError, match="not an allowed transform"):
        segarch.predict(model, np.zeros((32, 32), np.float32))
    assert not (tmp_path / "ran").exists()


def test_allowed_transforms_are_real_monai_classes_with_those_arguments():
    import inspect

    import monai.transforms

    from segarch.preprocessing import ALLOWED_TRANSFORMS

    for name, arguments in ALLOWED_TRANSFORMS.items():
        parameters = inspect.signature(getattr(monai.transforms, name).__init__).parameters
        assert set(arguments) <= set(parameters), (name, set(arguments) - set(parameters))


def test_plain_allowed_steps_still_load_and_apply(tmp_path, good_file):
    steps = [{"_target_": "monai.transforms.ScaleIntensityRange", "a_min": 0, "a_max": 100, "b_min": 0.0,
              "b_max": 1.0, "clip": True}, {"_target_": "GaussianSmooth", "sigma": [1.0, 0.5]}]
    model = segarch.load_model(_with_metadata(good_file, tmp_path / "ok.safetensors", preprocessing=steps))
    assert [s["_target_"] for s in model.preprocessing] == ["ScaleIntensityRange", "GaussianSmooth"]
    image = np.random.default_rng(3).uniform(0, 200, (1, 16, 16))
    from monai.transforms import GaussianSmooth

    expected = GaussianSmooth(sigma=[1.0, 0.5])(np.clip(image / 100, 0, 1).astype(np.float32))
    np.testing.assert_allclose(model.preprocess(image), np.asarray(expected), atol=1e-5)


@pytest.mark.parametrize("step,message", [
    ({"_target_": "GaussianSmooth", "sigma": 1e6}, "between 0.0 and 32.0"),
    ({"_target_": "MedianSmooth", "radius": 500}, "between 0 and 4"),
    ({"_target_": "ScaleIntensityRangePercentiles", "lower": 1, "upper": 99, "b_min": 0, "b_max": 1,
      "dtype": "float64"}, "'dtype' is not allowed"),
    ({"_target_": "ScaleIntensity", "minv": float("nan")}, "finite number"),
])
def test_out_of_bounds_arguments_are_refused(step, message):
    meta = _small_model().metadata() | {"preprocessing": [step]}
    with pytest.raises(ValueError, match=message):
        check_metadata(meta)


def test_absurd_layer_widths_are_refused_before_allocating(tmp_path, good_file):
    # The file holds a small network's tensors but declares a network of 60000-channel layers (many GB):
    # it is compared on the meta device and refused, naming the tensors, without building it for real.
    evil = _with_metadata(good_file, tmp_path / "wide.safetensors", options={"features": [60000, 60000, 60000]})
    with pytest.raises(ValueError, match="does not match architecture 'unet'.*with other shapes"):
        segarch.load_model(evil)
    evil = _with_metadata(good_file, tmp_path / "huge.safetensors", options={"features": [10 ** 9]})
    with pytest.raises(ValueError, match="out of bounds"):
        segarch.load_model(evil)
    evil = _with_metadata(good_file, tmp_path / "many.safetensors", out_channels=10 ** 7)
    with pytest.raises(ValueError, match="'out_channels' must be an integer from 1 to 4096"):
        segarch.load_model(evil)


# --- every entry point, as a user reaches it -----------------------------------------------------------------

def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    exe = shutil.which("segarch")
    command = [exe] if exe else [sys.executable, "-m", "segarch.cli"]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["os.system", "dollar target", "Lambda", "nested in a list", "requires"])
def test_the_cli_refuses_a_hostile_model_in_info_predict_and_train(tmp_path, good_file, name):
    import tifffile

    marker = tmp_path / "ran"
    evil = _with_metadata(good_file, tmp_path / "evil.safetensors", preprocessing=_payloads(marker)[name])
    image = tmp_path / "image.tif"
    tifffile.imwrite(image, np.random.default_rng(0).random((48, 48)).astype(np.float32))
    labels = tmp_path / "labels.tif"
    tifffile.imwrite(labels, (np.random.default_rng(1).random((48, 48)) > 0.5).astype(np.uint8))
    before = image.read_bytes()
    commands = {
        "info": ["info", str(evil)],
        "predict": ["predict", str(image), str(tmp_path / "out.zarr"), "--model", str(evil)],
        "train": ["train", str(image), str(labels), "--model", str(evil), "--out", str(tmp_path / "tuned.safetensors"),
                  "--steps", "2", "--device", "cpu"],
    }
    exe = shutil.which("segarch")
    prefix = [exe] if exe else [sys.executable, "-m", "segarch.cli"]
    running = {cmd: subprocess.Popen(prefix + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for cmd, args in commands.items()}  # side by side: each pays its imports
    for command, proc in running.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 2, (command, stdout, stderr)
        assert "preprocessing[0]" in stderr and "evil.safetensors" in stderr, (command, stderr)
        assert "Traceback" not in stderr
    assert not marker.exists()
    assert not (tmp_path / "out.zarr").exists() and not (tmp_path / "tuned.safetensors").exists()
    assert image.read_bytes() == before


def test_fine_tuning_through_the_api_refuses_the_file_so_the_payload_cannot_spread(tmp_path, good_file):
    marker = tmp_path / "ran"
    evil = _with_metadata(good_file, tmp_path / "evil.safetensors", preprocessing=_payloads(marker)["os.system"])
    rng = np.random.default_rng(2)
    with pytest.raises(ValueError, match=r"preprocessing\[0\]"):
        segarch.train(evil, rng.random((48, 48)).astype(np.float32), (rng.random((48, 48)) > 0.5).astype(np.uint8),
                      steps=2, device="cpu", out=tmp_path / "tuned.safetensors")
    assert not marker.exists() and not (tmp_path / "tuned.safetensors").exists()


@pytest.mark.gui
def test_the_segment_widget_refuses_a_hostile_model_file(make_napari_viewer, qtbot, tmp_path, good_file, monkeypatch):
    import napari_segarch._segment_widget as module
    from napari_segarch._segment_widget import SegmentWidget

    marker = tmp_path / "ran"
    evil = _with_metadata(good_file, tmp_path / "evil.safetensors", preprocessing=_payloads(marker)["Lambda"])
    messages = []
    monkeypatch.setattr(module, "_notify_error", messages.append)
    viewer = make_napari_viewer(show=False)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    viewer.add_image(np.random.default_rng(0).random((40, 40)).astype(np.float32), name="img")
    widget.image_combo.setCurrentText("img")
    widget.select_model("file")
    widget.file_edit.setText(str(evil))
    widget.segment_button.click()
    qtbot.waitUntil(lambda: widget.segment_button.isEnabled() and widget.worker is not None
                    and not widget.worker.is_running, timeout=120_000)
    assert len(messages) == 1 and "preprocessing[0]" in messages[0] and "not an allowed transform" in messages[0]
    assert "img segmentation" not in viewer.layers
    assert not marker.exists()


@pytest.mark.slow
def test_an_absurd_tile_is_refused_with_the_memory_estimate_before_anything_is_allocated(tmp_path):
    import zarr

    # A 40000² image that costs nothing (a lazy Zarr array of fill values): a 32768² tile would need
    # hundreds of GiB of activations; the run is refused with the estimate, and nothing is written.
    image = zarr.open_array(str(tmp_path / "huge.zarr"), mode="w", shape=(40000, 40000), chunks=(4096, 4096),
                            dtype="uint8", fill_value=0)
    model = segarch.pretrained.load("unet.nuclei2d")
    with pytest.raises(ValueError, match=r"`tile`=\(32768, 32768\) with `batch_size`=2: a batch of 2 tiles .* needs "
                                         r"about [0-9.]+ GiB on cpu .* pass a smaller `tile` \(e\.g\. [0-9]+\)"):
        segarch.predict(model, image, tile=32768, batch_size=2, device="cpu", out=tmp_path / "out.zarr")
    assert not (tmp_path / "out.zarr").exists()


def test_the_memory_estimate_counts_the_tensors_alive_at_once():
    from segarch.tiling.memory import forward_peak_bytes

    with torch.device("meta"):
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1))
    peak, out_shape = forward_peak_bytes(net, (2, 1, 64, 48))
    assert out_shape == (2, 2, 64, 48)
    pixels = 2 * 64 * 48 * 4  # bytes of one float32 channel over the batch
    # The peak is during the ReLU: the input, the first conv's output and the ReLU's output are alive.
    assert peak == pixels * (1 + 4 + 4)
