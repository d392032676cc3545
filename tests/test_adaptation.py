"""``segarch.train(..., adapt_to=...)``: MADAN's feature-level adversarial alignment in the one training loop.

Real training for a few steps on generated nuclei; the target images are fresh, of another style (inverted
contrast). Bad input (no target image, other channels, a task that cannot adapt) is refused with the
parameter's name before anything is written.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import tifffile
import torch

import segarch
from segarch.cli import main
from segarch.synthetic import Conditions, nuclei
from segarch.training.adaptation import DomainAdaptation, DomainDiscriminator, SpatialDomainDiscriminator

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
    # Training is deterministic, so the difference is the alignment's (when MADAN's schedule let it push).
    assert torch.equal(_weights(plain), _weights(again))
    assert "Adapted to unlabelled target images" in adapted.description
    aligned = int(re.search(r"the alignment counted on (\d+) of 4 steps", adapted.description).group(1))
    assert aligned <= 2  # not in the first half (the source first)
    if aligned:
        assert not torch.allclose(_weights(plain), _weights(adapted))
    assert segarch.predict(adapted, target[0], device="cpu").shape == target[0].shape


def test_the_discriminator_learns_to_tell_confident_outputs_from_unsure_ones():
    # Per place, source outputs are confident and target outputs unsure (fresh random maps): what a network's
    # outputs on a familiar and an unfamiliar kind of image look like. The loss falls from ln 2 (a coin toss).
    torch.manual_seed(int(np.random.default_rng().integers(1000)))
    net = DomainDiscriminator(2, 2)
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.99))
    losses = []
    for _ in range(150):
        source = torch.softmax(6 * torch.randn(4, 2, 24, 24), 1)
        target = torch.softmax(0.5 * torch.randn(4, 2, 24, 24), 1)
        scores = net(torch.cat([source, target]))
        labels = torch.cat([torch.zeros(4, 1, 24, 24), torch.ones(4, 1, 24, 24)])
        loss = torch.nn.functional.binary_cross_entropy_with_logits(scores, labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss))
    assert abs(losses[0] - math.log(2)) < 0.05 and np.mean(losses[-10:]) < 0.45, losses


def test_the_discriminator_judges_each_place_on_its_own_in_2d_and_3d():
    for dims, size in ((2, (32, 48)), (3, (16, 32, 32))):
        net = DomainDiscriminator(dims, 3, width=8).eval()
        probabilities = torch.softmax(torch.randn(2, 3, *size), 1)
        out = net(probabilities)
        assert out.shape == (2, 1, *size)
        # 1x1 convolutions: a place's logit depends on its own probabilities only
        changed = probabilities.clone()
        changed[(0, slice(None)) + (0,) * dims] = torch.tensor([1.0, 0.0, 0.0])
        moved = net(changed) != out
        assert moved.sum() <= 1 and not moved[(0, 0) + (1,) * dims]
    assert [m.out_channels for m in DomainDiscriminator(2, 2).modules() if isinstance(m, torch.nn.Conv2d)] == [
        512, 256, 1]


def _blobs(n: int, size: int) -> torch.Tensor:
    """Foreground probabilities of round blobs: smooth noise made confident, as a model's outputs on nuclei."""
    smooth = torch.nn.functional.interpolate(torch.randn(n, 1, size // 8, size // 8), size=(size, size),
                                             mode="bilinear", align_corners=False)
    foreground = torch.sigmoid(8 * smooth)
    return torch.cat([1 - foreground, foreground], 1)


def test_only_the_spatial_discriminator_tells_blobs_from_the_same_values_scattered():
    # Target outputs here are the source's values at shuffled places: the same per-place distribution, but
    # speckled instead of blobs (structurally wrong outputs). Per place nothing tells them apart.
    torch.manual_seed(int(np.random.default_rng().integers(1000)))
    final = {}
    for kind in (SpatialDomainDiscriminator, DomainDiscriminator):
        net = kind(2, 2, width=16)
        optimiser = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.9, 0.99))
        losses = []
        for _ in range(80):
            source = _blobs(4, 32)
            flat = _blobs(4, 32).reshape(4, 2, -1)
            target = flat[:, :, torch.randperm(flat.shape[-1])].reshape(4, 2, 32, 32)
            source_score, target_score = net(source), net(target)
            loss = 0.5 * (torch.nn.functional.binary_cross_entropy_with_logits(source_score,
                                                                               torch.zeros_like(source_score))
                          + torch.nn.functional.binary_cross_entropy_with_logits(target_score,
                                                                                 torch.ones_like(target_score)))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            losses.append(float(loss))
        final[kind.__name__] = float(np.mean(losses[-10:]))
    assert final["SpatialDomainDiscriminator"] < 0.3 and final["DomainDiscriminator"] > 0.6, final
    assert SpatialDomainDiscriminator(2, 2)(torch.rand(1, 2, 32, 32)).shape == (1, 1, 1, 1)


