"""The panoptic training task: ``segarch.train(..., task="panoptic")`` for Panoptic-DeepLab and DeeperLab.

Real training for a few steps on generated two-class squares (things of class 1 and 2), the model file's
``panoptic`` record, and clear errors for bad panoptic labels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import segarch
from segarch import zoo
from segarch.models.files import load_model, save_model
from segarch.training.panoptic import panoptic_ids, split_panoptic


def two_class_squares(rng, size: int = 64, count: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """A noisy image of ``count`` squares, alternately of class 1 (brightness 0.5) and class 2 (1.0), and their
    panoptic ids ``class * 1000 + instance``."""
    ids = np.zeros((size, size), np.int64)
    image = 0.05 * rng.normal(size=(size, size))
    placed = 0
    while placed < count:
        side = int(rng.integers(10, 16))
        y, x = rng.integers(0, size - side, 2)
        if ids[max(0, y - 2):y + side + 2, max(0, x - 2):x + side + 2].any():
            continue
        cls = 1 + placed % 2
        placed += 1
        ids[y:y + side, x:x + side] = cls * 1000 + placed
        image[y:y + side, x:x + side] += 0.5 * cls
    return image.astype(np.float32), ids


def _train(name, images, labels, steps=40, **settings):
    torch.manual_seed(0)
    return segarch.train(name, images, labels, task="panoptic", steps=steps, patch=64, batch_size=2,
                         lr=zoo.card(name).test_lr, options=zoo.card(name).test_config, device="cpu",
                         **settings)


def test_panoptic_deeplab_trains_through_segarch_train_and_its_file_keeps_the_panoptic_record(tmp_path):
    rng = np.random.default_rng()
    data = [two_class_squares(rng) for _ in range(5)]
    out = tmp_path / "panoptic.safetensors"
    model = _train("panoptic_deeplab", [d[0] for d in data], [d[1] for d in data], steps=60, val_fraction=0.2,
                   out=str(out))
    losses = [row["loss"] for row in model.history if np.isfinite(row.get("loss", np.nan))]
    assert len(losses) == 60 and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    assert model.panoptic == {"thing_classes": [1, 2], "label_divisor": 1000}
    assert model.out_channels == 3 and model.trained
    loaded = load_model(out)
    assert loaded.panoptic == model.panoptic
    # segarch.predict(output="panoptic") reads the record: the label divisor makes it combine panoptic ids
    found = segarch.predict(loaded, data[0][0], output="panoptic", device="cpu")
    assert found.panoptic is not None and np.asarray(found.panoptic).shape == data[0][1].shape
    assert set(np.unique(np.asarray(found.panoptic)) // 1000) <= {0, 1, 2}
    image = torch.from_numpy(data[0][0])[None, None]
    with torch.no_grad():
        for head, value in model.network.eval()(image).items():
            torch.testing.assert_close(loaded.network(image)[head], value)


def test_labels_as_class_and_instance_pairs_with_some_stuff(tmp_path):
    """A pair (class_labels, instance_labels); class 2 is stuff (its instance ids are dropped); the divisor
    recorded is the one given."""
    rng = np.random.default_rng()
    image, ids = two_class_squares(rng)
    classes, instances = ids // 1000, ids % 1000
    model = _train("deeperlab", image, (classes, instances), steps=10, thing_classes=[1], label_divisor=256,
                   val_fraction=0)
    assert model.panoptic == {"thing_classes": [1], "label_divisor": 256}
    assert np.isfinite(model.history[-1]["loss"])
    save_model(model, tmp_path / "m.safetensors")
    assert load_model(tmp_path / "m.safetensors").panoptic == {"thing_classes": [1], "label_divisor": 256}
    # the conversion: class 2 keeps no instance, class 1 keeps its ids
    converted = panoptic_ids(classes, instances, [1], 256)
    assert (converted[classes == 2] == 512).all()
    np.testing.assert_array_equal(converted[classes == 1] % 256, instances[classes == 1])
    back, objects = split_panoptic(converted, [1], 256)
    np.testing.assert_array_equal(back, classes)
    assert objects.max() == len(np.unique(instances[classes == 1])) and (objects[classes != 1] == 0).all()


def test_bad_panoptic_labels_give_clear_errors():
    rng = np.random.default_rng()
    image, ids = two_class_squares(rng)
    classes, instances = ids // 1000, ids % 1000
    instances[instances == 1] = 300
    with pytest.raises(ValueError, match=r"`label_divisor`=256 is too small for the instance ids \(up to 300\)"):
        _train("panoptic_deeplab", image, (classes, instances), label_divisor=256)
    with pytest.raises(ValueError, match=r"`thing_classes` \[5\] out of range: the model has 3 classes, so thing "
                                         r"classes are 1..2"):
        _train("panoptic_deeplab", image, ids, thing_classes=[1, 5])
    # ids made with divisor 1000 read with 100: class 20 of 3
    with pytest.raises(ValueError, match=r"panoptic id 200\d, class 20 with `label_divisor`=100, but the model has 3 "
                                         r"classes"):
        _train("panoptic_deeplab", image, ids, label_divisor=100, num_classes=3)
    with pytest.raises(ValueError, match=r"are all of class 0 \(highest id 4\); instance labels 1..N of one class "
                                         r"are the pair \(labels > 0, labels\)"):
        _train("panoptic_deeplab", image, ids % 1000)  # plain instance labels
    with pytest.raises(ValueError, match="`label_divisor` must be a positive integer, got 0"):
        _train("panoptic_deeplab", image, ids, label_divisor=0)
    with pytest.raises(ValueError, match=r"`thing_classes` applies to panoptic training \(task='panoptic'\) only"):
        segarch.train("unet", image, ids > 0, thing_classes=[1], steps=1)
    with pytest.raises(ValueError, match=r"'efficientps' is a detector: train it with task='instance'"):
        _train("efficientps", image, ids)


def test_model_file_panoptic_record_is_checked_on_load(tmp_path):
    from segarch.models.model import Model

    model = Model.from_zoo("panoptic_deeplab", out_channels=3, **zoo.card("panoptic_deeplab").test_config)
    model.panoptic = {"thing_classes": [1, 2], "label_divisor": 1000}
    path = save_model(model, tmp_path / "ok.safetensors")
    assert load_model(path).panoptic == {"thing_classes": [1, 2], "label_divisor": 1000}
    for bad, message in (({"thing_classes": [1, 3], "label_divisor": 1000}, r"'thing_classes' must be a list of "
                          r"distinct class indices from 1 to 2"),
                         ({"thing_classes": ["1"], "label_divisor": 1000}, "'thing_classes' must be a list"),
                         ({"thing_classes": [1], "label_divisor": 0}, "'label_divisor' must be a positive integer"),
                         ({"thing_classes": [1], "label_divisor": 1000, "code": "x"}, "exactly 'thing_classes' and "
                          "'label_divisor'")):
        with pytest.raises(ValueError, match=message):  # set in Python
            Model(model.network, "panoptic_deeplab", model.options, out_channels=3, panoptic=bad)
        _write_metadata(path, tmp_path / "bad.safetensors", panoptic=bad)
        with pytest.raises(ValueError, match=rf"bad.safetensors'?: 'panoptic'.*{message}"):
            load_model(tmp_path / "bad.safetensors")


def _write_metadata(source, target, **changes):
    """A copy of model file ``source`` whose segarch metadata has ``changes`` (as a forged file would)."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    segarch_meta = json.loads(meta["segarch"])
    segarch_meta.update(changes)
    save_file(tensors, str(target), metadata={**meta, "segarch": json.dumps(segarch_meta)})


