"""The Extreme points widget on a lazy image: labels in a Zarr store on disk, redrawn region by region."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from segarch.prompts import extreme_points
from segarch.prompts.evaluate import iou
from tests.lazy_objects import box_of, disc_centres, disc_mask, lazy_disc_image
from tests.test_prompt_widget import _click, widget  # noqa: F401 - the fixture

pytestmark = pytest.mark.gui


def test_lazy_image_labels_go_to_a_zarr_store_that_matches_the_layer(widget, qtbot, tmp_path):  # noqa: F811
    viewer = widget.viewer
    shape = (3000, 3000)
    discs = disc_centres(shape, 6, seed=int(np.random.default_rng().integers(1 << 30)))
    viewer.add_image(lazy_disc_image(shape, discs, chunks=512), name="slide", contrast_limits=(0, 300))
    widget.labels_folder = tmp_path
    widget.image_combo.setCurrentText("slide")
    widget.start()
    labels = viewer.layers["slide objects"]
    path = tmp_path / "slide objects.zarr"
    assert isinstance(labels.data, zarr.Array) and path.exists()

    for n, disc in enumerate(discs[:5], start=1):
        start, size = box_of(disc, pad=6)
        truth = disc_mask(disc, start, size)
        _click(widget, qtbot, extreme_points(truth) + np.asarray(start))
        assert widget.last_error == ""
        window = tuple(slice(s, s + z) for s, z in zip(start, size))
        assert iou(np.asarray(labels.data[window]) == n, truth) > 0.8
    on_disk = zarr.open_array(str(path))
    assert int(on_disk.attrs["segarch_next_label"]) == 6
    # What the layer shows (its displayed slice, updated region by region) is what is on disk.
    shown = np.asarray(labels._slice.image.raw)
    assert np.array_equal(shown, on_disk[:])
    assert set(np.unique(shown)) == set(range(6))

    widget.undo()
    on_disk = zarr.open_array(str(path))
    assert int(on_disk.attrs["segarch_next_label"]) == 5 and not (on_disk[:] == 5).any()
    assert np.array_equal(np.asarray(labels._slice.image.raw), on_disk[:])
    # The next object takes the freed id.
    start, size = box_of(discs[5], pad=6)
    _click(widget, qtbot, extreme_points(disc_mask(discs[5], start, size)) + np.asarray(start))
    assert set(np.unique(zarr.open_array(str(path))[:])) == set(range(6))


def test_zarr_labels_of_another_shape_are_refused_untouched(widget, qtbot, tmp_path):  # noqa: F811
    from segarch.prompts.label_store import LabelStore

    viewer = widget.viewer
    shape = (600, 600)
    discs = disc_centres(shape, 1, seed=3)
    viewer.add_image(lazy_disc_image(shape, discs, chunks=256), name="slide")
    store = LabelStore.create(tmp_path / "other.zarr", (600, 500))
    viewer.add_labels(store.array, name="other")
    widget.image_combo.setCurrentText("slide")
    widget.labels_combo.setCurrentText("other")
    widget.start()
    start, size = box_of(discs[0], pad=6)
    widget.segment(extreme_points(disc_mask(discs[0], start, size)) + np.asarray(start))
    assert "shape (600, 500)" in widget.last_error and "(600, 600)" in widget.last_error
    assert not zarr.open_array(str(tmp_path / "other.zarr"))[:].any()


def _wait_done(widget, qtbot):  # noqa: F811
    qtbot.waitUntil(lambda: widget.worker is not None and not widget.worker.is_running
                    and widget.propagate_button.isEnabled(), timeout=120_000)


def test_propagate_button_carries_the_object_through_the_stack_and_undo(widget, qtbot):  # noqa: F811
    from segarch.prompts import propagate
    from tests.test_propagate import _ellipsoid_stack

    viewer = widget.viewer
    image, truth = _ellipsoid_stack(np.random.default_rng())
    viewer.add_image(image, name="stack")
    widget.image_combo.setCurrentText("stack")
    widget.start()
    labels = viewer.layers["stack objects"]
    z = int(truth.sum(axis=(1, 2)).argmax())
    points = np.column_stack([np.full(4, z), extreme_points(truth[z])])
    _click(widget, qtbot, points)
    assert set(np.unique(labels.data)) == {0, 1} and set(np.nonzero(labels.data.any(axis=(1, 2)))[0]) == {z}
    widget.propagate()
    _wait_done(widget, qtbot)
    assert widget.last_error == "" and "propagated to" in widget.status.text()
    expected = propagate(widget._model, image, z, mask=labels.data[z] == 1)
    assert np.array_equal(labels.data == 1, expected.volume(image.shape))
    # The object spans 10 to 17 slices; propagation stops where its thinnest end slices fade (2 short on each of 12
    # draws measured), so a fixed 'more than 8' failed on a 10-slice draw: the bound follows the draw.
    spanned = int(truth.any(axis=(1, 2)).sum())
    assert iou(labels.data == 1, truth) > 0.75 and len(expected.slices) >= spanned - 3, (len(expected.slices), spanned)
    widget.undo()  # the propagated slices
    assert set(np.nonzero(labels.data.any(axis=(1, 2)))[0]) == {z}
    widget.undo()  # the object on its first slice
    assert not labels.data.any()

    # Cancel after the first propagated slice: that slice stays, nothing more.
    _click(widget, qtbot, points)
    widget.propagate()
    widget.worker.yielded.connect(lambda step: widget.cancel())
    _wait_done(widget, qtbot)
    assert "stopped by the user" in widget.status.text()
    assert len(np.nonzero(labels.data.any(axis=(1, 2)))[0]) <= 3


def test_propagate_on_a_2d_image_says_why(widget, qtbot):  # noqa: F811
    from segarch.prompts import object_scene

    image, truth = object_scene((96, 96), seed=4)
    widget.viewer.add_image(image, name="flat")
    widget.image_combo.setCurrentText("flat")
    widget.start()
    widget.propagate()
    assert "Propagation needs a stack (Z, Y, X)" in widget.last_error and "2 spatial axes" in widget.last_error
    assert not widget.viewer.layers["flat objects"].data.any()


def test_fine_tune_on_painted_objects_adds_a_session_model_and_uses_it(widget, qtbot):  # noqa: F811
    from segarch.models.session import SESSION
    from segarch.prompts import object_scene

    viewer = widget.viewer
    image, truth = object_scene((128, 128), seed=int(np.random.default_rng().integers(1 << 20)), count=(6, 8))
    viewer.add_image(image, name="cells")
    widget.image_combo.setCurrentText("cells")
    widget.start()
    # every clicked object is painted (a faint one is not taken for background): the test counts them
    widget.faint_check.setChecked(True)
    widget.fine_tune(steps=2)
    assert "at least 3 objects" in widget.last_error
    widget.last_error = ""
    objects = [v for v in range(1, int(truth.max()) + 1) if (truth == v).sum() > 40][:4]
    for value in objects:
        _click(widget, qtbot, extreme_points(truth == value))
    regions = widget.annotated_regions(viewer.layers["cells objects"])
    assert [label for label, _ in regions] == list(range(1, len(objects) + 1))
    before = set(SESSION.names())
    widget.fine_tune(steps=2)
    qtbot.waitUntil(lambda: widget.finetune_button.isEnabled() and not widget.worker.is_running, timeout=180_000)
    assert widget.last_error == "", widget.last_error
    added = set(SESSION.names()) - before
    assert len(added) == 1 and "fine-tuned" in widget.status.text()
    name = added.pop()
    assert widget.model_combo.currentData() == f"session:{name}"
    # The next object is segmented with the fine-tuned model.
    widget.undo()
    _click(widget, qtbot, extreme_points(truth == objects[-1]))
    assert widget.last_found and widget._model is SESSION.get(name)


def test_corrective_clicks_on_zarr_labels_and_undo_per_click_restores_the_chunks(widget, qtbot, tmp_path):  # noqa: F811
    from segarch.prompts.clicks import next_click
    from tests.test_prompt_widget import _correct

    viewer = widget.viewer
    shape = (2500, 2500)
    discs = disc_centres(shape, 2, seed=int(np.random.default_rng().integers(1 << 30)), radius=(20, 28))
    viewer.add_image(lazy_disc_image(shape, discs, chunks=512), name="slide", contrast_limits=(0, 300))
    widget.labels_folder = tmp_path
    widget.image_combo.setCurrentText("slide")
    widget.model_combo.setCurrentText("dextr_light.clicks2d")
    # The second object's points are pulled inside the disc on purpose, so its first mask lies in the disc's flat
    # interior, which the faint-object guard would refuse on some draws (seeds 1, 7 and 8 did): paint it anyway.
    widget.faint_check.setChecked(True)
    widget.start()
    labels = viewer.layers["slide objects"]
    path = tmp_path / "slide objects.zarr"
    start0, size0 = box_of(discs[0], pad=6)
    _click(widget, qtbot, extreme_points(disc_mask(discs[0], start0, size0)) + np.asarray(start0))
    first = zarr.open_array(str(path))[:] == 1

    start, size = box_of(discs[1], pad=12)
    window = tuple(slice(s, s + z) for s, z in zip(start, size))
    truth = disc_mask(discs[1], start, size)
    # The points pulled inward by a quarter of the radius: the mask misses a rim that clicks can add.
    inner = extreme_points(truth).astype(float)
    inner += (np.asarray(size) / 2 - inner) * 0.25
    _click(widget, qtbot, inner + np.asarray(start))
    assert widget.last_error == "" and widget.current is not None
    masks = [np.asarray(labels.data[window]) == 2]
    for _ in range(3):
        click = next_click(masks[-1], truth)
        if click is None:
            break
        _correct(widget, qtbot, click[0] + np.asarray(start), click[1])
        assert widget.last_error == ""
        on_disk = zarr.open_array(str(path))[:]
        assert np.array_equal(np.asarray(labels._slice.image.raw), on_disk)  # the layer shows what is on disk
        assert np.array_equal(on_disk == 1, first) and set(np.unique(on_disk)) == {0, 1, 2}
        masks.append(on_disk[window] == 2)
    ious = [iou(m, truth) for m in masks]
    assert len(ious) > 1 and ious[-1] > ious[0] + 0.02, ious
    # A click outside the object's crop is refused with a message; the store is untouched.
    before = zarr.open_array(str(path))[:]
    far = [a + n + 150 if a + n + 150 < extent else a - 150 for a, n, extent in zip(start, size, shape)]
    _correct(widget, qtbot, far, True)
    assert "crop" in widget.last_error and np.array_equal(zarr.open_array(str(path))[:], before)
    widget.last_error = ""
    # Undo takes back one click at a time: the store's chunks hold the object as it was before that click.
    for mask in masks[-2::-1]:
        widget.undo()
        on_disk = zarr.open_array(str(path))
        assert np.array_equal(on_disk[window] == 2, mask) and np.array_equal(on_disk[:] == 1, first)
        assert int(on_disk.attrs["segarch_next_label"]) == 3
    widget.undo()  # the object
    on_disk = zarr.open_array(str(path))
    assert np.array_equal(on_disk[:] > 0, first) and int(on_disk.attrs["segarch_next_label"]) == 2
    assert np.array_equal(np.asarray(labels._slice.image.raw), on_disk[:])