def test_adapt_discriminator_spatial_reaches_the_discriminator_and_its_push_reaches_the_network():
    """The option's wiring, on real training steps: ``adapt_discriminator="spatial"`` builds AdaptSegNet's
    discriminator with its weight (0.01), the alignment loss it gives is back-propagated into the network, and
    training with it changes the model (its quality is measured by ``benchmarks/adaptation.py``, not here)."""
    from segarch.models.model import Model
    from segarch.training.adaptation import ACCURACY_GATE
    from segarch.training.config import TrainConfig
    from segarch.training.semantic import SemanticTask

    seed = int(np.random.default_rng().integers(1000))
    images, labels = _data(seed)
    target, _ = _data(seed + 1, inverted=True)
    config = TrainConfig(steps=2, adapt_to=target, adapt_discriminator="spatial")
    task = SemanticTask(config)
    task.input_size = (32, 32)
    model = Model.from_zoo("unet", **SMALL)
    adaptation = DomainAdaptation(target, model, task, config, torch.device("cpu"))
    assert adaptation.weight == 0.01 and adaptation.discriminator_type is SpatialDomainDiscriminator
    adaptation.alignment_loss(model.network, 2)  # step 1: the source alone; builds the discriminator
    assert isinstance(adaptation.discriminator, SpatialDomainDiscriminator)
    source = torch.from_numpy(images[0][None, None, :32, :32].astype(np.float32)).repeat(2, 1, 1, 1)
    adaptation.discriminator_step(model.network(source))
    adaptation.accuracies[:] = [ACCURACY_GATE + 0.2]  # a discriminator that tells the domains apart
    term = adaptation.alignment_loss(model.network, 2)  # step 2: aligned
    assert term.requires_grad and float(term) > 0
    before = [p.grad.clone() for p in adaptation.discriminator.parameters()]
    model.network.zero_grad(set_to_none=True)
    term.backward()
    # the network's push only: the discriminator's own gradients (of its step) are untouched
    assert all(torch.equal(b, p.grad) for b, p in zip(before, adaptation.discriminator.parameters()))
    assert sum(float(p.grad.abs().sum()) for p in model.network.parameters() if p.grad is not None) > 0
    assert TrainConfig(adapt_to=target, adapt_discriminator="spatial", adapt_weight=0.5).adapt_weight == 0.5

    plain, _ = _train(images, labels, 12)
    adapted, steps = _train(images, labels, 12, adapt_to=target, adapt_discriminator="spatial")
    assert all(e.domain_loss is not None and math.isfinite(e.domain_loss) for e in steps)
    assert "weight 0.01, AdaptSegNet's spatial discriminator" in adapted.description
    aligned = int(re.search(r"the alignment counted on (\d+) of 12 steps", adapted.description).group(1))
    if aligned:
        assert not torch.allclose(_weights(plain), _weights(adapted))
    assert segarch.predict(adapted, images[0], device="cpu").shape == images[0].shape
    default, _ = _train(images, labels, 1, adapt_to=target)
    assert "weight 0.1, MADAN's per-place discriminator" in default.description