@pytest.mark.slow
def test_cli_trains_a_panoptic_model_from_label_files(tmp_path):
    import json

    from segarch import io
    from test_cli import segarch_cli

    rng = np.random.default_rng()
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(2):
        image, ids = two_class_squares(rng)
        io.write_tiff(tmp_path / "images" / f"s{i}.tif", image)
        io.write_tiff(tmp_path / "labels" / f"s{i}.tif", (ids // 1000 * 100 + ids % 1000).astype(np.uint16),
                      labels=True)
    out = tmp_path / "panoptic.safetensors"
    common = ["train", str(tmp_path / "images"), str(tmp_path / "labels"), "--model", "deeperlab", "--task",
              "panoptic", "--options", json.dumps(zoo.card("deeperlab").test_config), "--steps", "3", "--patch",
              "64", "--batch-size", "2", "--device", "cpu"]
    result = segarch_cli(*common, "--thing-classes", "1", "--label-divisor", "100", "--out", str(out))
    assert result.returncode == 0, (result.stdout, result.stderr)
    model = load_model(out)
    assert model.panoptic == {"thing_classes": [1], "label_divisor": 100} and model.out_channels == 3
    bad = segarch_cli(*common, "--thing-classes", "1", "7", "--label-divisor", "100", "--out",
                      str(tmp_path / "never.safetensors"))
    assert bad.returncode == 2 and "--thing-classes [7] out of range" in bad.stderr, bad.stderr
    assert not (tmp_path / "never.safetensors").exists()


def test_fine_tuning_a_panoptic_model_keeps_its_thing_classes(tmp_path):
    rng = np.random.default_rng()
    image, ids = two_class_squares(rng)
    first = _train("panoptic_deeplab", image, ids, steps=2, thing_classes=[2], val_fraction=0,
                   out=str(tmp_path / "first.safetensors"))
    assert first.panoptic["thing_classes"] == [2]
    again = segarch.train(str(tmp_path / "first.safetensors"), image, ids, steps=2, patch=64, batch_size=2,
                          val_fraction=0, device="cpu")  # the saved model is claimed by the panoptic task
    assert again.panoptic == {"thing_classes": [2], "label_divisor": 1000} and again.out_channels == 3
