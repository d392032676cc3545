"""segarch.train: learning on generated nuclei, model files, fine-tuning, cancel, partial annotations, bad inputs.

One small U-Net is trained once per module (40 steps on 32×32 patches, single-threaded) and reused.
"""

from __future__ import annotations

import csv
import threading

import numpy as np
import pytest
import torch

import segarch
from segarch.synthetic import Conditions, nuclei
from segarch.training import train_iter
from segarch.training.data import as_sources, make_items, read_region, split_items
from segarch.training.finetune import head_keys, with_classes
from segarch.training.losses import SegmentationLoss
from segarch.training.metrics import dice_per_class

pytestmark = pytest.mark.slow  # trains models

EASY = Conditions(radius=(4.0, 7.0), coverage=0.3, photons=300.0, blur=1.0)
SMALL = {"features": (8, 16, 32), "norm": "batch", "dropout": 0.0}
STATED_DICE = 0.8  # held-out Dice the quick run must reach (it measures about 0.95)


def _data(n, shape=(64, 64), seed=0):
    pairs = [nuclei(shape, seed=seed + i, conditions=EASY) for i in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    images, labels = _data(5)
    out = tmp_path_factory.mktemp("train") / "nuclei.safetensors"
    events = []
    model = segarch.train("unet", images, labels, options=SMALL, patch=32, steps=40, batch_size=8, lr=5e-3,
                          val_fraction=0.2, val_every=10, mask=True, class_names=["background", "nucleus"],
                          progress=events.append, out=out, seed=0)
    return model, events, out


def test_training_lowers_the_loss_and_reaches_the_stated_dice(trained):
    model, events, _ = trained
    losses = [e.loss for e in events if e.kind == "step"]
    assert len(losses) == 40
    assert np.mean(losses[-10:]) < 0.6 * np.mean(losses[:3])
    validations = [e for e in events if e.kind == "validation"]
    assert [e.step for e in validations] == [10, 20, 30, 40]
    assert model.trained and model.class_names == ["background", "nucleus"]
    assert model.validation["patch_dice"][1] >= STATED_DICE
    assert model.validation["whole_image_dice"][1] >= STATED_DICE  # held-out images through segarch.predict
    image, truth = nuclei((96, 96), seed=99, conditions=EASY)  # a fresh image, larger than any seen
    pred = segarch.predict(model, image, device="cpu")
    assert dice_per_class(pred, truth > 0, num_classes=2)[1] >= STATED_DICE
    assert events[-1].kind == "done" and not events[-1].cancelled


def test_saved_model_reloads_and_predicts_identically(trained, tmp_path):
    model, _, out = trained
    loaded = segarch.load_model(out)
    assert loaded.trained and loaded.class_names == model.class_names
    assert list(loaded.options["features"]) == list(model.options["features"]) == [8, 16, 32]
    assert "Trained with segarch.train" in loaded.description and "nucleus" in loaded.description
    for key, value in model.network.state_dict().items():
        assert torch.equal(value, loaded.network.state_dict()[key]), key
    image, _ = nuclei((80, 72), seed=7, conditions=EASY)
    a = segarch.predict(model, image, device="cpu", output="probabilities")
    b = segarch.predict(loaded, image, device="cpu", output="probabilities")
    np.testing.assert_array_equal(a, b)
    rows = list(csv.DictReader(open(out.with_name("nuclei.csv"))))
    assert len(rows) == 40 and rows[9]["val_dice"] and not rows[8]["val_dice"]
    assert float(rows[-1]["dice_nucleus"]) == pytest.approx(model.history[-1]["dice_nucleus"])
    png = out.with_name("nuclei.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_fine_tuning_with_a_changed_class_count(trained):
    model, _, out = trained
    heads = head_keys(model)
    assert heads == {"head.weight", "head.bias"}
    three = with_classes(model, 3, ["background", "small", "large"])
    old, new = model.network.state_dict(), three.network.state_dict()
    for key in old:
        if key in heads:
            assert new[key].shape[0] == 3
        else:
            assert torch.equal(old[key], new[key]), key  # everything but the head is kept
    images, labels = _data(2, seed=20)
    classes = []
    for lab in labels:  # two classes by object size
        sizes = np.bincount(lab.ravel())
        cls = np.where(sizes[lab] > np.median(sizes[1:]), 2, 1)
        classes.append(np.where(lab > 0, cls, 0).astype(np.uint8))
    tuned = segarch.train(str(out), images, classes, num_classes=3, class_names=["background", "small", "large"],
                          patch=32, steps=4, batch_size=4, val_fraction=0.5, mask=True)
    assert tuned.out_channels == 3 and tuned.class_names == ["background", "small", "large"]
    assert tuned.description.startswith(f"Fine-tuned from {out}.")
    assert len(tuned.validation["patch_dice"]) == 3
    assert tuned.network(torch.zeros(1, 1, 32, 32)).shape == (1, 3, 32, 32)


def test_cancel_stops_within_a_step_and_keeps_a_usable_model(tmp_path):
    images, labels = _data(2, seed=30)
    cancel = threading.Event()
    out = tmp_path / "cancelled.safetensors"
    gen = train_iter("unet", images, labels, options=SMALL, patch=32, steps=1000, batch_size=2, val_every=2,
                     mask=True, out=out, cancel=cancel)
    seen = []
    try:
        while True:
            ev = next(gen)
            seen.append(ev)
            if ev.kind == "step" and ev.step == 3:
                cancel.set()
    except StopIteration as stop:
        model = stop.value
    steps = [e.step for e in seen if e.kind == "step"]
    assert steps == [1, 2, 3]  # no step after the cancel
    assert seen[-1].kind == "done" and seen[-1].cancelled
    assert model.trained and model.validation["best_step"] in (2, 3)
    loaded = segarch.load_model(out)
    image, _ = nuclei((64, 64), seed=31, conditions=EASY)
    labels_out = segarch.predict(loaded, image, device="cpu")
    assert labels_out.shape == (64, 64) and set(np.unique(labels_out)) <= {0, 1}


def test_ctrl_c_keeps_the_last_weights_without_validation(tmp_path):
    images, labels = _data(1, seed=35)

    def interrupt(ev):
        if ev.kind == "step" and ev.step == 2:
            raise KeyboardInterrupt  # what Ctrl+C does while the progress bar is drawn

    out = tmp_path / "interrupted.safetensors"
    model = segarch.train("unet", images, labels, options=SMALL, patch=32, steps=50, batch_size=2, val_fraction=0,
                          mask=True, out=out, progress=interrupt)
    assert model.trained and len(model.history) == 2  # no step after the one being drawn
    assert model.validation == {"best_step": 2, "patch_dice": None, "whole_image_dice": None}
    assert "2 of 50 steps (cancelled)" in segarch.load_model(out).description


def test_partial_annotations_count_only_labelled_slices():
    image, full = nuclei((6, 48, 48), seed=40, conditions=EASY)
    labels = np.zeros_like(full)
    labels[[1, 4]] = full[[1, 4]]  # the user painted two slices of the stack
    [source] = as_sources(image, labels, axes="TYX", mask=None, spatial_dims=2, in_channels=1)
    items = make_items([source])
    assert [it.index for it in items] == [(1,), (4,)]
    # A 3D model: the same volume, only Z-slices 1 and 4 are annotated inside a region.
    [source3] = as_sources(image, labels, axes=None, mask=None, spatial_dims=3, in_channels=1)
    [item] = make_items([source3])
    region = read_region(item, (0, 0, 0), (6, 16, 16), preprocess=lambda a, _: a, num_classes=2)
    assert region.mask[:, 0, 0].tolist() == [False, True, False, False, True, False]
    # An explicit mask: a painted background region without any object counts too.
    mask = np.zeros(labels.shape, bool)
    mask[2, :10, :10] = True
    [source_m] = as_sources(image, np.zeros_like(labels), axes="TYX", mask=mask, spatial_dims=2, in_channels=1)
    assert [it.index for it in make_items([source_m])] == [(2,)]
    # One image: validation is a strip of it, training the rest.
    [single] = make_items(as_sources(image[0], full[0], axes=None, mask=True, spatial_dims=2, in_channels=1))
    train_items, val_items = split_items([single], 0.1, (32, 32), np.random.default_rng(0))
    assert train_items[0].bounds == (slice(0, 36), slice(0, 48))
    assert val_items[0].bounds == (slice(36, 48), slice(0, 48))


def test_lazy_inputs_stay_lazy(tmp_path):
    import dask.array as da
    import tifffile
    import zarr

    image, labels = nuclei((64, 64), seed=50, conditions=EASY)
    z = zarr.open_array(str(tmp_path / "image.zarr"), mode="w", shape=image.shape, chunks=(32, 32), dtype=image.dtype)
    z[:] = image
    (tmp_path / "labels").mkdir()
    (tmp_path / "images").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", image, tile=(32, 32))
    tifffile.imwrite(tmp_path / "labels" / "a_labels.tif", labels)
    [source] = as_sources(z, labels, axes=None, mask=None, spatial_dims=2, in_channels=1)
    assert isinstance(source.image, da.Array)
    [from_folder] = as_sources(str(tmp_path / "images"), str(tmp_path / "labels"), axes=None, mask=None,
                               spatial_dims=2, in_channels=1)
    assert isinstance(from_folder.image, da.Array) and from_folder.labels.shape == (64, 64)
    [item] = make_items([from_folder])
    region = read_region(item, (10, 20), (16, 16), preprocess=lambda a, _: a, num_classes=2)
    np.testing.assert_array_equal(region.image[0], image[10:26, 20:36])
    np.testing.assert_array_equal(region.target, (labels[10:26, 20:36] > 0))


class _CountingArray:
    """An array-like (as a Zarr or HDF5 array is) that counts the pixels read from it."""

    def __init__(self, data):
        self.data, self.read = data, 0
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, key):
        out = self.data[key]
        self.read += out.size
        return out


def test_a_large_image_is_read_by_regions_only():
    image, labels = nuclei((128, 128), seed=45, conditions=EASY)
    big = _CountingArray(np.tile(image, (32, 32)))  # 4096×4096
    model = segarch.train("unet", big, np.tile(labels, (32, 32)), options=SMALL, patch=32, steps=3, batch_size=4,
                          val_fraction=0, mask=True)
    assert model.trained
    # 3 steps × 2 regions of 64×64, each within at most 4 blocks of 256×256, and 16 regions of 64×64 on block
    # boundaries to measure the image's percentiles (one block each): never the whole image.
    assert 0 < big.read <= (6 * 4 + 16) * 256 ** 2 < 0.2 * big.data.size


def test_masked_loss_ignores_unannotated_pixels():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 16, 16)
    target = torch.randint(0, 3, (2, 1, 16, 16))
    mask = torch.zeros(2, 1, 16, 16)
    mask[:, :, 4:12, 4:12] = 1
    for name in ("dice_ce", "ce", "focal", "dice"):
        loss = SegmentationLoss(name, 3)
        other = target.clone()
        other[mask == 0] = (other[mask == 0] + 1) % 3  # change only what is not annotated
        assert float(loss(logits, target, mask)) == pytest.approx(float(loss(logits, other, mask)), rel=1e-6), name