def test_the_spatial_discriminator_refuses_small_patches_and_unknown_names():
    images, labels = _data(5, n=1)
    with pytest.raises(ValueError, match=r"`adapt_discriminator`='spatial' needs patches of at least 32 px.*"
                                         r"`patch`=\(16, 16\)"):
        segarch.train("unet", images, labels, options=SMALL, steps=1, patch=16, batch_size=2, val_fraction=0,
                      device="cpu", adapt_to=images, adapt_discriminator="spatial")
    with pytest.raises(ValueError, match=r"`adapt_discriminator` must be one of \('per-place', 'spatial'\), "
                                         r"got 'layout'"):
        _train(images, labels, 1, adapt_to=images, adapt_discriminator="layout")


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
               "--adapt-weight", "0.05", "--adapt-discriminator", "spatial", "--out", str(out)])
    assert rc == 0 and out.is_file()
    assert "weight 0.05, AdaptSegNet's spatial discriminator" in segarch.load_model(out).description
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["train", str(tmp_path / "im.tif"), str(tmp_path / "lab.tif"), "--model", "unet", "--steps", "2",
               "--adapt-to", str(empty), "--out", str(tmp_path / "never.safetensors")])
    err = capsys.readouterr().err
    assert rc == 2 and "--adapt-to" in err and "holds no" in err
    assert not (tmp_path / "never.safetensors").exists()
    for flag, value in (("--adapt-discriminator", "spatial"), ("--adapt-weight", "0.05")):  # without --adapt-to
        rc = main(["train", str(tmp_path / "im.tif"), str(tmp_path / "lab.tif"), "--model", "unet", "--steps", "2",
                   flag, value, "--out", str(tmp_path / "never.safetensors")])
        err = capsys.readouterr().err
        assert rc == 2 and f"{flag}" in err and "applies with --adapt-to only" in err, err
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
    for name, value in (("adapt_discriminator", "spatial"), ("adapt_weight", 0.05)):  # nothing to align: said
        with pytest.raises(ValueError, match=f"`{name}`=.* applies with `adapt_to` only"):
            _train(images, labels, 1, **{name: value})
    with pytest.raises(ValueError, match="`adapt_discriminator` must be one of"):
        _train(images, labels, 1, adapt_to=images, adapt_discriminator="patch")
    with pytest.raises(ValueError, match="`adapt_to` applies to semantic and instance training, not to 'interactive'"):
        segarch.train("dextr_light", images, labels, steps=1, val_fraction=0, adapt_to=images)


def test_an_instance_model_adapts_too():
    images, labels = _data(3)
    target, _ = _data(4, inverted=True)
    model, steps = _train(images, labels, 2, task="instance", adapt_to=target)
    assert all(math.isfinite(e.domain_loss) for e in steps)
    assert "Adapted to unlabelled target images" in model.description


def test_the_network_learns_the_source_first_and_is_pushed_only_by_a_discriminator_that_tells_the_domains_apart():
    """MADAN's schedule: no adversarial term in the first ALIGN_FROM of the steps (the discriminator learns
    meanwhile), then only while the discriminator's accuracy over the last steps is above ACCURACY_GATE."""
    from segarch.models.model import Model
    from segarch.training.adaptation import ACCURACY_GATE, ALIGN_FROM, DomainAdaptation
    from segarch.training.config import TrainConfig
    from segarch.training.semantic import SemanticTask

    torch.manual_seed(0)
    images, _ = _data(21, n=1)
    target, _ = _data(22, n=1, inverted=True)
    model = Model.from_zoo("unet", **SMALL)
    steps = 10
    config = TrainConfig(steps=steps, adapt_to=target)
    task = SemanticTask(config)
    task.input_size = (32, 32)
    adaptation = DomainAdaptation(target, model, task, config, torch.device("cpu"))
    source = torch.from_numpy(images[0][None, None, :32, :32].astype(np.float32)).repeat(2, 1, 1, 1)
    start = int(ALIGN_FROM * steps)
    for step in range(1, steps + 1):
        if step == start + 3:  # the discriminator has become sure / unsure of the domains
            adaptation.accuracies[-20:] = [ACCURACY_GATE + 0.1] * len(adaptation.accuracies[-20:])
        if step == start + 5:
            adaptation.accuracies[-20:] = [ACCURACY_GATE - 0.1] * len(adaptation.accuracies[-20:])
        term = adaptation.alignment_loss(model.network, 2)
        accuracy = np.mean(adaptation.accuracies[-20:])
        expected = step > start and accuracy > ACCURACY_GATE
        assert (float(term) > 0) == expected and term.requires_grad == expected, (step, float(term), accuracy)
        if expected:
            term.backward()  # the push reaches the network
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.network.parameters())
            model.network.zero_grad()
        value = adaptation.discriminator_step(model.network(source))
        assert math.isfinite(value) and 0 <= adaptation.accuracies[-1] <= 1
    assert adaptation.aligned_steps >= 2


