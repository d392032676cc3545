"""Lazy inputs read in the engine's threads while another thread slices Dask arrays with Dask's global
callbacks on, as napari does on its GUI thread (its opportunistic block cache is a ``dask.cache.Cache``)."""

from __future__ import annotations

import threading

import dask.array as da
import numpy as np
import pytest
import torch
from dask.cache import Cache
from dask.callbacks import Callback
from torch import nn

import segarch
from segarch.arrays import compute_here
from segarch.tiling.source import ImageSource


class _Net(nn.Module):
    spatial_dims = 2

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 2, 3, padding=1))

    def forward(self, x):
        return self.body(x)


def _slicing_like_a_gui(array: da.Array, cache: Cache, stop: threading.Event, errors: list) -> None:
    """Slice random regions of ``array`` as napari does: inside the cache's context (a global callback)."""
    rng = np.random.default_rng(1)
    try:
        while not stop.is_set():
            y, x = rng.integers(0, array.shape[0] - 200), rng.integers(0, array.shape[1] - 200)
            with cache:
                np.asarray(array[y: y + 200, x: x + 200])
    except BaseException as err:  # reported by the test
        errors.append(err)


def test_compute_here_leaves_the_global_callbacks_alone():
    seen = []

    class Recorder(Callback):
        def _start(self, dsk):
            seen.append(len(dsk))

    pixels = np.random.default_rng().random((10, 10))
    array = da.from_array(pixels, chunks=5) + 1
    with Recorder():
        before = set(Callback.active)
        np.testing.assert_array_equal(compute_here(array[2:7, 3:9]), pixels[2:7, 3:9] + 1)
        np.testing.assert_array_equal(ImageSource(array, "dask").read((slice(0, 4), 5)), pixels[:4, 5] + 1)
        assert set(Callback.active) == before  # not swapped out while computing
    assert seen == []  # the global callback was not run for these computes
    assert isinstance(compute_here(np.ones(3)), np.ndarray) and compute_here([1, 2]).tolist() == [1, 2]


@pytest.mark.slow
def test_predict_on_a_dask_image_while_another_thread_slices_with_the_cache():
    rng = np.random.default_rng()
    pixels = rng.random((1500, 1400), dtype=np.float32)
    image = da.from_array(pixels, chunks=256).map_blocks(lambda b: b * 2.0, dtype=np.float32)
    net = _Net()
    expected = segarch.predict(net, pixels * 2.0, axes="YX", tile=128, batch_size=2)

    cache = Cache(2e8)
    stop, errors = threading.Event(), []
    slicer = threading.Thread(target=_slicing_like_a_gui, args=(image, cache, stop, errors), daemon=True)
    slicer.start()
    try:
        for _ in range(3):  # each run reads ~170 regions while the other thread slices
            result = segarch.predict(net, image, axes="YX", tile=128, batch_size=2)
            np.testing.assert_array_equal(result, expected)
    finally:
        stop.set()
        slicer.join(timeout=30)
    assert not errors, f"the slicing thread failed: {errors[0]!r}"
    assert Callback.active == set()  # nothing left registered


def test_the_engine_never_fills_the_viewers_cache():
    # The cache is for what the viewer shows; the engine's reads must not evict it or grow it.
    image = da.from_array(np.random.default_rng().random((600, 600), dtype=np.float32), chunks=100) * 1.0
    cache = Cache(2e8)
    cache.register()  # as napari.utils.resize_dask_cache does
    try:
        segarch.predict(_Net(), image, axes="YX", tile=64, batch_size=2)
    finally:
        cache.unregister()
    assert len(cache.cache.data) == 0


@pytest.mark.slow
def test_training_and_prompts_read_lazy_images_without_the_global_callbacks():
    # Training and the Extreme points dock read regions in worker threads while napari slices: the same rule.
    from segarch.prompts import segment_from_points
    from segarch.training.data import as_sources, label_stats, make_items, read_region
    from segarch.training.objects import object_boxes

    seen = []

    class Recorder(Callback):
        def _start(self, dsk):
            seen.append(len(dsk))

    rng = np.random.default_rng()
    pixels = rng.random((48, 48)).astype(np.float32)
    truth = np.zeros((48, 48), np.uint16)
    truth[10:20, 12:30] = 1
    truth[30:40, 5:15] = 2
    image, labels = da.from_array(pixels, chunks=16) * 1.0, da.from_array(truth, chunks=16)
    clicker = segarch.Model.from_zoo("dextr_light", in_channels=2, features=(4, 8, 16, 32))
    with Recorder():
        mask = segment_from_points(clicker, image, [[15, 12], [15, 29], [10, 20], [19, 20]])
        sources = as_sources(image, labels, axes="YX", mask=None, spatial_dims=2, in_channels=1)
        assert label_stats(sources) == (0, 2)
        region = read_region(make_items(sources)[0], (8, 8), (16, 16), preprocess=lambda x, item: x)
        assert set(object_boxes(labels)) == {1, 2}
    assert seen == []  # none of these reads ran napari's (global) callbacks
    assert mask.shape == (48, 48)
    np.testing.assert_array_equal(region.image[0], pixels[8:24, 8:24])
