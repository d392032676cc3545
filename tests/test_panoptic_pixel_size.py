"""``output="panoptic"`` on an image at another pixel size than the model's: resampled to the model's for the network,
the heads brought back to the image's grid (offsets rescaled, EfficientPS's fused channels nearest), the objects
found on the image's own grid. An oracle network (exact heads of the objects in its tile, read from class masks) at
pixel size 1 is given fresh scenes taken with pixels 2x larger (2D) or a Z step of 2.5x (3D).

The F1 bounds hold what ``python scripts/panoptic_pixel_size.py`` measured on fresh scenes (2D, pixels 2x: F1@0.5
1.000 median and minimum for both architectures over 5 scenes; 3D, Z step 2.5x: 1.000), with margin.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from scipy import ndimage

import segarch
from segarch.instances import match
from segarch.instances.blocks import DecodingCancelled
from segarch.instances.panoptic import center_offset_targets
from segarch.instances.panoptic_resample import HeadsOnImageGrid, channel_factors
from segarch.models.model import Model
from panoptic_helpers import cancel_in_the_decoding, random_scene
from panoptic_resample_helpers import MaskOracleHeads, at_pixel_size

RADIUS = {"panoptic_deeplab": 3, "deeperlab": 8}


def _model(arch: str, dims: int = 2, radius: float = 3) -> Model:
    model = Model(MaskOracleHeads(arch, dims, radius), arch, spatial_dims=dims, in_channels=2, out_channels=3,
                  preprocessing=[], class_names=["background", "a", "b"], pixel_size=[1.0] * dims)
    model.trained = True
    return model


def _options(arch: str, radius: float) -> dict:
    return {"radius": radius, "keypoints_are_logits": False} if arch == "deeperlab" else {}


def _scene(seed: int, factors):
    dims = len(factors)
    shape, sides, count = ((256, 256), (12, 25), 16) if dims == 2 else ((64, 96, 96), (8, 15), 8)
    labels, classes = random_scene(np.random.default_rng(seed), shape=shape, count=count, sides=sides)
    return at_pixel_size(labels, classes, factors)


TILED_2D = dict(axes="CYX", output="panoptic", tile=96, overlap=0.5, blend="crop", device="cpu")


@pytest.mark.parametrize("arch", ["panoptic_deeplab", "deeperlab"])
def test_an_image_with_pixels_twice_the_models_is_resampled_and_its_objects_found_on_its_grid(arch):
    seed = int(np.random.default_rng().integers(1 << 31))
    image, truth, truth_classes = _scene(seed, (2.0, 2.0))
    radius = RADIUS[arch]
    result, report = segarch.predict(_model(arch, radius=radius), image, pixel_size=[2.0, 2.0], **TILED_2D,
                                     instance_options={"block": 48, "halo": 24, "return_report": True,
                                                       "decoder_options": _options(arch, radius)})
    assert result.instances.shape == result.classes.shape == truth.shape == (128, 128), seed  # the image's grid
    assert report["pixel_size"]["resampled"] is True and report["pixel_size"]["network_shape"] == [256, 256]
    assert "resampled the image" in report["pixel_size"]["note"]
    # lengths given as trained (model pixels) are used in the image's: half
    used = report["pixel_size"]["decoder_options"]
    assert used["nms_kernel"] == 3 and (arch != "deeperlab" or used["radius"] == radius / 2)
    assert match(truth, result.instances.astype(np.int64)).f1(0.5) >= 0.9, seed
    assert (np.asarray(result.classes) == truth_classes).mean() > 0.97, seed
    assert report["objects"] >= 14, seed


@pytest.mark.parametrize("arch", ["panoptic_deeplab", pytest.param("deeperlab", marks=pytest.mark.slow)])
def test_an_anisotropic_stack_is_resampled_in_z_and_its_objects_found_on_its_grid(arch):
    seed = int(np.random.default_rng().integers(1 << 31))
    image, truth, truth_classes = _scene(seed, (2.5, 1.0, 1.0))
    result, report = segarch.predict(_model(arch, 3, radius=6), image, axes="CZYX", output="panoptic",
                                     pixel_size=[2.5, 1.0, 1.0], tile=48, overlap=0.5, blend="crop", device="cpu",
                                     instance_options={"block": 24, "halo": 12, "return_report": True,
                                                       "decoder_options": _options(arch, 6)})
    assert result.instances.shape == truth.shape == (26, 96, 96), seed
    assert report["pixel_size"]["network_shape"] == [65, 96, 96]
    assert match(truth, result.instances.astype(np.int64)).f1(0.5) >= 0.85, seed
    assert (np.asarray(result.classes) == truth_classes).mean() > 0.97, seed


def test_the_pixel_size_comes_from_the_ome_zarr_metadata_and_a_close_one_is_left_alone(tmp_path):
    from segarch import io

    seed = int(np.random.default_rng().integers(1 << 31))
    image, truth, _ = _scene(seed, (2.0, 2.0))
    coarse = tmp_path / "coarse.ome.zarr"
    io.write_ome_zarr(coarse, image, axes="CYX", scale=(1.0, 2.0, 2.0))
    options = {"output": "panoptic", "tile": 96, "overlap": 0.5, "blend": "crop", "device": "cpu"}
    result, report = segarch.predict(_model("panoptic_deeplab"), str(coarse), **options,
                                     instance_options={"block": 48, "halo": 24, "return_report": True})
    assert report["pixel_size"]["source"] == "metadata" and report["pixel_size"]["resampled"] is True
    assert match(truth, result.instances.astype(np.int64)).f1(0.5) >= 0.9, seed
    # within 10% of the model's: neither refused nor resampled
    _, same = segarch.predict(_model("panoptic_deeplab"), image, axes="CYX", pixel_size=1.08, **options,
                              instance_options={"block": 48, "halo": 24, "return_report": True})
    assert same["pixel_size"]["resampled"] is False and "not resampled" in same["pixel_size"]["note"]


def test_out_of_core_resumes_after_a_cancel_and_equals_the_in_memory_run(tmp_path):
    seed = int(np.random.default_rng().integers(1 << 31))
    image, truth, _ = _scene(seed, (2.0, 2.0))
    model = _model("panoptic_deeplab")
    options = dict(pixel_size=[2.0, 2.0], **TILED_2D)
    blocks = {"block": 48, "halo": 24}
    here = segarch.predict(model, image, **options, instance_options=blocks)
    cancel, stop_in_the_decoding = cancel_in_the_decoding()  # once the network pass is complete

    out = tmp_path / "scene.zarr"
    with pytest.raises(DecodingCancelled):
        segarch.predict(model, image, out=out, cancel=cancel, progress=stop_in_the_decoding, **options,
                        instance_options=blocks)
    assert (tmp_path / "scene.zarr.heads").is_dir()  # the heads on the model's grid, kept for the resume
    there = segarch.predict(model, image, out=out, resume=True, **options, instance_options=blocks)
    assert np.array_equal(there.instances[:], here.instances) and np.array_equal(there.classes[:], here.classes)
    assert there.instances.shape == truth.shape
    import zarr

    scale = zarr.open_group(str(out / "instances"), mode="r").attrs["ome"]["multiscales"][0]["datasets"][0]
    assert scale["coordinateTransformations"][0]["scale"] == [2.0, 2.0]  # the image's pixel size
    assert not (tmp_path / "scene.zarr.heads").exists()


def test_an_image_too_large_to_resample_in_memory_is_predicted_at_its_own_pixel_size(monkeypatch, caplog):
    import segarch.instances.resample as resample

    image, truth, _ = _scene(int(np.random.default_rng().integers(1 << 31)), (2.0, 2.0))
    monkeypatch.setattr(resample, "_free_memory", lambda: 1e5)  # a machine with 100 kB free: 256² does not fit
    with caplog.at_level(logging.WARNING, logger="segarch.instances"):
        result, report = segarch.predict(_model("panoptic_deeplab"), image, pixel_size=2.0, **TILED_2D,
                                         instance_options={"block": 48, "halo": 24, "return_report": True})
    assert report["pixel_size"]["resampled"] is False and "too large to resample in memory" in \
        report["pixel_size"]["note"]
    assert "too large to resample in memory" in caplog.text
    assert result.instances.shape == truth.shape


def test_offsets_on_the_image_grid_point_at_the_objects_centres_there():
    rng = np.random.default_rng()
    labels, _ = random_scene(rng, shape=(120, 120), count=6, sides=(14, 25))
    center, offset = center_offset_targets(labels, sigma=3)  # at the model's pixel size 1
    heads = np.concatenate([center, offset])
    scale = np.array([1 / 2.0, 1 / 1.5])  # the image's pixels: 2 by 1.5 of the model's
    view = HeadsOnImageGrid(heads, 0, (60, 80), channel_factors({"center": (0, 1), "offset": (1, 3)}, scale))
    small = at_pixel_size(labels, labels, (2.0, 1.5))[1]
    got = np.asarray(view)
    assert got.shape == (3, 60, 80)
    grid = np.stack(np.meshgrid(np.arange(60), np.arange(80), indexing="ij")).astype(np.float32)
    errors = []
    for i in range(1, labels.max() + 1):
        inner = ndimage.binary_erosion(small == i)  # the border's pixels mix in the background's zeros
        centre_image = (np.argwhere(labels == i).mean(0) + 0.5) * scale - 0.5  # the centre, in the image's pixels
        pointed = (grid + got[1:])[:, inner].T
        errors.append(np.abs(pointed - centre_image).max())
    assert max(errors) < 1.0, errors  # unscaled offsets would miss by half an object


def test_fused_channels_are_taken_nearest_never_averaged():
    rng = np.random.default_rng()
    codes = rng.integers(0, 4, size=(23, 17))
    one_hot = np.log(np.eye(4, dtype=np.float32)[codes].transpose(2, 0, 1) * 0.994 + 1e-3)
    for shape in ((46, 34), (10, 9), (23, 40)):
        got = np.asarray(HeadsOnImageGrid(one_hot, 0, shape, nearest=True))
        assert np.isin(got, one_hot).all()  # only values that were there
        rows = np.minimum(((np.arange(shape[0]) + 0.5) * 23 / shape[0]).astype(int), 22)
        cols = np.minimum(((np.arange(shape[1]) + 0.5) * 17 / shape[1]).astype(int), 16)
        assert np.array_equal(got.argmax(0), codes[np.ix_(rows, cols)])  # each pixel the code under its centre
    window = HeadsOnImageGrid(one_hot, 0, (46, 34), nearest=True)[1:3, 5:20, 7]
    assert np.array_equal(window, np.asarray(HeadsOnImageGrid(one_hot, 0, (46, 34), nearest=True))[1:3, 5:20, 7])


@pytest.mark.slow  # an EfficientPS trained 400 steps (about 60-100 s)
def test_efficientps_fused_channels_come_back_nearest_on_a_finer_image():
    """EfficientPS at pixels half the model's: the image resampled down for the network, each tile fused, the fused
    classes and objects brought back nearest: the objects and classes of the image at the model's pixel size, each
    pixel repeated."""
    import dataclasses

    from skimage.transform import resize

    from panoptic_helpers import trained_efficientps

    model, image, labels, _ = trained_efficientps(0)
    model = dataclasses.replace(model, pixel_size=[1.0, 1.0])
    options = dict(output="panoptic", tile=64, overlap=0.5, blend="crop", device="cpu", axes="YX")
    native = segarch.predict(model, image, **options, instance_options={"block": 48, "halo": 24})
    fine_image = resize(image, (256, 256), order=1, preserve_range=True).astype(np.float32)
    fine, report = segarch.predict(model, fine_image, pixel_size=0.5, **options,
                                   instance_options={"block": 96, "halo": 48, "return_report": True})
    assert report["pixel_size"]["resampled"] is True and fine.instances.shape == (256, 256)
    repeated = np.repeat(np.repeat(labels, 2, 0), 2, 1)
    assert report["objects"] == 2
    for square in (1, 2):  # one object per square, of the square's class
        inside = fine.instances[repeated == square]
        assert (inside > 0).mean() > 0.8 and len(np.unique(inside[inside > 0])) == 1
        assert np.bincount(fine.classes[repeated == square]).argmax() == square
    # nearest: the fused classes as at the model's pixel size, each pixel twice along each axis
    assert (fine.classes == np.repeat(np.repeat(native.classes, 2, 0), 2, 1)).mean() > 0.98
    assert set(np.unique(fine.classes)) <= {0, 1, 2}
