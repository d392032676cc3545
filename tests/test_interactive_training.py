"""Training extreme-point (interactive) models through the project's pipeline: ``segarch.train`` and
``segarch train`` turn each object of instance labels into a DEXTR example with jittered points."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import segarch
from segarch.prompts import DEFAULTS, extreme_points, object_scene, segment_from_points
from segarch.prompts.evaluate import iou
from segarch.prompts.segment import settings_for
from segarch.training import fine_tune, training_pairs
from segarch.training.data import as_sources
from segarch.training.objects import ObjectSampler, jittered_points, object_crops

pytestmark = pytest.mark.slow  # trains models


def _cli(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("segarch")
    command = [exe] if exe else [sys.executable, "-m", "segarch.cli"]
    return subprocess.run(command + list(args), capture_output=True, text=True, timeout=300)


SMALL = {"features": [8, 16, 32, 64], "bins": [1, 2, 4]}


def _scenes(n, shape=(96, 96), seed=0):
    scenes = [object_scene(shape, seed=seed + i, count=(3, 6), size=(12, 40)) for i in range(n)]
    return [s[0] for s in scenes], [s[1] for s in scenes]


def test_jittered_points_stay_near_the_extremes_and_move_both_ways():
    rng = np.random.default_rng(int(np.random.default_rng().integers(1 << 30)))
    _, labels = object_scene((96, 96), seed=int(rng.integers(10_000)))
    mask = labels == 1
    exact = extreme_points(mask)
    coords = np.argwhere(mask)
    draws = np.stack([jittered_points(mask, rng, 3.0) for _ in range(400)])
    assert draws.shape == (400, 4, 2)
    # Each point is within the jitter of a pixel on its extreme edge (left, right, top, bottom).
    for k, (axis, pick) in enumerate([(1, min), (1, max), (0, min), (0, max)]):
        edge = pick(coords[:, axis])
        assert np.all(np.abs(draws[:, k, axis] - edge) <= 3.0 + 1e-9)
        assert np.abs(draws[:, k, axis] - exact[k, axis]).max() > 1.0  # they do move
    # Moves go both ways: no systematic shift of the clicks (MONAI's perturbation only adds).
    shift = draws - np.rint(draws.mean(axis=0))
    assert (shift < -0.5).any() and (shift > 0.5).any()
    assert np.all(draws >= 0) and np.all(draws <= np.asarray(mask.shape) - 1)
    np.testing.assert_array_equal(jittered_points(mask, rng, 0.0)[:, 1][:2], exact[:2, 1])


def test_every_object_becomes_a_pair_with_fresh_jitter():
    images, labels = _scenes(2, seed=int(np.random.default_rng().integers(10_000)))
    sources = as_sources(images, labels, axes=None, mask=None, spatial_dims=2, in_channels=None)
    settings = DEFAULTS["dextr_light"][2]
    objects = object_crops(sources, settings, min_pixels=12)
    expected = sum(int((np.bincount(lab.ravel())[1:] >= 12).sum()) for lab in labels)
    assert len(objects) == expected
    for obj in objects:  # each neighbourhood holds its whole object and the image under it
        assert obj.mask.any() and obj.image.shape[1:] == obj.mask.shape
    sampler = ObjectSampler(objects[:1], settings, jitter=4.0, augment=False, seed=1)
    x, y, m = sampler.batch(6)
    assert x.shape == (6, 2, 64, 64) and y.shape == (6, 1, 64, 64) and m.shape == y.shape and m.min() == 1
    # One object drawn six times: the same target region, heat maps that differ (fresh clicks).
    assert not all(torch.equal(x[0, 1], x[i, 1]) for i in range(1, 6))
    assert set(torch.unique(y).tolist()) == {0, 1}


def test_a_new_extreme_point_model_learns_from_instance_labels(tmp_path):
    images, labels = _scenes(10, seed=200)
    model = segarch.train("dextr_light", images, labels, options=SMALL, steps=80, batch_size=8, lr=3e-3,
                          val_every=40, seed=3)
    assert model.arch == "dextr_light" and model.card.task == "interactive"
    assert model.in_channels == 2 and model.class_names == ["background", "object"] and model.trained
    losses = [r["loss"] for r in model.history]
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    v = model.validation
    assert v["held_out_objects"] >= 1 and v["objects"] > v["held_out_objects"]
    assert 0.5 < v["object_iou"] <= 1.0  # held-out objects, segmented from their exact extreme points
    assert "Held-out objects" in model.description
    # The crop recipe is saved with the model, and used again at inference.
    assert model.prompt == dataclasses.asdict(DEFAULTS["dextr_light"][2])
    path = segarch.save_model(model, tmp_path / "clicker.safetensors")
    reloaded = segarch.load_model(path)
    assert reloaded.prompt == model.prompt
    reloaded.prompt = dict(model.prompt, size=32)
    assert settings_for(reloaded).size == 32 and settings_for(model).size == 64
    reloaded.prompt = {"size": 32, "radius": 3}
    with pytest.raises(ValueError, match="unknown fields"):
        settings_for(reloaded)
    image, truth = object_scene((96, 96), seed=999, count=(3, 6), size=(12, 40))
    value = int(np.bincount(truth.ravel())[1:].argmax()) + 1
    assert iou(segment_from_points(model, image, extreme_points(truth == value)), truth == value) > 0.4


def test_a_3d_extreme_point_model_trains_on_volumes():
    scenes = [object_scene((24, 48, 48), seed=300 + i, count=(2, 4), size=(12, 30)) for i in range(3)]
    model = segarch.train("dextr_light", [s[0] for s in scenes], [s[1] for s in scenes],
                          options={"features": [4, 8, 16, 32], "bins": [1, 2]}, steps=3, batch_size=2)
    assert model.spatial_dims == 3 and model.in_channels == 2 and len(model.history) == 3
    assert 0.0 <= model.validation["object_iou"] <= 1.0


def test_the_shipped_model_fine_tunes_by_name_and_stays_good():
    shipped = segarch.pretrained.load("dextr_light.objects2d")
    before = {k: v.clone() for k, v in shipped.network.state_dict().items()}
    images, labels = _scenes(4, seed=400)
    tuned = segarch.train("dextr_light.objects2d", images, labels, steps=6, batch_size=4, lr=1e-4, seed=1)
    assert "Fine-tuned from dextr_light.objects2d" in tuned.description
    assert any(not torch.equal(v, tuned.network.state_dict()[k]) for k, v in before.items())
    assert all(torch.equal(v, segarch.pretrained.load("dextr_light.objects2d").network.state_dict()[k])
               for k, v in before.items())  # the shipped file is untouched
    assert tuned.validation["object_iou"] > 0.75


@pytest.mark.parametrize("case, match", [
    ("mask", "`mask` applies to semantic models only"),
    ("classes", "`num_classes` of an extreme-point model is 2"),
    ("patch", r"`patch` of an extreme-point model is its input size \(64, 64\)"),
    ("jitter", "`jitter` must be a number of pixels >= 0"),
    ("jitter_semantic", "`jitter` applies to interactive"),
    ("augment", "`augment` of an extreme-point model must be"),
    ("empty", "no object of at least 12 pixels"),
    ("channels", "the model takes `in_channels`=1"),
])
def test_bad_interactive_training_inputs_give_clear_errors(case, match):
    images, labels = _scenes(1, seed=500)
    model, kwargs = "dextr_light.objects2d", {"steps": 1}
    if case == "mask":
        kwargs["mask"] = True
    elif case == "classes":
        kwargs["num_classes"] = 3
    elif case == "patch":
        kwargs["patch"] = 32
    elif case == "jitter":
        kwargs["jitter"] = -2
    elif case == "jitter_semantic":
        model, kwargs = "unet", {"steps": 1, "jitter": 2.0, "options": {"features": [8, 16]}}
    elif case == "augment":
        kwargs["augment"] = [{"_target_": "monai.transforms.RandFlipd", "keys": ["image"]}]
    elif case == "empty":
        labels = [np.zeros_like(labels[0])]
    elif case == "channels":
        images = [np.stack([images[0], images[0]])]
    with pytest.raises(ValueError, match=match):
        segarch.train(model, images, labels, **kwargs)


def test_cli_fine_tunes_the_shipped_model_on_tiff_instance_labels(tmp_path):
    import tifffile

    images, labels = _scenes(3, shape=(128, 128), seed=600)
    folder_images, folder_labels = tmp_path / "images", tmp_path / "labels"
    folder_images.mkdir()
    folder_labels.mkdir()
    for i, (im, lab) in enumerate(zip(images, labels)):
        tifffile.imwrite(folder_images / f"cells{i}.tif", im)
        tifffile.imwrite(folder_labels / f"cells{i}_labels.tif", lab)
    out = tmp_path / "my_dextr.safetensors"
    result = _cli("train", str(folder_images), str(folder_labels), "--model", "dextr_light.objects2d", "--steps", "4",
                         "--batch-size", "4", "--lr", "1e-4", "--jitter", "1.5", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "finished after 4 steps" in result.stderr and out.is_file() and (tmp_path / "my_dextr.csv").is_file()
    model = segarch.load_model(out)
    assert model.arch == "dextr_light" and model.trained and model.card.task == "interactive"
    image, truth = object_scene((128, 128), seed=601, count=(3, 6), size=(12, 40))
    value = int(np.bincount(truth.ravel())[1:].argmax()) + 1
    assert iou(segment_from_points(str(out), image, extreme_points(truth == value)), truth == value) > 0.7


def test_lazy_instance_labels_are_read_block_by_block(tmp_path):
    import dask.array as da
    import zarr

    from segarch.training.objects import object_boxes

    images, labels = _scenes(1, shape=(160, 160), seed=int(np.random.default_rng().integers(10_000)))
    store = zarr.open_array(str(tmp_path / "labels.zarr"), mode="w", shape=labels[0].shape, chunks=(48, 48),
                            dtype=labels[0].dtype)
    store[:] = labels[0]
    lazy = da.from_zarr(store)
    # Objects across block borders get one box: the same boxes as reading the whole array.
    assert object_boxes(lazy) == object_boxes(labels[0])
    sources = as_sources([images[0]], [store], axes=None, mask=None, spatial_dims=2, in_channels=None)
    objects = object_crops(sources, DEFAULTS["dextr_light"][2])
    whole = object_crops(as_sources(images, labels, axes=None, mask=None, spatial_dims=2, in_channels=None),
                         DEFAULTS["dextr_light"][2])
    assert len(objects) == len(whole)
    for a, b in zip(objects, whole):
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.image, b.image)


def test_training_pairs_put_the_heat_map_on_the_points():
    image, labels = object_scene((128, 128), seed=9)
    x, t = training_pairs([image], [labels], jitter=0)
    size = DEFAULTS["dextr_light"][2].size
    n = len(np.unique(labels[labels > 0]))
    assert x.shape[1:] == (2, size, size) and t.shape[1:] == (size, size) and len(x) <= n
    assert 0 <= x[:, 0].min() and x[:, 0].max() <= 1
    heat = x[:, 1]
    assert np.allclose(heat.max(axis=(1, 2)), 1.0, atol=0.1)
    # The heat map peaks on the object's outline: its maxima lie on or next to target pixels.
    for h, target in zip(heat, t):
        peaks = np.argwhere(h > 0.9)
        near = [target[max(0, y - 2):y + 3, max(0, x_ - 2):x_ + 3].any() for y, x_ in peaks]
        assert np.mean(near) > 0.9


def test_fine_tune_on_instance_labels_returns_a_trained_copy():
    shipped = segarch.pretrained.load("dextr_light.objects2d")
    before = {k: v.clone() for k, v in shipped.network.state_dict().items()}
    scenes = [object_scene((96, 96), seed=600 + i) for i in range(3)]
    tuned = fine_tune(shipped, [s[0] for s in scenes], [s[1] for s in scenes], steps=4, batch_size=4)
    assert tuned is not shipped and tuned.trained and len(tuned.history) == 4
    assert all(torch.equal(v, shipped.network.state_dict()[k]) for k, v in before.items())  # original untouched
    assert any(not torch.equal(v, tuned.network.state_dict()[k]) for k, v in before.items())
    assert tuned.validation["object_iou"] > 0.7 and tuned.validation["best_step"] == 4
    image, labels = object_scene((160, 160), seed=601)
    mask = labels == 1
    assert iou(segment_from_points(tuned, image, extreme_points(mask)), mask) > 0.6
    with pytest.raises(ValueError, match="no object of at least"):
        fine_tune(shipped, [np.zeros((32, 32))], [np.zeros((32, 32), np.uint16)], steps=1)
