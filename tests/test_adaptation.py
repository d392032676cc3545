"""``segarch.train(..., adapt_to=...)``: MADAN's feature-level adversarial alignment in the one training loop.

Real training for a few steps on generated nuclei; the target images are fresh, of another style (inverted
contrast). Bad input (no target image, other channels, a task that cannot adapt) is refused with the
parameter's name before anything is written.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import tifffile
import torch

import segarch
from segarch.cli import main
from segarch.synthetic import Conditions, nuclei
from segarch.training.adaptation import MIN_PATCH, DomainDiscriminator

pytestmark = pytest.mark.slow  # trains models

EASY = Conditions(radius=(4.0, 7.0), coverage=0.3, photons=300.0, blur=1.0)
SMALL = {"features": (4, 8, 16, 32, 64)}  # a U-Net dividing by 16: patches of 32 fit the discriminator


def _data(seed: int, n: int = 2, size: int = 48, inverted: bool = False):
    pairs = [nuclei((size, size), seed=seed * 100 + i, conditions=EASY) for i in range(n)]
    images = [image.max() - image if inverted else image for image, _ in pairs]
    return images, [labels for _, labels in pairs]


def _train(images, labels, steps: int, **settings):
    events = []
    model = segarch.train("unet", images, labels, options=SMALL, steps=steps, patch=32, batch_size=2,
                          val_fraction=0, device="cpu", progress=events.append, **settings)
    return model, [e for e in events if e.kind == "step"]


def _weights(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.network.parameters()])


def test_adaptation_takes_real_steps_with_a_finite_discriminator_loss_and_changes_the_model():
    seed = int(np.random.default_rng().integers(1000))  # fresh images each run
    images, labels = _data(seed)
    target, _ = _data(seed + 1, inverted=True)
    plain, plain_steps = _train(images, labels, 4)
    again, _ = _train(images, labels, 4)
    adapted, steps = _train(images, labels, 4, adapt_to=target)
    assert [e.step for e in steps] == [1, 2, 3, 4]
    assert all(e.domain_loss is not None and math.isfinite(e.domain_loss) and e.domain_loss > 0 for e in steps)
    assert all(e.domain_loss is None for e in plain_steps)
    assert "discriminator" in steps[-1].message
    # Training is deterministic, so the difference is the alignment's.
    assert torch.equal(_weights(plain), _weights(again))
    assert not torch.allclose(_weights(plain), _weights(adapted))
    assert "Adapted to unlabelled target images" in adapted.description
    assert segarch.predict(adapted, target[0], device="cpu").shape == target[0].shape


def test_the_discriminator_learns_to_tell_the_domains_apart_when_the_network_does_not_fight():
    # A trained network (the shipped nuclei U-Net) gives different outputs on inverted images; with a negligible
    # alignment weight it does not fight back, and the discriminator's loss falls from ln 2 (a coin toss).
    images, labels = _data(7, n=2)
    target, _ = _data(8, inverted=True)
    events = []
    segarch.train("unet.nuclei2d", images, labels, steps=12, patch=32, batch_size=2, val_fraction=0, device="cpu",
                  adapt_to=target, adapt_weight=1e-9, lr=1e-3, progress=events.append)
    losses = [e.domain_loss for e in events if e.kind == "step"]
    assert abs(losses[0] - math.log(2)) < 0.05
    assert min(losses) < 0.5


def test_the_discriminator_is_fully_convolutional_in_2d_and_3d():
    for dims, size in ((2, (32, 48)), (3, (16, 32, 32))):
        net = DomainDiscriminator(dims, 3, width=4)
        out = net(torch.softmax(torch.randn(2, 3, *size), 1))
        assert out.shape == (2, 1, *(s // 16 for s in size))


def test_adapt_to_a_volume_with_a_3d_model():
    volume, labels = nuclei((16, 32, 32), seed=3, conditions=EASY)
    target, _ = nuclei((16, 32, 32), seed=4, conditions=EASY)
    events = []
    model = segarch.train("unet", volume, labels, options={"features": (4, 8, 16, 32, 64)}, steps=2, patch=16,
                          batch_size=1, val_fraction=0, device="cpu", adapt_to=target.max() - target,
                          progress=events.append)
    assert model.spatial_dims == 3
    assert all(math.isfinite(e.domain_loss) for e in events if e.kind == "step")


def test_the_command_line_adapts_to_a_folder(tmp_path, capsys):
    images, labels = _data(11, n=1, size=48)
    target, _ = _data(12, n=2, inverted=True)
    tifffile.imwrite(tmp_path / "im.tif", images[0])
    tifffile.imwrite(tmp_path / "lab.tif", labels[0])
    folder = tmp_path / "other_microscope"
    folder.mkdir()
    for i, image in enumerate(target):
        tifffile.imwrite(folder / f"t{i}.tif", image)
    out = tmp_path / "adapted.safetensors"
    rc = main(["train", str(tmp_path / "im.tif"), str(tmp_path / "lab.tif"), "--model", "unet", "--options",
               '{"features": [4, 8, 16, 32, 64]}', "--patch", "32", "--steps", "2", "--adapt-to", str(folder),
               "--adapt-weight", "0.05", "--out", str(out)])
    assert rc == 0 and out.is_file()
    assert "weight 0.05" in segarch.load_model(out).description
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["train", str(tmp_path / "im.tif"), str(tmp_path / "lab.tif"), "--model", "unet", "--steps", "2",
               "--adapt-to", str(empty), "--out", str(tmp_path / "never.safetensors")])
    err = capsys.readouterr().err
    assert rc == 2 and "--adapt-to" in err and "holds no" in err
    assert not (tmp_path / "never.safetensors").exists()


@pytest.mark.parametrize("target, message", [
    ([], "`adapt_to` is empty"),
    ("missing_folder/none.tif", "`adapt_to`: no file or folder"),
    (np.zeros((48, 48, 3), np.float32), "colour channels"),
    (np.zeros((2, 48, 48), np.float32), None),  # read as 2 slices of a stack: trains (a 2D model loops over Z)
])
def test_bad_target_images_are_refused_naming_adapt_to(tmp_path, target, message):
    images, labels = _data(5, n=1)
    out = tmp_path / "never.safetensors"
    if message is None:
        _train(images, labels, 1, adapt_to=target)
        return
    with pytest.raises(ValueError, match=message):
        _train(images, labels, 1, adapt_to=target, out=out)
    assert not out.exists()


def test_target_images_of_other_channels_are_refused():
    rgb = [np.random.default_rng(0).random((3, 48, 48)).astype(np.float32)]
    images, labels = _data(5, n=1)
    with pytest.raises(ValueError, match=r"`adapt_to`.*2 channel\(s\).*`in_channels`=3"):
        segarch.train("unet", rgb, [labels[0]], options=SMALL, steps=1, patch=32, val_fraction=0,
                      adapt_to=[np.zeros((2, 48, 48), np.float32)], axes="CYX")


def test_adaptation_options_are_checked():
    images, labels = _data(5, n=1)
    for weight in (0, -1.0, "0.1", True, math.inf):
        with pytest.raises(ValueError, match="`adapt_weight` must be a positive number"):
            _train(images, labels, 1, adapt_to=images, adapt_weight=weight)
    with pytest.raises(ValueError, match=f"at least {MIN_PATCH} pixels"):
        segarch.train("unet", images, labels, options={"features": (4, 8, 16)}, steps=1, patch=8,
                      val_fraction=0, adapt_to=images)
    with pytest.raises(ValueError, match="`adapt_to` applies to semantic and instance training, not to 'interactive'"):
        segarch.train("dextr_light", images, labels, steps=1, val_fraction=0, adapt_to=images)


def test_an_instance_model_adapts_too():
    images, labels = _data(3)
    target, _ = _data(4, inverted=True)
    model, steps = _train(images, labels, 2, task="instance", adapt_to=target)
    assert all(math.isfinite(e.domain_loss) for e in steps)
    assert "Adapted to unlabelled target images" in model.description