@pytest.mark.parametrize("case, match", [
    ("shape", "labels.*shape"),
    ("empty", "no annotated pixels"),
    ("negative", "negative"),
    ("negative_objects", r"`labels` of image 0 hold negative values \(minimum -1\)"),
    ("negative_objects_lazy", r"`labels` of image 0 hold negative values \(minimum -1\)"),
    ("float", "integers"),
    ("patch", "multiples of the model's size divisor 4"),
    ("loss", "`loss` must be one of"),
    ("arch", "unet"),
    ("channels", "in_channels"),
    ("batch_norm", "use `batch_size` >= 2 or a larger `patch`"),
    ("nan", r"image 0 holds NaN or infinite values \(1 in the"),
    ("nan_objects", r"image 0 holds NaN or infinite values \(1 in the neighbourhood of label"),
])
def test_bad_inputs_give_clear_errors(case, match, trained):
    image, labels = nuclei((32, 32), seed=60, conditions=EASY)
    model, kwargs = "unet", {"options": SMALL, "steps": 1, "patch": 32}
    if case == "shape":
        labels = labels[:30]
    elif case == "empty":
        labels = np.zeros_like(labels)
    elif case == "negative":
        labels = labels.astype(np.int32) - 1
    elif case.startswith("negative_objects"):  # extreme-point training finds them while it finds the objects
        labels = labels.astype(np.int32)
        labels[-1, -1] = -1
        if case.endswith("lazy"):
            import dask.array as da

            labels = da.from_array(labels, chunks=16)
        model, kwargs = "dextr_light", {"options": {"features": [4, 8, 16, 32]}, "steps": 1}
    elif case == "float":
        labels = labels.astype(np.float32)
    elif case == "patch":
        kwargs["patch"] = 30
    elif case == "loss":
        kwargs["loss"] = "hinge"
    elif case == "arch":
        model = "unett"
    elif case == "channels":
        model, kwargs = trained[0], {"steps": 1, "patch": 32}
        image = np.stack([image, image])  # two channels, the model takes one
    elif case == "batch_norm":  # global pooling of one 32×32 patch: batch norm over a single value
        model, kwargs = "linknet", {"options": segarch.zoo.card("linknet").test_config, "steps": 1, "patch": 32,
                                    "batch_size": 1, "val_fraction": 0}
    elif case.startswith("nan"):  # one bad pixel, anywhere in an object: not "the loss became nan, lower lr"
        rng = np.random.default_rng()
        image = image.astype(np.float32)
        image[tuple(rng.choice(np.argwhere(labels > 0)))] = rng.choice([np.nan, np.inf])
        if case == "nan_objects":
            model, kwargs = "dextr_light", {"options": {"features": [4, 8, 16, 32]}, "steps": 1}
    with pytest.raises(ValueError, match=match):
        segarch.train(model, image, labels, **kwargs)


