"""segarch.prompts.propagate: one object carried slice to slice through a stack with the 2D model."""

from __future__ import annotations

import numpy as np
import pytest

from segarch import pretrained
from segarch.prompts import extreme_points, propagate
from segarch.prompts.evaluate import iou
from segarch.prompts.label_store import LabelStore


@pytest.fixture(scope="module")
def model2d():
    return pretrained.load("dextr_light.objects2d")


def _ellipsoid_stack(rng, depth=24):
    """A noisy stack with one bright ellipsoid over a random run of slices (drifting in y as z grows)."""
    z0 = int(rng.integers(3, 8))
    z1 = int(rng.integers(depth - 8, depth - 3))
    centre = rng.uniform(40, 56, 2)
    radii = rng.uniform(12, 20, 2)
    zz, yy, xx = np.ogrid[:depth, :96, :96]
    t = (zz - (z0 + z1) / 2) / ((z1 - z0) / 2 + 0.5)
    truth = ((yy - centre[0] - 0.5 * (zz - z0)) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2 <= 1 - t ** 2
    truth &= (zz >= z0) & (zz <= z1)
    image = rng.normal(100, 6, truth.shape) + 90 * truth
    return image.astype(np.float32), truth


def test_propagation_follows_the_object_and_stops_where_it_ends(model2d):
    rng = np.random.default_rng()
    image, truth = _ellipsoid_stack(rng)
    areas = truth.sum(axis=(1, 2))
    z = int(areas.argmax())
    seen = []
    obj = propagate(model2d, image, z, points=extreme_points(truth[z]), progress=lambda d, t: seen.append((d, t)))
    first, last = obj.extent
    true_first, true_last = np.nonzero(areas)[0][[0, -1]]
    assert abs(first - true_first) <= 2 and abs(last - true_last) <= 2, (obj.extent, (true_first, true_last))
    assert iou(obj.volume(image.shape), truth) > 0.75
    assert set(obj.stopped) == {"up", "down"}
    assert seen and seen[-1][0] == seen[-1][1]  # progress ends complete
    # The same from a mask crop instead of clicks, and one way only.
    ys, xs = np.nonzero(truth[z])
    crop = truth[z, ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    up = propagate(model2d, image, z, mask=crop, offset=(ys.min(), xs.min()), directions="up")
    assert min(up.slices) == z and np.array_equal(up.slices[z][0], crop)
    assert abs(max(up.slices) - true_last) <= 2


def test_user_stop_keeps_the_slices_so_far_and_paints_one_id(model2d, tmp_path):
    rng = np.random.default_rng()
    image, truth = _ellipsoid_stack(rng)
    z = int(truth.sum(axis=(1, 2)).argmax())
    calls = []
    obj = propagate(model2d, image, z, points=extreme_points(truth[z]),
                    should_stop=lambda: calls.append(1) or len(calls) > 3)
    assert len(obj.slices) == 4 and "stopped by the user" in obj.stopped.values()
    store = LabelStore.create(tmp_path / "l.zarr", image.shape)
    label = obj.paint(store)
    assert label == 1 and store.next_label == 2
    assert np.array_equal(store.array[:] == 1, obj.volume(image.shape))
    assert sorted(np.nonzero(store.array[:].any(axis=(1, 2)))[0].tolist()) == sorted(obj.slices)


def test_bad_input_is_refused_with_a_message(model2d):
    image = np.random.default_rng().normal(size=(64, 64)).astype(np.float32)
    with pytest.raises(ValueError, match=r"needs a stack.*\(64, 64\).*segment_from_points"):
        propagate(model2d, image, 0, points=[[1, 1], [1, 9], [0, 5], [5, 5]])
    stack = np.zeros((5, 64, 64), np.float32)
    with pytest.raises(ValueError, match=r"`z` must be a slice index in \[0, 4\], got 5"):
        propagate(model2d, stack, 5, points=[[1, 1], [1, 9], [0, 5], [5, 5]])
    with pytest.raises(ValueError, match="either `points`.*or `mask`, not neither"):
        propagate(model2d, stack, 2)
    with pytest.raises(ValueError, match="`mask` is empty"):
        propagate(model2d, stack, 2, mask=np.zeros((4, 4), bool))
    with pytest.raises(ValueError, match="`min_area` must be a number in"):
        propagate(model2d, stack, 2, mask=np.ones((4, 4), bool), min_area=2)
    with pytest.raises(ValueError, match=r"`scales` must be one or more numbers in \[0.3, 3\].*got \(\)"):
        propagate(model2d, stack, 2, mask=np.ones((4, 4), bool), scales=())
    with pytest.raises(ValueError, match="must be a 2D extreme-point model, got a 3D"):
        propagate(pretrained.load("dextr_light.objects3d"), stack, 2, mask=np.ones((4, 4), bool))
