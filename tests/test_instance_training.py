"""segarch.train(task="instance"): targets made from instance labels (in physical units), kept consistent
through augmentation, validation by matched objects, the decoder saved with the model, fine-tuning, bad input.

One small U-Net is trained once per module on generated 2D nuclei and reused.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

import segarch
from segarch.instances import DistanceDecoder, match, predict_instances
from segarch.synthetic import Conditions, nuclei, nuclei_sample
from segarch.training import TrainConfig, task_names
from segarch.training import instance as instance_task
from segarch.training.data import as_sources
from segarch.training.instance import InstanceTask, target_source

pytestmark = pytest.mark.slow  # trains models

EASY = Conditions(radius=(4.0, 7.0), coverage=0.3, touching=0.5, photons=300.0, blur=1.0)
SMALL = {"features": (8, 16, 32), "norm": "batch", "dropout": 0.0}


def _data(n, shape=(64, 64), seed=0):
    pairs = [nuclei(shape, seed=seed + i, conditions=EASY) for i in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    images, labels = _data(6, (80, 80), seed=40)
    out = tmp_path_factory.mktemp("instance") / "cells.safetensors"
    events = []
    model = segarch.train("unet", images, labels, task="instance", options=SMALL, patch=48, steps=120, batch_size=8,
                          lr=5e-3, val_fraction=0.34, val_every=40, progress=events.append, out=out, seed=0)
    return model, events, out, (images, labels)


def test_instance_training_validates_objects_and_saves_the_tuned_decoder(trained):
    model, events, out, (images, labels) = trained
    assert "instance" in task_names()
    assert model.class_names == DistanceDecoder().class_names and model.out_channels == 5
    validations = [e for e in events if e.kind == "validation"]
    assert [e.step for e in validations] == [40, 80, 120]
    assert all(e.metric == "F1@0.5" and "F1@0.5" in e.message for e in validations)
    # per "class": background (none), the F1 at IoU 0.5, the mean AP over IoU 0.5-0.9
    assert all(np.isnan(e.val_dice[0]) and 0 <= e.val_dice[2] <= e.val_dice[1] <= 1 for e in validations)
    assert validations[-1].val_dice[1] > validations[0].val_dice[1]  # it learns to separate the nuclei
    assert model.validation["object_f1"] > 0.6 and 0 < model.validation["mean_ap"] < model.validation["object_f1"]
    settings = model.instance
    assert settings["decoder"] == "distance" and settings["bins"] == 4
    assert settings["seed_threshold"] in instance_task._FINE_SEEDS and model.pixel_size == [1.0, 1.0]
    assert "Held-out objects" in model.description and "seed threshold" in model.description
    with open(out.with_suffix(".csv")) as f:
        rows = list(csv.DictReader(f))
    assert {"val_objects", "objects_f1@0.5", "objects_mean_ap"} <= set(rows[0])
    assert rows[39]["val_objects"] and not rows[38]["val_objects"]
    # The file holds the decoder's settings as data; loaded, the model decodes with them, no `decoder=` needed.
    loaded = segarch.load_model(out)
    assert loaded.instance == settings and loaded.pixel_size == [1.0, 1.0]
    assert segarch.models.read_metadata(out)["instance"] == settings
    held_out = []
    for image, truth in zip(images, labels):
        pred = predict_instances(loaded, image)
        assert pred.dtype == np.uint32 and pred.shape == truth.shape
        held_out.append(match(truth, pred).f1(0.5))
    # The validation's own figure is that of the held-out images, decoded as predict_instances decodes.
    assert any(abs(f - model.validation["object_f1"]) < 0.02 for f in held_out), (held_out, model.validation)
    probabilities = segarch.predict(loaded, images[0], output="probabilities")
    assert np.array_equal(predict_instances(loaded, images[0]), DistanceDecoder(**{
        k: v for k, v in settings.items() if k != "decoder"}).decode(probabilities))


def test_an_instance_model_fine_tunes_without_naming_its_task(trained, tmp_path):
    model, _, out, (images, labels) = trained
    tuned = segarch.train(str(out), images[:2], labels[:2], steps=3, batch_size=4, patch=48, val_fraction=0.5)
    assert tuned.instance["decoder"] == "distance" and tuned.class_names == model.class_names
    assert "object_f1" in tuned.validation and "Fine-tuned from" in tuned.description
    # Fine-tuned as a Model too; the caller's model is not changed.
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    segarch.train(model, images[:2], labels[:2], steps=2, batch_size=4, patch=48, val_fraction=0)
    assert all(torch.equal(v, model.network.state_dict()[k]) for k, v in before.items())
    # A semantic U-Net stays semantic unless asked.
    semantic = segarch.train("unet", images[:1], labels[:1], options=SMALL, patch=32, steps=1, val_fraction=0)
    assert semantic.instance is None and semantic.out_channels == 2


def test_a_boundary_decoder_and_other_bins_are_chosen_by_decoder():
    images, labels = _data(2, seed=60)
    model = segarch.train("unet", images, labels, task="instance", decoder="boundary", options=SMALL, patch=32,
                          steps=2, batch_size=2, val_fraction=0.5)
    assert model.class_names == ["background", "interior", "boundary"] and model.instance["decoder"] == "boundary"
    model = segarch.train("unet", images, labels, task="instance", decoder={"decoder": "distance", "bins": 6},
                          options=SMALL, patch=32, steps=1, batch_size=2, val_fraction=0)
    assert model.out_channels == 7 and model.instance == DistanceDecoder(bins=6).settings()


def _whole_objects(labels: np.ndarray) -> list[int]:
    """Ids of the objects that do not touch the patch border (their targets depend on nothing outside it)."""
    border = np.zeros(labels.shape, bool)
    for axis in range(labels.ndim):
        index = [slice(None)] * labels.ndim
        for end in (0, -1):
            index[axis] = end
            border[tuple(index)] = True
    return sorted(set(np.unique(labels)) - set(np.unique(labels[border])) - {0})


@pytest.mark.parametrize("shape, spacing", [((96, 96), (1.0, 1.0)), ((24, 64, 64), (2.5, 1.0, 1.0))])
def test_targets_follow_the_image_through_crops_flips_and_turns(shape, spacing):
    # The image *is* the instance labels (no pre-processing): after each crop, flip and turn the sampler draws,
    # the class map must be the decoder's targets of the labels it shows, measured with the pixel size.
    seed = int(np.random.default_rng().integers(10_000))
    sample = nuclei_sample(shape, seed=seed, hard=True)
    labels = sample.labels.astype(np.int64)
    dims = len(shape)
    keys = ["image", "label", "mask"]
    turns = [{"_target_": "RandFlipd", "keys": keys, "prob": 0.5, "spatial_axis": axis} for axis in range(dims)]
    turns.append({"_target_": "RandRotate90d", "keys": keys, "prob": 0.5, "spatial_axes": [dims - 2, dims - 1]})
    patch = (48, 48) if dims == 2 else (16, 32, 32)
    task = InstanceTask(TrainConfig(patch=patch, augment=turns, pixel_size=spacing, val_fraction=0, seed=seed))
    model = segarch.Model.from_zoo("unet", spatial_dims=dims, **SMALL)
    model.preprocessing = []
    [source] = as_sources(labels.astype(np.float32), labels, axes="ZYX"[-dims:], mask=True, spatial_dims=dims,
                          in_channels=1)
    task.prepare(model, [source], np.random.default_rng(seed))
    decoder = DistanceDecoder()
    checked = 0
    for _ in range(10):  # a small 3D patch of a sparse draw may hold no whole object: draw until 3 were checked
        x, y, _ = task.batch(6)
        for image, target in zip(x[:, 0].numpy().astype(np.int64), y[:, 0].numpy()):
            expected = decoder.targets(image, spacing)
            for i in _whole_objects(image):
                inside = image == i
                assert np.array_equal(target[inside], expected[inside]), f"object {i} (seed {seed})"
                checked += 1
        if checked >= 3:
            break
    assert checked >= 3, f"seed {seed}"
    # The pixel size matters: measured in voxels, the same labels give other classes (Z steps count as 1).
    if dims == 3:
        assert not np.array_equal(decoder.targets(labels, spacing), decoder.targets(labels))


def test_targets_are_made_from_the_whole_image_or_block_by_block_with_context(monkeypatch, tmp_path):
    import zarr

    sample = nuclei_sample((160, 200), seed=7, hard=True)
    store = zarr.open(str(tmp_path / "labels.zarr"), mode="w", shape=sample.labels.shape, chunks=(64, 64),
                      dtype=sample.labels.dtype)
    store[:] = sample.labels
    [eager] = as_sources(sample.image, sample.labels, axes="YX", mask=None, spatial_dims=2, in_channels=1)
    [lazy] = as_sources(sample.image, str(tmp_path / "labels.zarr"), axes="YX", mask=None, spatial_dims=2,
                        in_channels=1)
    decoder = DistanceDecoder()
    whole = target_source(eager, decoder, (1.0, 1.0)).labels
    assert isinstance(whole, np.ndarray) and np.array_equal(whole, decoder.targets(sample.labels))
    monkeypatch.setattr(instance_task, "_EAGER_TARGET_VOXELS", 1000)  # this image now counts as large
    blocks = target_source(lazy, decoder, (1.0, 1.0)).labels
    assert hasattr(blocks, "dask")  # nothing computed yet
    # Every object is smaller than the context around a block, so block by block equals the whole image.
    assert np.array_equal(blocks.compute(), whole)


def test_3d_training_records_the_pixel_size_and_measures_targets_with_it(tmp_path):
    drawn = [nuclei_sample((16, 48, 48), seed=80 + i, hard=True) for i in range(3)]
    model = segarch.train("unet", [s.image for s in drawn], [s.labels for s in drawn], task="instance",
                          pixel_size=[s.spacing for s in drawn], options=SMALL, patch=(16, 32, 32), steps=2,
                          batch_size=2, val_fraction=0.34)
    zs = sorted(s.spacing[0] for s in drawn)
    assert model.pixel_size == pytest.approx([zs[1], 1.0, 1.0])  # the median over the images
    assert f"from {zs[0]:.3g}×1×1 to {zs[2]:.3g}×1×1" in model.description
    assert model.validation["objects"]["n_true"] > 0


def test_the_pixel_size_is_read_from_ome_tiff_files(tmp_path):
    from segarch.io import write_tiff

    images, labels = [], []
    for i, z in enumerate((2.0, 3.0)):
        s = nuclei_sample((16, 48, 48), seed=90 + i, hard=True)
        images.append(write_tiff(tmp_path / f"im{i}.tif", s.image, axes="ZYX", scale=(z, 0.5, 0.5), units="micrometer"))
        labels.append(write_tiff(tmp_path / f"im{i}_labels.tif", s.labels, axes="ZYX", scale=(z, 0.5, 0.5),
                                 units="micrometer", labels=True))
    model = segarch.train("unet", tmp_path / "im0.tif", tmp_path / "im0_labels.tif", task="instance", options=SMALL,
                          patch=(16, 32, 32), steps=1, batch_size=1, val_fraction=0)
    assert model.pixel_size == [2.0, 0.5, 0.5]
    model = segarch.train("unet", [str(p) for p in images], [str(p) for p in labels], task="instance", options=SMALL,
                          patch=(16, 32, 32), steps=1, batch_size=1, val_fraction=0, pixel_size=(1.0, 1.0, 1.0))
    assert model.pixel_size == [1.0, 1.0, 1.0]  # pixel_size= wins over the files


@pytest.mark.parametrize("labels, options, message", [
    (lambda lab: lab.astype(np.int32) - 1, {}, r"`labels` of image 0 hold negative values \(minimum -1\)"),
    (lambda lab: lab.astype(np.float32) + 0.5, {}, r"`labels` \(image 0\) must hold integers"),
    (lambda lab: np.zeros_like(lab), {"mask": True}, r"`labels` hold no objects \(every label is 0\)"),
    (lambda lab: np.zeros_like(lab), {}, r"`labels` hold no objects \(every label is 0\)"),
    (None, {"pixel_size": (0.0, 1.0)}, r"`pixel_size` must be .*every value a positive number.*got \(0.0, 1.0\)"),
    (None, {"pixel_size": (-1.0, 1.0)}, r"`pixel_size` must be .*positive"),
    (None, {"pixel_size": (1.0, 1.0, 1.0)}, r"`pixel_size` must have 2 values per image \(one per spatial axis"),
    (None, {"pixel_size": [(1.0, 1.0)] * 3}, r"`pixel_size` must be one size for all images or a list with one per "
                                             r"image \(2\), got a list of 3"),
    (None, {"pixel_size": (1.0, 2.0)}, r"`pixel_size` \(1.0, 2.0\) differs between Y and X"),
    (None, {"num_classes": 3}, r"`num_classes` of an instance model is its decoder's \('distance': 5 classes"),
    (None, {"class_names": ["background", "cell"]}, r"`class_names` of an instance model are its decoder's"),
    (None, {"decoder": "stardist"}, r"`decoder` must be one of \['boundary', 'distance'\], got 'stardist'"),
    (None, {"decoder": {"decoder": "distance", "bins": 1}}, r"`bins` must be an integer from 2 to 32, got 1"),
    (None, {"jitter": 2}, r"`jitter` applies to interactive"),
])
def test_bad_instance_training_input_is_refused_naming_the_parameter(labels, options, message, tmp_path):
    images, truth = _data(2, seed=70)
    if labels is not None:
        truth = [labels(t) for t in truth]
    out = tmp_path / "model.safetensors"
    with pytest.raises(ValueError, match=message):
        segarch.train("unet", images, truth, task="instance", options=SMALL, patch=32, steps=1, out=out, **options)
    assert not out.exists()


def test_instance_options_do_not_apply_to_other_tasks():
    images, labels = _data(1, seed=75)
    with pytest.raises(ValueError, match=r"`decoder` applies to instance models only: pass task='instance'"):
        segarch.train("unet", images, labels, decoder="distance", options=SMALL, steps=1)
    with pytest.raises(ValueError, match=r"`pixel_size` does not apply to extreme-point models"):
        segarch.train("dextr_light", images, labels, pixel_size=(1.0, 1.0), options={}, steps=1)
    with pytest.raises(ValueError, match=r"`task`='instance' trains semantic architectures, not 'dextr_light'"):
        segarch.train("dextr_light", images, labels, task="instance", options={}, steps=1)
    # A semantic model records a pixel size it is given.
    model = segarch.train("unet", images, labels, pixel_size=(0.5, 0.5), options=SMALL, patch=32, steps=1,
                          val_fraction=0)
    assert model.pixel_size == [0.5, 0.5]


def test_validation_of_held_out_images_too_large_to_decode_whole_uses_patches(monkeypatch):
    monkeypatch.setattr(instance_task, "_WHOLE_IMAGE_VAL_VOXELS", 100)
    images, labels = _data(3, (64, 64), seed=95)
    model = segarch.train("unet", images, labels, task="instance", options=SMALL, patch=32, steps=2, batch_size=2,
                          val_fraction=0.34)
    assert model.validation["objects"]["n_true"] > 0 and model.instance["decoder"] == "distance"

