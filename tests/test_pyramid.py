"""Coarse levels of the prediction store (segarch.tiling.pyramid): written as blocks finish, equal to the
pyramid of the finished result, kept through cancel/resume and cluster runs, read live by LevelView."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import zarr

import segarch
from segarch.io.pyramid import pyramid
from segarch.tiling.pyramid import LevelView, level_shapes, live_levels

pytestmark = pytest.mark.slow  # starts Dask clusters

sys.path.insert(0, str(Path(__file__).parent))
from test_tiling import SmallConvNet  # noqa: E402


def _levels(path) -> list[np.ndarray]:
    group = zarr.open_group(str(path), mode="r")
    names = sorted((k for k in group.array_keys() if k.isdigit()), key=int)
    return [group[k][:] for k in names]


def _assert_pyramid_of(path, result: np.ndarray, axes: str, labels: bool = True) -> None:
    stored = _levels(path)
    expected = [np.asarray(level) for level in pyramid(result, axes, labels=labels, levels=len(stored))]
    assert [s.shape for s in stored] == [e.shape for e in expected] == level_shapes(result.shape, axes)
    for k, (s, e) in enumerate(zip(stored, expected)):
        np.testing.assert_array_equal(s, e, err_msg=f"level {k}")


def test_level_shapes_halve_yx_until_a_screenful():
    assert level_shapes((1100, 1300), "YX") == [(1100, 1300), (550, 650), (275, 325), (137, 162)]
    assert level_shapes((3, 20, 600, 520), "TZYX") == [(3, 20, 600, 520), (3, 20, 300, 260), (3, 20, 150, 130)]
    assert level_shapes((200, 250), "YX") == [(200, 250)]
    assert level_shapes((2, 900, 300), "CYX")[1] == (2, 450, 150)


def test_labels_levels_equal_the_pyramid_of_the_result_with_blocks_that_straddle_windows(tmp_path):
    # tile 516 gives 516-pixel blocks: from level 3 on, a 2x2 window straddles two blocks.
    net = SmallConvNet(2, out_channels=3).eval()
    image = np.random.default_rng().normal(size=(1100, 1300)).astype(np.float32)
    out = segarch.predict(net, image, axes="YX", tile=516, overlap=8, out=tmp_path / "s.zarr")
    result = out[:]
    assert len(np.unique(result)) == 3
    _assert_pyramid_of(tmp_path / "s.zarr", result, "YX")
    image_meta = segarch.io.open_image(tmp_path / "s.zarr")  # listed in the multiscales, with their scales
    assert len(image_meta.levels) == 4 and image_meta.multiscale
    attrs = dict(zarr.open_group(str(tmp_path / "s.zarr"), mode="r").attrs)
    ms = (attrs.get("ome") or attrs)["multiscales"][0]
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2", "3"]
    assert ms["datasets"][2]["coordinateTransformations"][0]["scale"] == [4.0, 4.0]


def test_probabilities_of_a_time_series_and_3d_labels(tmp_path):
    net = SmallConvNet(2, out_channels=2).eval()
    series = np.random.default_rng().normal(size=(2, 600, 530)).astype(np.float32)
    out = segarch.predict(net, series, axes="TYX", tile=128, output="probabilities", out=tmp_path / "p.zarr")
    _assert_pyramid_of(tmp_path / "p.zarr", out[:], "TCYX", labels=False)

    net3 = SmallConvNet(3, out_channels=3).eval()
    volume = np.random.default_rng().normal(size=(12, 540, 300)).astype(np.float32)
    out3 = segarch.predict(net3, volume, axes="ZYX", tile=32, out=tmp_path / "v.zarr")
    _assert_pyramid_of(tmp_path / "v.zarr", out3[:], "ZYX")
    assert len(_levels(tmp_path / "v.zarr")) == 3  # 540 -> 270 -> 135 in Y; Z kept


def test_levels_after_cancel_hold_the_finished_blocks_and_resume_completes_them(tmp_path):
    net = SmallConvNet(2).eval()
    image = np.random.default_rng().normal(size=(1600, 1100)).astype(np.float32)
    reference = segarch.predict(net, image, axes="YX", tile=128)
    cancel, calls = threading.Event(), []

    def progress(done, total):
        calls.append(done)
        if len(calls) == 40:
            cancel.set()

    store = tmp_path / "c.zarr"
    with pytest.raises(segarch.PredictionCancelled) as err:
        segarch.predict(net, image, axes="YX", tile=128, batch_size=2, out=store, progress=progress, cancel=cancel)
    assert 0 < err.value.blocks_done < err.value.blocks_total
    partial = _levels(store)
    # Every finished block is in level 1 as the halving of level 0 there; nothing elsewhere.
    level0, level1 = partial[0], partial[1]
    expected1 = np.asarray(pyramid(level0, "YX", labels=True, levels=2)[1])
    np.testing.assert_array_equal(level1, expected1)
    assert level1.any() and not level1[-100:].any()
    resumed = segarch.predict(net, image, axes="YX", tile=128, batch_size=2, out=store, resume=True)
    np.testing.assert_array_equal(resumed[:], reference)
    _assert_pyramid_of(store, reference, "YX")


def test_a_cluster_run_rebuilds_the_levels_at_the_end(tmp_path):
    from distributed import Client, LocalCluster

    net = SmallConvNet(2).eval()
    image = np.random.default_rng().normal(size=(1100, 900)).astype(np.float32)
    single = segarch.predict(net, image, axes="YX", tile=128)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        out = segarch.predict(net, image, axes="YX", tile=128, out=tmp_path / "d.zarr", scheduler=client)
    np.testing.assert_array_equal(out[:], single)
    _assert_pyramid_of(tmp_path / "d.zarr", single, "YX")


def test_level_views_read_a_store_while_it_is_written(tmp_path, monkeypatch):
    from segarch.tiling import pyramid as module

    monkeypatch.setattr(module, "FLUSH_SECONDS", 0.0)  # coarse chunks written after every block
    store = tmp_path / "live.zarr"
    views = live_levels(store, (1100, 700), "YX", np.uint8)
    assert [v.shape for v in views] == level_shapes((1100, 700), "YX")
    assert views[1][10:20, 5].shape == (10,) and not views[1][:].any()  # zeros before the store exists
    assert np.asarray(views[2]).dtype == np.uint8 and views[0].ndim == 2 and len(views[0]) == 1100

    net = SmallConvNet(2).eval()
    image = np.random.default_rng().normal(size=(1100, 700)).astype(np.float32)
    seen = []

    def progress(done, total):  # read while the engine writes
        seen.append(int(np.count_nonzero(views[1][:])))

    out = segarch.predict(net, image, axes="YX", tile=128, out=store, progress=progress)
    assert seen[0] == 0 and seen[-1] > 0 and seen == sorted(seen)
    for view, level in zip(views, _levels(store)):
        np.testing.assert_array_equal(view[:], level)
    np.testing.assert_array_equal(views[0][100:300, 50:90], out[100:300, 50:90])
    with pytest.raises(ValueError, match=r"has shape \(1100, 700\), not the \(1100, 701\)"):
        LevelView(store, 0, (1100, 701), np.uint8)[0, 0]


def test_a_run_that_dies_with_coarse_chunks_in_memory_is_rebuilt_on_resume(tmp_path, monkeypatch):
    from segarch.tiling import pyramid as module

    net = SmallConvNet(2).eval()
    image = np.random.default_rng().normal(size=(1200, 1100)).astype(np.float32)
    reference = segarch.predict(net, image, axes="YX", tile=128)
    store = tmp_path / "k.zarr"
    cancel = threading.Event()
    monkeypatch.setattr(module, "flush", lambda levels, force=True: None)  # as if killed: nothing flushed
    with pytest.raises(segarch.PredictionCancelled):
        segarch.predict(net, image, axes="YX", tile=128, out=store, cancel=cancel,
                        progress=lambda done, total: cancel.set() if done > 0.6 * total else None)
    monkeypatch.undo()
    level1 = zarr.open_group(str(store), mode="r")["1"]
    assert level1.attrs["segarch-pyramid"] == "pending"  # the levels cannot be trusted
    resumed = segarch.predict(net, image, axes="YX", tile=128, out=store, resume=True)
    np.testing.assert_array_equal(resumed[:], reference)
    _assert_pyramid_of(store, reference, "YX")
    assert zarr.open_group(str(store), mode="r")["1"].attrs["segarch-pyramid"] == "fresh"
