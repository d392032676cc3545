"""The Extreme points widget on a 20000² slide: a multiscale labels store (OME-Zarr pyramid) and a multiscale layer
over it, so napari reads one tile of one level, never the whole plane."""

from __future__ import annotations

import os
import threading
import time
import tracemalloc

import numpy as np
import pytest
import zarr

from segarch.prompts import extreme_points
from segarch.prompts.evaluate import iou
from tests.lazy_objects import box_of, disc_centres, disc_mask, lazy_disc_pyramid
from tests.test_prompt_widget import _click, _correct, widget  # noqa: F401 - the fixture

pytestmark = pytest.mark.gui

MIB = 2 ** 20


class PeakRSS:
    """The process's resident memory, sampled every 10 ms in a thread: its peak above the value at start."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.start = self.peak = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.01)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.now()) - self.start


def _shown_is_stored(labels, lead: tuple = ()) -> None:
    """The tile napari holds for the layer is what the store's shown level holds there (``lead``: the shown slice's
    index along the leading axes of a stack)."""
    level = labels.data[labels.data_level]
    corner = labels.corner_pixels[:, len(lead):]
    tile = tuple(lead) + tuple(slice(int(a), int(b) + 1) for a, b in zip(corner[0], corner[1]))
    assert np.array_equal(labels._slice.image.raw, np.asarray(level[tile])), f"level {labels.data_level}"


def _assert_levels_are_level0_downsampled(levels) -> None:
    """Every level equals level 0 taken every 2**k-th pixel: compared block by block (level 0 is never read whole)."""
    cy, cx = levels[0].chunks
    height, width = levels[0].shape
    for y in range(0, height, cy):
        for x in range(0, width, cx):
            block = np.asarray(levels[0][y:y + cy, x:x + cx])
            for k, level in enumerate(levels[1:], start=1):
                f = 2 ** k
                rows = slice(y // f, min(-(-(y + block.shape[0]) // f), level.shape[0]))
                cols = slice(x // f, min(-(-(x + block.shape[1]) // f), level.shape[1]))
                want = block[::f, ::f][:rows.stop - rows.start, :cols.stop - cols.start]
                assert np.array_equal(np.asarray(level[rows, cols]), want), f"level {k} at block ({y}, {x})"


def _centre(viewer) -> np.ndarray:
    """The middle 24×24 pixels of the canvas (RGB), where the camera looks."""
    shot = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3].astype(int)
    y, x = shot.shape[0] // 2, shot.shape[1] // 2
    return shot[y - 12:y + 12, x - 12:x + 12]


def _look_at(viewer, qtbot, centre, zoom) -> None:
    viewer.camera.center = tuple(float(v) for v in centre)
    viewer.camera.zoom = zoom
    qtbot.wait(300)  # the canvas redraws: the multiscale layer picks its level and tile


def test_20000_slide_multiscale_labels_objects_corrections_undo_in_bounded_memory(widget, qtbot, tmp_path):  # noqa: F811
    from segarch.prompts.clicks import next_click

    viewer = widget.viewer
    shape = (20000, 20000)
    discs = disc_centres(shape, 20, seed=int(np.random.default_rng().integers(1 << 30)), radius=(20, 28))
    viewer.add_image(lazy_disc_pyramid(shape, discs, levels=8), multiscale=True, name="slide",
                     contrast_limits=(0, 300))
    widget.labels_folder = tmp_path
    widget.image_combo.setCurrentText("slide")
    widget.model_combo.setCurrentText("dextr_light.clicks2d")
    qtbot.wait(300)

    rss = PeakRSS()
    tracemalloc.start()
    widget.start()
    labels = viewer.layers["slide objects"]
    levels = list(labels.data)
    assert labels.multiscale and len(levels) == 8 and levels[0].shape == shape and levels[-1].shape == (156, 156)
    assert all(isinstance(level, zarr.Array) for level in levels) and (tmp_path / "slide objects.zarr" / "7").is_dir()
    updates = []
    labels.events.labels_update.connect(lambda event: updates.append(event.data.shape))

    ious = []
    for n, disc in enumerate(discs[:19], start=1):
        start, size = box_of(disc, pad=6)
        truth = disc_mask(disc, start, size)
        _click(widget, qtbot, extreme_points(truth) + np.asarray(start))
        assert widget.last_error == "" and widget.history[-1].label == n
        ious.append(iou(np.asarray(levels[0][tuple(slice(s, s + z) for s, z in zip(start, size))]) == n, truth))
    assert np.mean(ious) > 0.85, ious
    _shown_is_stored(labels)  # zoomed out: a coarse level, its tile updated region by region
    assert labels.data_level > 0 and updates and max(np.prod(s) for s in updates) <= 64 * 64

    # The 20th object, zoomed in on level 0: points pulled inward (a rim for corrective clicks to add), 2 clicks.
    start, size = box_of(discs[19], pad=12)
    window = tuple(slice(s, s + z) for s, z in zip(start, size))
    truth = disc_mask(discs[19], start, size)
    _look_at(viewer, qtbot, discs[19][:2], zoom=2.0)
    assert labels.data_level == 0
    inner = extreme_points(truth).astype(float)
    inner += (np.asarray(size) / 2 - inner) * 0.25
    before = _centre(viewer)
    _click(widget, qtbot, inner + np.asarray(start))
    assert widget.last_error == "" and widget.current is not None
    masks = [np.asarray(levels[0][window]) == 20]
    _shown_is_stored(labels)
    qtbot.wait(100)
    painted = _centre(viewer)  # the canvas (the texture napari sent to the GPU) shows the object at its centre
    assert np.abs(painted - before).sum(axis=-1).mean() > 20, np.abs(painted - before).mean()
    for _ in range(2):
        click = next_click(masks[-1], truth)
        if click is None:  # the mask is the disc already
            break
        _correct(widget, qtbot, click[0] + np.asarray(start), click[1])
        assert widget.last_error == ""
        masks.append(np.asarray(levels[0][window]) == 20)
        _shown_is_stored(labels)
    assert len(masks) > 1 and iou(masks[-1], truth) > iou(masks[0], truth)
    for mask in masks[-2::-1]:  # undo one click at a time: the object as it was before that click, shown too
        widget.undo()
        assert np.array_equal(np.asarray(levels[0][window]) == 20, mask)
        _shown_is_stored(labels)
    widget.undo()  # the object: its id is free again
    assert not (np.asarray(levels[0][window]) == 20).any()
    _shown_is_stored(labels)
    qtbot.wait(100)
    assert np.abs(_centre(viewer) - before).max() <= 2  # and the canvas is as it was

    _, python_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    resident = rss.stop()
    # A single-level layer holds the whole 20000² plane: 1526 MiB of uint32 ids alone (plus its colours).
    print(f"resident growth {resident / MIB:.0f} MiB, Python heap peak {python_peak / MIB:.0f} MiB")
    assert python_peak < 200 * MIB and resident < 500 * MIB, (python_peak / MIB, resident / MIB)
    assert labels._slice.image.raw.nbytes < 32 * MIB

    on_disk = zarr.open_array(str(tmp_path / "slide objects.zarr" / "0"))
    assert int(on_disk.attrs["segarch_next_label"]) == 20
    _assert_levels_are_level0_downsampled([zarr.open_array(str(tmp_path / "slide objects.zarr" / str(k)))
                                           for k in range(len(levels))])
    # Zoomed out on the first object: a coarse level's tile shows it where the level's grid (every 2**k-th pixel of
    # level 0) meets its pixels, which a disc of radius >= 20 does up to 2**4 (its inscribed square is 28 wide).
    _look_at(viewer, qtbot, discs[0][:2], zoom=1 / 12)
    assert 1 <= labels.data_level <= 4
    _shown_is_stored(labels)
    f = 2 ** labels.data_level
    y, x, r = discs[0]
    around = np.asarray(levels[0][y - r - 6:y + r + 7, x - r - 6:x + r + 7]) == 1
    rows, cols = np.nonzero(around)
    on_grid = bool(np.any(((rows + y - r - 6) % f == 0) & ((cols + x - r - 6) % f == 0)))
    assert on_grid and 1 in set(np.unique(labels._slice.image.raw))


def test_multiscale_labels_of_another_shape_are_refused_untouched(widget, qtbot, tmp_path):  # noqa: F811
    from segarch.prompts.label_store import LabelStore

    viewer = widget.viewer
    shape = (600, 600)
    discs = disc_centres(shape, 1, seed=3)
    viewer.add_image(lazy_disc_pyramid(shape, discs, levels=2, chunks=256), multiscale=True, name="slide")
    store = LabelStore.create(tmp_path / "other.zarr", (600, 520), multiscale=True)
    viewer.add_labels(store.levels, multiscale=True, name="other")
    widget.image_combo.setCurrentText("slide")
    widget.labels_combo.setCurrentText("other")
    widget.start()
    start, size = box_of(discs[0], pad=6)
    widget.segment(extreme_points(disc_mask(discs[0], start, size)) + np.asarray(start))
    assert "shape (600, 520)" in widget.last_error and "(600, 600)" in widget.last_error
    assert not any(np.asarray(level[:]).any() for level in store.levels)
    assert not widget.history
    # Levels that cannot be written (lazy Dask arrays, e.g. an OME-Zarr opened by a reader): refused, named.
    import dask.array as da

    viewer.add_labels([da.zeros((600, 600), dtype="uint32", chunks=256),
                       da.zeros((300, 300), dtype="uint32", chunks=256)],
                      multiscale=True, name="lazy labels")
    widget.labels_combo.setCurrentText("lazy labels")
    widget.last_error = ""
    widget.segment(extreme_points(disc_mask(discs[0], start, size)) + np.asarray(start))
    assert "'lazy labels' holds Array levels" in widget.last_error and "nothing was written" in widget.last_error
    assert not widget.history


def test_stack_of_large_planes_gets_yx_levels_kept_through_propagation_and_undo(widget, qtbot, tmp_path,  # noqa: F811
                                                                                 monkeypatch):
    """3D: a stack whose planes are over the limit gets levels that halve Y and X only (its slices kept); a
    propagated object writes slice after slice, each kept in every level, and undo clears them all."""
    import napari_segarch._prompt_widget as prompt_widget
    from tests.test_prompt_widget_store import _wait_done
    from tests.test_propagate import _ellipsoid_stack

    monkeypatch.setattr(prompt_widget, "_LARGE_PIXELS", 256 * 256)  # a 600² plane counts as large here
    monkeypatch.setattr(prompt_widget, "_LEVELS_PIXELS", 256 * 256)
    rng = np.random.default_rng()
    small, small_truth = _ellipsoid_stack(rng)
    image = rng.normal(100, 6, (small.shape[0], 600, 600)).astype(np.float32)
    truth = np.zeros(image.shape, bool)
    y0, x0 = int(rng.integers(0, 500)), int(rng.integers(0, 500))
    image[:, y0:y0 + 96, x0:x0 + 96] = small
    truth[:, y0:y0 + 96, x0:x0 + 96] = small_truth
    viewer = widget.viewer
    viewer.add_image(image, name="stack")
    widget.labels_folder = tmp_path
    widget.image_combo.setCurrentText("stack")
    widget.start()
    labels = viewer.layers["stack objects"]
    assert labels.multiscale and [tuple(level.shape) for level in labels.data] == [
        (24, 600, 600), (24, 300, 300), (24, 150, 150)]
    z = int(truth.sum(axis=(1, 2)).argmax())
    viewer.dims.set_point(0, z)
    _click(widget, qtbot, np.column_stack([np.full(4, z), extreme_points(truth[z])]))
    assert widget.last_error == "" and widget.history
    _shown_is_stored(labels, (z,))
    widget.propagate()
    _wait_done(widget, qtbot)
    assert widget.last_error == "" and "propagated to" in widget.status.text()
    levels = [np.asarray(level[:]) for level in labels.data]
    slices = set(np.nonzero(levels[0].any(axis=(1, 2)))[0])
    assert len(slices) > 8 and iou(levels[0] == 1, truth) > 0.7
    for k, level in enumerate(levels[1:], start=1):
        assert np.array_equal(level, levels[0][:, ::2 ** k, ::2 ** k]), f"level {k}"
    _shown_is_stored(labels, (z,))
    other = max(slices - {z})
    viewer.dims.set_point(0, other)
    qtbot.wait(100)
    _shown_is_stored(labels, (other,))
    assert (labels._slice.image.raw == 1).any()
    widget.undo()  # the propagated slices
    widget.undo()  # the object on its first slice
    assert not any(np.asarray(level[:]).any() for level in labels.data)
    _shown_is_stored(labels, (other,))