def test_cli_train_writes_model_log_and_plot(tmp_path, capsys):
    import tifffile

    from segarch.cli import main

    images, labels = _data(2, seed=70)
    for i, (im, lab) in enumerate(zip(images, labels)):
        tifffile.imwrite(tmp_path / f"im{i}.tif", im)
        tifffile.imwrite(tmp_path / f"lab{i}.tif", lab)
    out = tmp_path / "cli.safetensors"
    rc = main(["train", str(tmp_path / "im0.tif"), str(tmp_path / "lab0.tif"), "--model", "unet", "--options",
               '{"features": [8, 16, 32]}', "--patch", "32", "--steps", "3", "--out", str(out)])
    assert rc == 0 and out.is_file() and (tmp_path / "cli.csv").is_file() and (tmp_path / "cli.png").is_file()
    err = capsys.readouterr().err
    assert "3/3 steps" in err and "finished after 3 steps" in err
    assert segarch.load_model(out).trained
    rc = main(["train", str(tmp_path / "im0.tif"), str(tmp_path / "lab1.tif")[:-4] + "x.tif", "--model", "unet",
               "--out", str(tmp_path / "x.safetensors")])
    assert rc == 2 and "no file or folder" in capsys.readouterr().err


@pytest.mark.parametrize("whole", [True, False])
def test_training_regions_use_the_whole_images_percentiles_as_predict_does(monkeypatch, whole):
    # A bright textured half and a dim noisy half: a background region normalised by its own percentiles
    # would stretch noise over [0, 1]; predict() freezes the whole image's, and training must match it.
    from segarch.preprocessing import DEFAULT_PREPROCESSING
    from segarch.preprocessing import Preprocessor
    from segarch.training import normalisation
    from segarch.training.normalisation import PerImagePreprocessing

    rng = np.random.default_rng()
    image = rng.normal(100, 3, (2, 96, 128)).astype(np.float32)  # two planes of a stack (axes TYX)
    image[:, :, :64] += rng.uniform(200, 1000) * rng.random((2, 96, 64))
    labels = (image > 150).astype(np.uint8)
    if not whole:  # the large-image path: percentiles from regions spread over the image
        monkeypatch.setattr(normalisation, "_WHOLE_IMAGE_VALUES", 1000)
    [source] = as_sources(image, labels, axes="TYX", mask=True, spatial_dims=2, in_channels=1)
    preprocess = PerImagePreprocessing(DEFAULT_PREPROCESSING, [source], (48, 48))
    expected = Preprocessor.calibrate(DEFAULT_PREPROCESSING, image.reshape(1, -1))
    item = make_items([source])[1]
    region = read_region(item, (10, 80), (32, 32), preprocess=preprocess, num_classes=2)
    raw = image[1, 10:42, 80:112][None]
    if whole:
        np.testing.assert_allclose(region.image, expected(raw), atol=1e-6)
    else:
        lo, hi = preprocess._by_source[id(source)].ranges[0]
        (lo_all, hi_all), = expected.ranges
        assert abs(lo - lo_all) < 0.02 * (hi_all - lo_all) and abs(hi - hi_all) < 0.1 * (hi_all - lo_all)
    # The dim half stays dim: it is not stretched to the region's own range.
    assert region.image.max() < 0.2
    assert region.image.max() - region.image.min() < 0.2
