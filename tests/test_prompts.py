"""segarch.prompts: extreme points, the DEXTR recipe and the shipped extreme-point model (no GUI)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import segarch
from segarch import pretrained
from segarch.prompts import DEFAULTS, check_points, extreme_points, object_scene, segment_from_points
from segarch.prompts.evaluate import evaluate_prompts, iou
from segarch.prompts.recipe import crop_box

pytestmark = pytest.mark.slow  # trains models


@pytest.fixture(scope="module")
def shipped():
    return pretrained.load("dextr_light.objects2d")


@pytest.mark.parametrize("shape", [(96, 96), (32, 48, 48)])
def test_extreme_points_of_generated_masks_round_trip(shape):
    _, labels = object_scene(shape, seed=3)
    assert labels.max() >= 2
    for value in range(1, int(labels.max()) + 1):
        mask = labels == value
        pts = extreme_points(mask)
        dims = len(shape)
        assert pts.shape == (2 * dims, dims)
        assert mask[tuple(pts.T)].all()  # every point is an object pixel
        coords = np.argwhere(mask)
        # 2D: left, right (X), top, bottom (Y); 3D: Z, Y, X; each at its axis' extreme.
        axes = (1, 0) if dims == 2 else (0, 1, 2)
        for k, axis in enumerate(axes):
            assert pts[2 * k, axis] == coords[:, axis].min()
            assert pts[2 * k + 1, axis] == coords[:, axis].max()
        # The points' box is the mask's box: nothing of the object lies outside.
        np.testing.assert_array_equal(pts.min(0), coords.min(0))
        np.testing.assert_array_equal(pts.max(0), coords.max(0))
        np.testing.assert_array_equal(extreme_points(mask), pts)  # deterministic


def test_extreme_points_break_ties_at_the_middle_of_a_flat_edge():
    mask = np.zeros((5, 7), bool)
    mask[1:4, 2:6] = True
    assert extreme_points(mask).tolist() == [[2, 2], [2, 5], [1, 4], [3, 4]]


def test_extreme_points_errors():
    with pytest.raises(ValueError, match="empty"):
        extreme_points(np.zeros((4, 4)))
    with pytest.raises(ValueError, match="2D .* or 3D"):
        extreme_points(np.ones(5))


@pytest.mark.parametrize("points,message", [
    ([[1, 1], [5, 5], [1, 5]], r"3 given, at least 4 are needed in 2D"),
    ([[1, 1], [5, 5], [1, 5], [20, 3]], r"`points`\[3\] = \(20.0, 3.0\) lies outside the image of shape \(16, 16\)"),
    ([[1, 1], [5, 5], [1, 5], [-1, 3]], r"`points`\[3\] .* lies outside"),
    ([[4, 4]] * 4, r"degenerate: all 4 are at \(4.0, 4.0\)"),
    ([[1, 1, 1]] * 4, r"shape \(N, 2\)"),
    ([[1, 1], [5, np.nan], [1, 5], [3, 3]], r"NaN"),
])
def test_bad_points_give_clear_messages(points, message):
    with pytest.raises(ValueError, match=message):
        check_points(points, (16, 16))


def test_segment_from_points_errors(shipped):
    image = np.zeros((32, 32), np.float32)
    good = [[5, 5], [20, 20], [5, 20], [20, 5]]
    with pytest.raises(ValueError, match="at least 4 are needed"):
        segment_from_points(shipped, image, good[:3])
    with pytest.raises(ValueError, match="outside the image"):
        segment_from_points(shipped, image, good[:3] + [[40, 2]])
    with pytest.raises(ValueError, match="degenerate"):
        segment_from_points(shipped, image, [[3, 3]] * 4)
    with pytest.raises(ValueError, match="3 channel"):
        segment_from_points(shipped, np.zeros((3, 32, 32)), good)
    with pytest.raises(ValueError, match="`size` must be a positive multiple of the model's size divisor 8"):
        segment_from_points(shipped, image, good, size=30)
    with pytest.raises(ValueError, match="`axes`"):
        segment_from_points(shipped, image, good, axes="ZX")


@pytest.mark.parametrize("name, shape, scenes", [("dextr_light.objects2d", (160, 160), 6),
                                                  ("dextr_light.objects3d", (48, 64, 64), 10)])
def test_shipped_model_reaches_its_stated_iou_on_fresh_objects(name, shape, scenes):
    card = pretrained.card(name)
    stated = card["test"]["mean_iou"]
    model = pretrained.load(name)
    assert model.spatial_dims == len(shape) == card["spatial_dims"] and model.prompt in (None, {
        k: v for k, v in card["prompt"].items() if k != "points"})
    # Other seeds than training (11·100003+, 12·100003+) and the cards' tests (7001+, 7002+).
    result = evaluate_prompts(model, scenes=scenes, seed=424242, shape=shape)
    assert result["objects"] >= 20
    assert result["mean_iou"] >= stated - 0.06, result
    assert result["median_iou"] >= stated - 0.06, result


def test_return_crop_pastes_to_the_full_mask_and_reads_only_the_crop(shipped):
    image, labels = object_scene((160, 160), seed=77)
    mask = labels == 1
    pts = extreme_points(mask)

    class Recording(np.ndarray):
        requests: list = []

        def __getitem__(self, index):
            Recording.requests.append(index)
            return np.asarray(super().__getitem__(index))

    lazy = image.view(Recording)
    full = segment_from_points(shipped, lazy, pts)
    crop, offset = segment_from_points(shipped, image, pts, return_crop=True)
    start, stop = crop_box(pts, image.shape, DEFAULTS["dextr_light"][2])
    assert offset == start and crop.shape == tuple(b - a for a, b in zip(start, stop))
    pasted = np.zeros_like(full)
    pasted[start[0]:stop[0], start[1]:stop[1]] = crop
    np.testing.assert_array_equal(pasted, full)
    assert not full[:start[0]].any() and not full[stop[0]:].any()
    # Only the crop was read from the image.
    assert Recording.requests == [(slice(start[0], stop[0]), slice(start[1], stop[1]))]
    assert iou(full, mask) > 0.8


def test_dask_image_gives_the_numpy_result(shipped):
    import dask.array as da

    image, labels = object_scene((160, 160), seed=78)
    pts = extreme_points(labels == 2)
    expected = segment_from_points(shipped, image, pts)
    np.testing.assert_array_equal(segment_from_points(shipped, da.from_array(image, chunks=40), pts), expected)
    # Channel-last and channel-first images with one channel are the same image.
    np.testing.assert_array_equal(segment_from_points(shipped, image[..., None], pts, axes="YXC"), expected)
    np.testing.assert_array_equal(segment_from_points(shipped, image[None], pts), expected)


def test_3d_recipe_with_six_points_stays_in_the_crop():
    torch.manual_seed(0)
    model = segarch.Model.from_zoo("dextr_light", spatial_dims=3, in_channels=2, out_channels=1,
                                   class_names=["object"], features=(4, 8, 16, 32))
    image, labels = object_scene((32, 64, 64), seed=5)
    pts = extreme_points(labels == 1)
    with pytest.raises(ValueError, match="at least 6 are needed in 3D"):
        segment_from_points(model, image, pts[:4])
    crop, offset = segment_from_points(model, image, pts, return_crop=True, threshold=0.01)
    start, stop = crop_box(pts, image.shape, DEFAULTS["dextr_light"][3])
    assert offset == start and crop.shape == tuple(b - a for a, b in zip(start, stop))
    full = segment_from_points(model, image, pts, threshold=0.01)
    assert full.shape == image.shape and full.sum() == crop.sum()


def test_a_single_small_volume_runs_as_two_copies_with_the_same_probability():
    # PyTorch's native batch-1 3D convolution is 2-4x slower than oneDNN; the copy must not change the answer.
    from segarch.prompts.segment import _needs_batch_of_two, object_probability

    model = pretrained.load("dextr_light.objects3d")  # first level: 16 channels
    x = torch.rand(1, 2, 32, 32, 32, generator=torch.Generator().manual_seed(int(np.random.randint(1 << 30))))
    assert _needs_batch_of_two(model.network, x)
    assert not _needs_batch_of_two(model.network, torch.rand(1, 2, 48, 48, 48))  # 16 × 48 × 48 takes oneDNN
    assert not _needs_batch_of_two(model.network, torch.rand(2, 2, 32, 32, 32))
    assert not _needs_batch_of_two(pretrained.load("dextr_light.objects2d").network, torch.rand(1, 2, 64, 64))
    model.network.eval()
    with torch.no_grad():
        expected = torch.softmax(model.network(x), dim=1)[:, 1:2]
        got = object_probability(model, x)
    assert got.shape == (1, 1, 32, 32, 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_prompts_is_inference_only_and_keeps_deprecated_aliases_of_what_moved_to_training():
    import subprocess
    import sys

    code = "import sys, segarch.prompts; print(sorted(m for m in sys.modules if m.startswith('segarch.training')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr
    import segarch.prompts
    import segarch.training

    for name in ("fine_tune", "training_pairs"):
        with pytest.warns(DeprecationWarning, match=f"segarch.prompts.{name} moved to segarch.training.{name}"):
            alias = getattr(segarch.prompts, name)
        assert alias is getattr(segarch.training, name)
    with pytest.raises(AttributeError, match="no attribute 'fine_tuning'"):
        segarch.prompts.fine_tuning


def test_the_training_script_runs_end_to_end_in_small(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "scripts" / "train_dextr_light.py"
    result = subprocess.run([sys.executable, str(script), "--steps", "3", "--scenes", "4", "--features", "4", "8", "16",
                             "32", "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    card = json.loads((tmp_path / "dextr_light.objects2d.json").read_text())
    assert card["training"]["steps"] == 3 and card["training"]["trainer"] == "segarch.train"
    assert 0 <= card["test"]["mean_iou"] <= 1 and card["test"]["objects"] > 100
    model = segarch.load_model(tmp_path / "dextr_light.objects2d.safetensors")
    assert model.trained and model.prompt == {k: v for k, v in card["prompt"].items() if k != "points"}
    assert (tmp_path / "dextr_light.objects2d.csv").is_file() and (tmp_path / "dextr_light.objects2d.png").is_file()
    # --remeasure measures the written model again on the same scenes: the same IoU, the card rewritten.
    first = card["test"]
    card["test"] = {"mean_iou": -1.0}
    (tmp_path / "dextr_light.objects2d.json").write_text(json.dumps(card))
    again = subprocess.run([sys.executable, str(script), "--remeasure", "--out", str(tmp_path)], capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    remeasured = json.loads((tmp_path / "dextr_light.objects2d.json").read_text())
    assert remeasured["test"]["objects"] == first["objects"]
    assert remeasured["test"]["mean_iou"] == pytest.approx(first["mean_iou"], abs=2e-4)
    assert remeasured["training"] == card["training"] and remeasured["name"] == "dextr_light.objects2d"