def test_the_spatial_discriminator_raises_the_dice_on_blurred_low_light_images():
    """Quality on a short run (about 2-3 CPU-minutes): the case ``benchmarks/adaptation.py`` prints. A U-Net
    learns generated nuclei of one microscope; the same microscope out of focus and starved of light (its
    ``blurred`` style) is the target. The spatial discriminator raised the target Dice on every seed measured:
    +0.038 to +0.103 on the pre-registered run's images (5 seeds), +0.010 to +0.059 on the first images (3 seeds),
    and, on three fresh image draws of this test (2 seeds each, 4 test images), +0.008 to +0.079, pair means
    +0.017, +0.024, +0.049; source Dice cost at most 0.013. On 8 test images, 20 seeds on 9 image draws gave
    +0.008 to +0.127 (source cost at most 0.018), but a full-suite run drew two seeds at +0.003 and -0.001 (images
    134540; four other seeds on those images: +0.008 to +0.127): a seed's gain can be about nothing. Here: 3 fresh
    training seeds on fresh images, 8 test images; most seeds gain (a median above 0 fails when two of three do
    not: about 0.6% if 1 seed in 22 does not), none loses much, the source keeps its Dice."""
    from dataclasses import replace

    from segarch.training.metrics import dice_per_class

    source = Conditions(radius=(5.0, 9.0), coverage=0.3, brightness=(0.6, 1.0), texture=0.1, background=0.05,
                        gradient=0.05, haze=0.05, blur=1.0, photons=500.0, read_noise=0.01)
    blurred = replace(source, blur=3.0, photons=12.0, read_noise=0.08)
    rng = np.random.default_rng()
    data = int(rng.integers(200, 100_000)) * 10

    def images(conditions, first: int, n: int):
        pairs = [nuclei((96, 96), seed=first + i, conditions=conditions) for i in range(n)]
        return [image for image, _ in pairs], [labels for _, labels in pairs]

    train_images, train_labels = images(source, data, 6)
    unlabelled, _ = images(blurred, data + 1_000_000, 6)
    tests = {"blurred": images(blurred, data + 2_000_000, 8), "source": images(source, data + 2_000_000, 8)}

    def dice(model, style: str) -> float:
        test_images, test_labels = tests[style]
        preds = [np.asarray(segarch.predict(model, image, output="labels", device="cpu")).reshape(-1)
                 for image in test_images]
        truth = [(t > 0).reshape(-1).astype(np.int64) for t in test_labels]
        pred, true = np.concatenate(preds), np.concatenate(truth)
        return float(dice_per_class(pred, true, np.ones(pred.size, bool), num_classes=2)[1])

    gains, costs, aligned = [], [], []
    for seed in rng.choice(np.arange(15, 10_000), size=3, replace=False):
        settings = dict(options={"features": (8, 16, 32, 64)}, steps=200, patch=48, batch_size=4, seed=int(seed),
                        lr=2e-3, device="cpu", val_fraction=0)
        plain = segarch.train("unet", train_images, train_labels, **settings)
        adapted = segarch.train("unet", train_images, train_labels, adapt_to=unlabelled,
                                adapt_discriminator="spatial", **settings)
        gains.append(dice(adapted, "blurred") - dice(plain, "blurred"))
        costs.append(dice(plain, "source") - dice(adapted, "source"))
        aligned.append(re.search(r"the alignment counted on (\d+) of", adapted.description).group(1))
    assert np.median(gains) > 0 and min(gains) >= -0.02 and max(costs) <= 0.025, (data, gains, costs, aligned)
