"""One training loop for every task: the options are one TrainConfig, and a new task plugs in as a module.

The third task here (background / interior / boundary from instance labels, validated by the F1 score
of objects matched at IoU 0.5, as an instance task would be) is written in this file only, from the
public parts of :mod:`segarch.training`; it trains through ``segarch.train`` with its events, log,
checkpoints and fine-tuning, and the loop does not change.
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

import segarch
from segarch.models import Model
from segarch.synthetic import Conditions, nuclei
from segarch.training import TrainConfig, TrainingTask, Validation, task_names, train_iter
from segarch.training import task as task_registry
from segarch.training.data import make_items, split_items
from segarch.training.normalisation import PerImagePreprocessing
from segarch.training.sampler import PatchSampler, validation_patches
from segarch.training.semantic import check_patch

pytestmark = pytest.mark.slow  # trains models

EASY = Conditions(radius=(4.0, 7.0), coverage=0.3, photons=300.0, blur=1.0)
SMALL = {"features": (8, 16, 32), "norm": "batch", "dropout": 0.0}
CLASSES = ["background", "interior", "boundary"]


def _data(n, shape=(64, 64), seed=0):
    pairs = [nuclei(shape, seed=seed + i, conditions=EASY) for i in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def boundary_targets(labels: np.ndarray) -> np.ndarray:
    """0 background, 1 interior, 2 the pixels of an object next to another label (or to background)."""
    labels = np.asarray(labels)
    edge = ndimage.maximum_filter(labels, size=3) != ndimage.minimum_filter(labels, size=3)
    return np.where(labels > 0, np.where(edge, 2, 1), 0).astype(np.int64)


def _objects(class_map: np.ndarray) -> np.ndarray:
    return ndimage.label(class_map == 1)[0]  # interiors split touching objects apart


def object_f1(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> float:
    """F1 of the objects of two instance maps, a pair matching when its IoU exceeds ``threshold``."""
    n_pred, n_true = int(pred.max()), int(truth.max())
    if n_pred + n_true == 0:
        return 1.0
    overlap = np.bincount(pred.ravel() * (n_true + 1) + truth.ravel(), minlength=(n_pred + 1) * (n_true + 1))
    overlap = overlap.reshape(n_pred + 1, n_true + 1)
    union = overlap.sum(1, keepdims=True) + overlap.sum(0, keepdims=True) - overlap
    iou = overlap[1:, 1:] / np.maximum(union[1:, 1:], 1)
    matched = int((iou > threshold).sum())  # IoU > 0.5 matches each object at most once
    return 2 * matched / (n_pred + n_true)


class BoundaryTask(TrainingTask):
    """A semantic network trained on background/interior/boundary targets from instance labels."""

    name = "boundaries"
    architectures = ("semantic",)
    metric, metric_key = "F1@0.5", "f1"

    @classmethod
    def claims(cls, card, model) -> bool:  # only the models it made; a new U-Net stays semantic
        return model is not None and list(model.class_names) == CLASSES

    def new_model(self, card, spatial_dims, channels) -> Model:
        return Model.from_zoo(card.name, spatial_dims=spatial_dims, in_channels=channels, out_channels=3,
                              class_names=list(CLASSES), **dict(self.config.options or {}))

    def prepare(self, model, sources, rng) -> Model:
        cfg = self.config
        items = make_items(sources)
        self.input_size = check_patch(cfg.patch, model.spatial_dims, model.size_divisor, items)
        train_items, val_items = split_items(items, cfg.val_fraction, self.input_size, rng)
        preprocess = PerImagePreprocessing(model.preprocessing, sources, [2 * p for p in self.input_size])
        self.sampler = PatchSampler(train_items, self.input_size, preprocess, 3, cfg.augment, seed=cfg.seed,
                                    targets=boundary_targets)
        self.validation_regions = validation_patches(val_items, self.input_size, preprocess, 3, 16, seed=cfg.seed,
                                                     targets=boundary_targets)
        self.batch_size = int(cfg.batch_size or 8)
        self.class_names = list(CLASSES)
        self.data_summary = f"{len(train_items)} item(s), {len(self.validation_regions)} validation patch(es)"
        return model

    def batch(self, batch_size):
        return self.sampler.batch(batch_size)

    def validate(self, net, device) -> Validation:
        loss = super().validate(net, device).loss
        scores = []
        with torch.inference_mode():
            for region in self.validation_regions:
                pred = net(torch.from_numpy(region.image[None]).to(device)).argmax(1)[0].cpu().numpy()
                scores.append(object_f1(_objects(pred), _objects(region.target)))
        f1 = float(np.mean(scores))
        return Validation(loss, [math.nan, f1, math.nan], f1)

    def final_validation(self, model, trained):
        if not trained or not self.validation_regions:
            return {"object_f1": None}, ""
        f1 = self.validate(model.network.eval(), torch.device("cpu")).score
        return {"object_f1": f1}, f"Held-out objects: F1 at IoU 0.5 {f1:.3f}."


@pytest.fixture
def boundary_task(monkeypatch):
    monkeypatch.setitem(task_registry._TASKS, BoundaryTask.name, BoundaryTask)  # registered for this test only
    return BoundaryTask


def test_a_new_task_trains_through_the_unchanged_loop(boundary_task, tmp_path):
    images, labels = _data(6, seed=100)
    out = tmp_path / "boundaries.safetensors"
    events = []
    model = segarch.train("unet", images, labels, task="boundaries", options=SMALL, patch=32, steps=60, batch_size=8,
                          lr=5e-3, val_fraction=0.34, val_every=20, progress=events.append, out=out, seed=0)
    losses = [e.loss for e in events if e.kind == "step"]
    assert len(losses) == 60 and np.mean(losses[-10:]) < 0.7 * np.mean(losses[:3])
    validations = [e for e in events if e.kind == "validation"]
    assert [e.step for e in validations] == [20, 40, 60]
    assert all(e.metric == "F1@0.5" and "F1@0.5" in e.message for e in validations)
    assert model.class_names == CLASSES and model.out_channels == 3
    assert model.validation["best_step"] in (20, 40, 60)
    assert model.validation["object_f1"] > 0.3  # a fresh tiny U-Net after 60 steps separates touching nuclei
    assert "F1 at IoU 0.5" in model.description and "Held-out patch F1@0.5" in model.description
    with open(tmp_path / "boundaries.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"val_f1", "f1_interior"} <= set(rows[0]) and rows[19]["val_f1"] and not rows[18]["val_f1"]
    # The saved model is claimed by its task: fine-tuning it needs no `task=`.
    tuned = segarch.train(str(out), images[:2], labels[:2], steps=2, batch_size=4, patch=32, val_fraction=0.5)
    assert "object_f1" in tuned.validation and tuned.class_names == CLASSES
    semantic = segarch.train("unet", images[:1], labels[:1], options=SMALL, patch=32, steps=1, val_fraction=0)
    assert semantic.out_channels == 2 and "object_f1" not in semantic.validation  # a new U-Net stays semantic
    assert "whole_image_dice" in semantic.validation


def test_naming_a_task(boundary_task):
    images, labels = _data(1, seed=110)
    assert task_names()[:2] == ["semantic", "interactive"]
    known = r"\('semantic', 'interactive', 'instance', 'detection', 'panoptic', 'boundaries'\)"
    with pytest.raises(ValueError, match=r"`task` must be one of " + known):
        segarch.train("unet", images, labels, task="instances", options=SMALL, steps=1)
    wrong = r"`task`='interactive' trains interactive architectures, not 'unet' \(semantic\)"
    with pytest.raises(ValueError, match=wrong):
        segarch.train("unet", images, labels, task="interactive", options=SMALL, steps=1)
    wrong = r"`task`='boundaries' trains semantic architectures, not 'dextr_light' \(interactive\)"
    with pytest.raises(ValueError, match=wrong):
        segarch.train("dextr_light", images, labels, task="boundaries", options={}, steps=1)


def test_options_as_one_config_or_keywords_train_the_same_model():
    images, labels = _data(2, seed=120)
    kwargs = {"options": SMALL, "patch": 32, "steps": 3, "batch_size": 2, "val_fraction": 0.5, "seed": 4}
    by_keywords = segarch.train("unet", images, labels, **kwargs)
    config = TrainConfig(**dict(kwargs, steps=50))
    by_config = segarch.train("unet", images, labels, config, steps=3)  # a keyword overrides the config
    assert len(by_config.history) == 3
    for key, value in by_keywords.network.state_dict().items():
        assert torch.equal(value, by_config.network.state_dict()[key]), key
    events = list(train_iter("unet", images, labels, config=TrainConfig(**kwargs)))
    assert events[-1].kind == "done" and events[-1].step == 3


def test_every_option_is_documented_and_in_both_signatures():
    for name in [f.name for f in dataclasses.fields(TrainConfig)]:
        assert f"{name}:" in segarch.train.__doc__, name
        for function in (segarch.train, train_iter):
            assert inspect.signature(function).parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert "progress" in inspect.signature(segarch.train).parameters
    assert "progress" not in inspect.signature(train_iter).parameters


@pytest.mark.parametrize("options, match", [
    ({"stepz": 3}, r"Unknown training option\(s\) 'stepz'\. Did you mean 'steps'\? Allowed: axes, mask"),
    ({"steps": 0}, "`steps` must be at least 1, got 0"),
    ({"steps": 2.5}, "`steps` must be at least 1, got 2.5"),
    ({"lr": -1}, "`lr` must be a positive number, got -1"),
    ({"weight_decay": -0.1}, "`weight_decay` must be a number >= 0"),
    ({"val_fraction": 1.0}, r"`val_fraction` must be in \[0, 1\), got 1.0"),
    ({"batch_size": -2}, "`batch_size` must be at least 1 \\(or None for the default\\), got -2"),
    ({"val_every": -1}, "`val_every` must be at least 1"),
    ({"num_classes": 1}, "`num_classes` must be at least 2"),
    ({"jitter": -1}, "`jitter` must be a number of pixels >= 0"),
    ({"seed": 1.5}, "`seed` must be an integer, got 1.5"),
    ({"options": [8, 16]}, "`options` must be a dict of architecture options, got list"),
    ({"class_names": "nucleus"}, "`class_names` must be a list of names"),
    ({"out": "model.pt"}, "`out` must be a '.safetensors' path, got 'model.pt'"),
    ({"loss": "hinge"}, "`loss` must be one of"),
])
def test_bad_options_are_caught_before_any_data_is_read(options, match):
    class Unreadable:  # reading the images would fail: the options are checked first
        shape, dtype, ndim = (64, 64), np.dtype(np.float32), 2

        def __getitem__(self, key):
            raise AssertionError("the images were read")

    with pytest.raises(ValueError, match=match):
        segarch.train("unet", Unreadable(), np.zeros((64, 64), np.uint8), **options)
    with pytest.raises(ValueError, match=match):
        TrainConfig.build(None, options)
    with pytest.raises(ValueError, match="`config` must be a segarch.training.TrainConfig or None, got dict"):
        segarch.train("unet", Unreadable(), np.zeros((64, 64), np.uint8), {"steps": 3})


def test_targets_a_task_derives_follow_the_image_through_crops_and_flips():
    # A distance map (float) as the target, and the same map as the image: every crop and flip the sampler
    # makes must give identical image and target patches, and the target stays float.
    from segarch.training.data import as_sources

    _, labels = nuclei((64, 64), seed=int(np.random.default_rng().integers(10_000)), conditions=EASY)
    distance = ndimage.distance_transform_edt(labels > 0).astype(np.float32)
    [source] = as_sources(distance, labels, axes="YX", mask=True, spatial_dims=2, in_channels=1)
    flips = [{"_target_": "RandFlipd", "keys": ["image", "label", "mask"], "prob": 1.0, "spatial_axis": axis}
             for axis in (0, 1)]
    sampler = PatchSampler(make_items([source]), (32, 32), lambda image, _item: image, 2, flips, seed=1,
                           targets=lambda lab: ndimage.distance_transform_edt(lab > 0).astype(np.float32))
    x, y, m = sampler.batch(6)
    assert y.dtype == torch.float32 and x.shape == y.shape == m.shape == (6, 1, 32, 32)
    assert (y % 1 > 0).any()  # real distances, not rounded to classes
    torch.testing.assert_close(x, y)
