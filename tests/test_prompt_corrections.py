"""Corrective clicks after the extreme points: the API, its errors, the click simulation and iterative training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import segarch
from segarch import pretrained
from segarch.prompts import extreme_points, object_scene, segment_from_points
from segarch.prompts.clicks import next_click
from segarch.prompts.evaluate import click_curve, iou
from segarch.prompts.recipe import crop_box
from segarch.prompts.segment import settings_for
from segarch.prompts.synthetic import anisotropic_scene
from segarch.training import with_corrections
from segarch.training.corrections import simulate_corrections

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def extreme_only():
    """A model that takes extreme points only (the corrections channels stripped from nothing: a fresh network)."""
    return segarch.Model.from_zoo("dextr_light", spatial_dims=2, in_channels=2, out_channels=2,
                                  features=[4, 8, 16, 32], bins=[1, 2])


@pytest.fixture(scope="module")
def corrected():
    return pretrained.load("dextr_light.clicks2d")


def _object(seed, shape=(160, 160)):
    image, labels = object_scene(shape, seed=seed)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return image, labels == int(sizes.argmax())


def test_with_corrections_adds_three_zero_channels_and_answers_as_before(extreme_only):
    wider = with_corrections(extreme_only)
    assert (wider.in_channels, extreme_only.in_channels) == (5, 2)
    assert settings_for(wider).corrections and not settings_for(extreme_only).corrections
    image, mask = _object(int(np.random.default_rng().integers(10_000, 20_000)))
    points = extreme_points(mask)
    before = segment_from_points(extreme_only, image, points, threshold=0.5)
    after = segment_from_points(wider, image, points)
    np.testing.assert_array_equal(before, after)
    # The clicks reach the network: a click changes the first layer's input and, with trained weights, the mask.
    first = next(m for m in wider.network.modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 5 and float(first.weight.detach()[:, 2:].abs().max()) == 0.0
    assert with_corrections(wider).in_channels == 5  # already there: unchanged


def test_a_saved_corrections_model_loads_with_its_recipe(extreme_only, tmp_path):
    wider = with_corrections(extreme_only)
    segarch.save_model(wider, tmp_path / "m.safetensors")
    back = segarch.load_model(tmp_path / "m.safetensors")
    assert back.prompt["corrections"] is True and back.in_channels == 5


def test_bad_corrections_give_clear_errors_and_nothing_changes(extreme_only, corrected):
    image, mask = _object(7)
    points = extreme_points(mask)
    start, stop = crop_box(points, mask.shape, settings_for(corrected))
    previous = segment_from_points(corrected, image, points)
    kept = previous.copy()
    with pytest.raises(ValueError, match="trained with corrective clicks"):
        segment_from_points(extreme_only, image, points, positive=[points[0]])
    with pytest.raises(ValueError, match="no object yet"):
        segment_from_points(corrected, image, points, negative=[points[0]])
    with pytest.raises(ValueError, match="no object yet"):
        segment_from_points(corrected, image, points, negative=[points[0]], previous=np.zeros_like(mask))
    with pytest.raises(ValueError, match=r"`positive`\[0\] = \(170.0, 3.0\) lies outside the image"):
        segment_from_points(corrected, image, points, positive=[[170, 3]], previous=previous)
    outside = [stop[0] + 2 if stop[0] + 2 < 160 else start[0] - 3, points[0][1]]
    with pytest.raises(ValueError, match=r"`negative`\[0\].*outside the current object's crop"):
        segment_from_points(corrected, image, points, negative=[outside], previous=previous)
    with pytest.raises(ValueError, match=r"`positive` clicks must have shape \(N, 2\)"):
        segment_from_points(corrected, image, points, positive=[[1, 2, 3]], previous=previous)
    with pytest.raises(ValueError, match=r"`previous` must be the object's mask over the whole image"):
        segment_from_points(corrected, image, points, previous=previous[:10])
    np.testing.assert_array_equal(previous, kept)


def test_next_click_goes_to_the_centre_of_the_largest_error():
    rng = np.random.default_rng()
    truth = np.zeros((40, 50), bool)
    y, x = rng.integers(12, 20), rng.integers(12, 30)
    truth[y - 8:y + 9, x - 8:x + 9] = True
    prediction = truth.copy()
    prediction[y - 4:y + 5, x - 4:x + 5] = False        # a missed 9 x 9 hole: the largest error
    prediction[35:38, 45:48] = True                     # a small false positive
    point, positive = next_click(prediction, truth)
    assert positive and tuple(point) == (y, x)          # the hole's centre
    prediction[y - 4:y + 5, x - 4:x + 5] = True
    point, positive = next_click(prediction, truth)
    assert not positive and tuple(point) == (36, 46)
    assert next_click(truth, truth) is None


def test_simulated_corrections_put_clicks_on_the_errors_of_the_network(extreme_only):
    wider = with_corrections(extreme_only)
    settings = settings_for(wider)
    rng = np.random.default_rng(int(np.random.default_rng().integers(1 << 30)))
    x = torch.rand(4, 5, 64, 64)
    x[:, 2:] = 0
    y = torch.zeros(4, 1, 64, 64, dtype=torch.long)
    y[:, :, 10:50, 20:40] = 1
    for _ in range(8):  # the number of iterations is random: some of the draws must add clicks
        out = simulate_corrections(wider.network, x, y, rng, settings)
        assert torch.equal(out[:, :2], x[:, :2])  # image and extreme points untouched
        if out[:, 2:4].abs().sum() == 0:  # 0 iterations drawn: a plain extreme-point batch
            assert out[:, 4].abs().sum() == 0
            continue
        with torch.no_grad():
            first = (torch.softmax(wider.network.eval()(x), 1)[:, 1] > 0.5).float()
        for b in range(4):
            assert out[b, 2].max() > 0.99 or out[b, 3].max() > 0.99  # each example got a click
            if out[b, 2].max() > 0.99:  # a positive click peaks on the object
                peak = np.unravel_index(int(out[b, 2].argmax()), (64, 64))
                assert y[b, 0][peak] == 1
            if out[b, 3].max() > 0.99:
                peak = np.unravel_index(int(out[b, 3].argmax()), (64, 64))
                assert y[b, 0][peak] == 0
        assert set(torch.unique(out[:, 4]).tolist()) <= {0.0, 1.0}
        assert first.shape == out[:, 4].shape
        break
    else:
        pytest.fail("no draw of 8 simulated a correction")


def test_iterative_training_runs_through_segarch_train_and_keeps_the_recipe(tmp_path):
    scenes = [object_scene((96, 96), seed=s) for s in range(4)]
    start = with_corrections(segarch.Model.from_zoo("dextr_light", spatial_dims=2, in_channels=2, out_channels=2,
                                                    features=[4, 8, 16, 32], bins=[1, 2]))
    model = segarch.train(start, [s[0] for s in scenes], [s[1] for s in scenes], steps=6, batch_size=4, seed=3,
                          out=tmp_path / "c.safetensors")
    assert model.in_channels == 5 and model.prompt["corrections"] is True
    loaded = segarch.load_model(tmp_path / "c.safetensors")
    image, mask = _object(11, (96, 96))
    pts = extreme_points(mask)
    pred = segment_from_points(loaded, image, pts)
    click = next_click(pred, mask)
    if click is not None:
        kind = "positive" if click[1] else "negative"
        out = segment_from_points(loaded, image, pts, previous=pred, **{kind: [click[0]]})
        assert out.shape == mask.shape


def test_anisotropic_scene_has_thick_slices():
    image, labels = anisotropic_scene((8, 48, 48), z_spacing=3, seed=4)
    full_image, full_labels = object_scene((24, 48, 48), seed=4)
    np.testing.assert_allclose(image[2], full_image[6:9].mean(0), rtol=1e-5)
    np.testing.assert_array_equal(labels, full_labels[1::3])
    with pytest.raises(ValueError, match="z_spacing"):
        anisotropic_scene((8, 48, 48), z_spacing=0)


def test_shipped_2d_model_improves_with_corrections_on_fresh_objects(corrected):
    assert settings_for(corrected).corrections
    seed = int(np.random.default_rng().integers(20_000, 30_000))
    # 60 objects (up to): on 15 a CI draw went 0.924 -> 0.942 / 0.940 / 0.938 (about 1 draw in 10 dipped). Over 35
    # measured draws of 60: first IoU 0.889 at least, the first click +0.007 at least, a later one -0.007 at worst
    # (0.952 -> 0.945), three clicks closed 18% of the gap to a perfect mask at least, NoC@90 at most 6.42.
    c = click_curve(corrected, scenes=8, seed=seed, max_objects=60)
    ious = c["mean_iou"]
    # The first click helps, later ones do no real harm, and three close an eighth of the gap at least.
    steps = np.diff(ious)
    assert ious[0] >= 0.85 and steps[0] > 0 and steps.min() >= -0.015, (seed, ious)
    assert ious[3] >= ious[0] + (1 - ious[0]) / 8, (seed, ious)
    assert c["noc90"] <= 7.0, (seed, c["noc90"])
    assert iou(np.ones(3, bool), np.ones(3, bool)) == 1.0


def test_shipped_3d_model_improves_with_corrections_on_fresh_volumes():
    # The card (20 volumes, 99 objects): 0.830 -> 0.851 / 0.856 / 0.863 after 1 / 2 / 3 corrections. Per object the
    # outcome varies widely: over 181 measured objects 74% were better after three corrections, the mean gain +0.030,
    # and on 8 objects the mean fell in 2 draws of 9 (0.906 -> 0.890). So 32 objects, and what 20000 resampled sets
    # of 32 held in all but 0.3%: the extreme points alone give a usable mask, the corrections gain on average, and
    # most objects end better.
    model = pretrained.load("dextr_light.clicks3d")
    assert settings_for(model).corrections and model.spatial_dims == 3 and model.pixel_size == [1.0, 1.0, 1.0]
    seed = int(np.random.default_rng().integers(20_000, 30_000))
    # 6 extreme points + 3 corrections: no clicks past what the test reads
    c = click_curve(model, scenes=6, shape=(48, 96, 96), seed=seed, max_objects=32, max_clicks=9)
    ious = c["mean_iou"]
    better = np.mean([curve[3] > curve[0] for curve in c["curves"]])
    assert c["objects"] >= 20 and ious[0] >= 0.65, (seed, c["objects"], ious)
    assert np.mean(ious[1:]) >= ious[0] - 0.005 and better >= 0.5, (seed, ious, better)


def test_click_curve_on_given_scenes_is_the_curve_of_the_same_generated_scenes(corrected):
    from segarch.prompts.evaluate import click_curve_on

    seed = int(np.random.default_rng().integers(20_000, 30_000))
    generated = click_curve(corrected, scenes=1, seed=seed, shape=(96, 96), max_objects=3)
    given = click_curve_on(corrected, [object_scene((96, 96), seed=seed)], max_objects=3)
    assert given["objects"] == generated["objects"] == 3
    assert given["curves"] == generated["curves"] and given["noc90"] == generated["noc90"]
    assert all(4 <= n <= 20 for n in (given["noc85"], given["noc90"]))
