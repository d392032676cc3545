"""One device rule everywhere: ``segarch.devices.resolve_device`` (strict), used by predict, train and prompts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import segarch
from segarch.devices import available_devices, resolve_device


def test_auto_and_named_devices():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(torch.device("cpu"))
    assert available_devices()[:2] == ["auto", "cpu"]


@pytest.mark.parametrize("device", [f"cuda:{torch.cuda.device_count()}", "mps", "gpu", 3.5])
def test_a_device_that_is_not_here_is_refused_naming_what_is(device):
    if device == "mps" and "mps" in available_devices():
        pytest.skip("this machine has MPS")
    with pytest.raises(ValueError, match="`device`"):
        resolve_device(device)


def test_every_entry_point_uses_the_strict_rule():
    absent = f"cuda:{torch.cuda.device_count()}"
    model = segarch.Model.from_zoo("unet", features=(4, 8, 16))
    with pytest.raises(ValueError, match=r"`device`='cuda:\d+' is not available here"):
        segarch.predict(model, np.zeros((32, 32), np.float32), device=absent)
    with pytest.raises(ValueError, match=r"`device`='cuda:\d+' is not available here"):
        segarch.train("unet", np.zeros((32, 32), np.float32), np.ones((32, 32), np.uint8), steps=1, device=absent)
    clicker = segarch.Model.from_zoo("dextr_light", in_channels=2, features=(4, 8, 16, 32))
    image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    with pytest.raises(ValueError, match=r"`device`='cuda:\d+' is not available here"):
        segarch.prompts.segment_from_points(clicker, image, [[5, 20], [35, 20], [20, 5], [20, 35]], device=absent)


def test_the_old_training_name_works_and_warns():
    from segarch.training import resolve_device as old

    with pytest.warns(FutureWarning, match=r"segarch.training.resolve_device is deprecated: use "
                                           r"segarch.devices.resolve_device"):
        assert old("cpu") == torch.device("cpu")
