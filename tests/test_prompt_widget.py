"""The Extreme points widget driven as a user drives it, in a real napari viewer (under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

from segarch.prompts import extreme_points, object_scene
from segarch.prompts.evaluate import iou

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_segarch._prompt_widget import ExtremePointsWidget

    monkeypatch.setenv("SEGARCH_CACHE_DIR", str(tmp_path / "cache"))  # 3D clicks export their network there

    viewer = make_napari_viewer(show=True)
    w = ExtremePointsWidget(viewer)
    viewer.window.add_dock_widget(w, name="Extreme points")
    yield w
    if w.worker is not None and w.worker.is_running:  # never close the viewer under a running worker
        qtbot.waitUntil(lambda: not w.worker.is_running, timeout=60_000)


def _click(widget, qtbot, points):
    """Add the points one by one, as clicks do, then wait for the object to be painted."""
    before = len(widget.history)
    for p in points:
        widget.points_layer.add(np.asarray(p, float))
    widget.last_found = None
    qtbot.waitUntil(lambda: len(widget.history) > before or bool(widget.last_error) or widget.last_found is False,
                    timeout=60_000)
    qtbot.waitUntil(lambda: widget.worker is None or not widget.worker.is_running, timeout=60_000)


def test_objects_get_consecutive_ids_and_undo(widget, qtbot, artifacts_dir):
    viewer = widget.viewer
    image, truth = object_scene((160, 160), seed=31)
    viewer.add_image(image, name="cells", scale=(0.5, 0.5))
    widget.image_combo.setCurrentText("cells")
    assert widget.model_combo.currentText() == "dextr_light.clicks2d"
    widget.start()
    labels = viewer.layers["cells objects"]
    assert labels.data.shape == image.shape and tuple(labels.scale) == (0.5, 0.5)
    assert viewer.layers.selection.active is widget.points_layer and widget.points_layer.mode == "add"

    objects = [v for v in range(1, int(truth.max()) + 1) if (truth == v).sum() > 40][:3]
    for n, value in enumerate(objects, start=1):
        _click(widget, qtbot, extreme_points(truth == value))
        assert widget.last_error == ""
        assert len(widget.points_layer.data) == 0  # cleared for the next object
        assert set(np.unique(labels.data)) == set(range(n + 1))  # ids 1..n, consecutive
        assert iou(labels.data == n, truth == value) > 0.7
    viewer.screenshot(str(artifacts_dir / "extreme_points_widget.png"), canvas_only=False)

    widget.undo()
    assert set(np.unique(labels.data)) == set(range(len(objects)))
    # Ctrl+Z on the Points layer (where the user clicks) does the same.
    from app_model.types import KeyBinding

    widget.points_layer.keymap[KeyBinding.from_str("Control-Z")](widget.points_layer)
    assert set(np.unique(labels.data)) == set(range(len(objects) - 1))
    # The next object takes the next free id again.
    _click(widget, qtbot, extreme_points(truth == objects[1]))
    assert set(np.unique(labels.data)) == {0, 1, 2}


def test_existing_labels_are_never_overwritten(widget, qtbot):
    viewer = widget.viewer
    image, truth = object_scene((160, 160), seed=32)
    viewer.add_image(image, name="cells")
    existing = np.zeros(image.shape, np.uint32)
    value = int(np.bincount(truth.ravel())[1:].argmax()) + 1
    rows = np.nonzero((truth == value).any(1))[0]
    top = slice(0, (rows.min() + rows.max()) // 2)
    existing[top][truth[top] == value] = 7  # the user already painted the object's top half
    viewer.add_labels(existing.copy(), name="mine")
    widget.image_combo.setCurrentText("cells")
    widget.labels_combo.setCurrentText("mine")
    widget.start()
    _click(widget, qtbot, extreme_points(truth == value))
    data = viewer.layers["mine"].data
    assert (data[existing == 7] == 7).all()  # untouched
    assert data.max() == 8 and (data == 8).sum() > 0.3 * (truth == value).sum()  # the next free id, bottom half
    assert not (data[top] == 8).any()
    widget.undo()
    np.testing.assert_array_equal(data, existing)


def test_bad_points_give_messages_and_paint_nothing(widget, qtbot):
    viewer = widget.viewer
    image, _ = object_scene((96, 96), seed=33)
    viewer.add_image(image, name="cells")
    widget.image_combo.setCurrentText("cells")
    widget.start()
    labels = viewer.layers["cells objects"]
    widget.segment(np.array([[10.0, 10.0]] * 4))
    assert "degenerate" in widget.last_error
    widget.segment(np.array([[10.0, 10.0], [20, 20], [10, 20], [120, 15]]))
    assert "outside the image" in widget.last_error and "(96, 96)" in widget.last_error
    widget.segment(np.array([[10.0, 10.0], [20, 20], [10, 20]]))
    assert "at least 4 are needed" in widget.last_error
    assert not labels.data.any() and widget.history == []


def test_2d_mode_on_a_slice_of_a_stack(widget, qtbot):
    viewer = widget.viewer
    image, truth = object_scene((160, 160), seed=34)
    stack = np.stack([np.zeros_like(image), image, np.zeros_like(image)])
    viewer.add_image(stack, name="stack")
    widget.image_combo.setCurrentText("stack")
    widget.start()
    value = int(np.bincount(truth.ravel())[1:].argmax()) + 1
    pts = extreme_points(truth == value)
    _click(widget, qtbot, np.c_[np.ones(4), pts])
    labels = viewer.layers["stack objects"]
    assert labels.data.shape == stack.shape
    assert not labels.data[0].any() and not labels.data[2].any()
    assert iou(labels.data[1] == 1, truth == value) > 0.7
    widget.last_error = ""
    widget.segment(np.c_[[0, 1, 1, 1], pts])
    assert "different slices" in widget.last_error


def test_3d_mode_segments_on_the_sixth_point(widget, qtbot, tmp_path):
    import torch

    import segarch
    from segarch.prompts import DEFAULTS
    from segarch.prompts.recipe import crop_box

    # A 3D model that calls everything "object": the painted region is then exactly the crop.
    model = segarch.Model.from_zoo("dextr_light", spatial_dims=3, in_channels=2, out_channels=1,
                                   class_names=["object"], features=(4, 8, 16, 32))
    with torch.no_grad():
        model.network.classifier.bias.fill_(20.0)
    model.trained = True
    path = segarch.save_model(model, tmp_path / "everything3d.safetensors")
    viewer = widget.viewer
    image, truth = object_scene((32, 64, 64), seed=35)
    viewer.add_image(image, name="volume")
    widget.image_combo.setCurrentText("volume")
    widget.model_combo.setCurrentText(str(path))
    widget.mode_combo.setCurrentIndex(1)
    widget.faint_check.setChecked(True)  # the box it outlines has no edge in the image: paint it all the same
    widget.start()
    pts = extreme_points(truth == 1)
    for p in pts[:5]:
        widget.points_layer.add(p.astype(float))
    assert "5 of 6 points" in widget.status.text() and widget.worker is None
    _click(widget, qtbot, pts[5:])
    assert widget.last_error == ""
    labels = viewer.layers["volume objects"].data
    start, stop = crop_box(pts, image.shape, DEFAULTS["dextr_light"][3])
    expected = np.zeros(image.shape, bool)
    expected[tuple(slice(a, b) for a, b in zip(start, stop))] = True
    np.testing.assert_array_equal(labels == 1, expected)


def test_the_shipped_3d_model_sets_3d_mode_and_segments_an_object(widget, qtbot):
    viewer = widget.viewer
    image, truth = object_scene((48, 64, 64), seed=36)
    viewer.add_image(image, name="volume")
    widget.image_combo.setCurrentText("volume")
    widget.model_combo.setCurrentText("dextr_light.objects3d")
    assert widget.spatial_dims == 3  # the shipped model's card sets the mode
    widget.start()
    value = int(np.bincount(truth.ravel())[1:].argmax()) + 1
    _click(widget, qtbot, extreme_points(truth == value))
    assert widget.last_error == ""
    labels = viewer.layers["volume objects"].data
    assert set(np.unique(labels)) == {0, 1}
    assert iou(labels == 1, truth == value) > 0.6
    import importlib.util

    from segarch.runtimes import cache_dir

    if importlib.util.find_spec("onnxruntime"):  # a 3D click runs through the fastest runtime (auto)
        assert len(list(cache_dir().glob("*.onnx"))) == 1


def test_clicks_go_to_a_new_layer_named_after_the_image_never_to_ground_truth(widget, qtbot):
    viewer = widget.viewer
    viewer.open_sample("napari-segarch", "nuclei_2d")  # an image and its ground truth (a Labels layer)
    viewer.add_labels(np.zeros((512, 512), np.uint8), name="nuclei 2D segmentation")  # another result
    widget.image_combo.setCurrentText("nuclei 2D")
    assert widget.labels_combo.currentText() == "New labels layer"
    widget.start()
    assert widget.labels_combo.currentText() == "nuclei 2D objects"
    truth = viewer.layers["nuclei 2D ground truth"].data.copy()
    value = int(np.bincount(truth.ravel())[1:].argmax()) + 1
    _click(widget, qtbot, extreme_points(truth == value))
    assert widget.last_error == "" and widget.history[-1].layer is viewer.layers["nuclei 2D objects"]
    np.testing.assert_array_equal(viewer.layers["nuclei 2D ground truth"].data, truth)  # untouched
    assert not viewer.layers["nuclei 2D segmentation"].data.any()
    # Renamed, the layers stay chosen; another image gets its own new layer, and coming back finds this one.
    viewer.layers["nuclei 2D objects"].name = "my nuclei"
    viewer.layers["nuclei 2D"].name = "nuclei (renamed)"
    assert widget.image_combo.currentText() == "nuclei (renamed)" and widget.labels_combo.currentText() == "my nuclei"
    viewer.add_image(np.zeros((40, 40), np.float32), name="other")
    widget.image_combo.setCurrentText("other")
    assert widget.labels_combo.currentText() == "New labels layer"


def test_switching_to_3d_adapts_the_points_and_one_slice_is_refused(widget, qtbot):
    viewer = widget.viewer
    flat, _ = object_scene((96, 96), seed=37)
    volume, truth = object_scene((24, 64, 64), seed=38)
    viewer.add_image(flat, name="flat")
    viewer.add_image(volume, name="volume")
    widget.image_combo.setCurrentText("flat")
    widget.mode_combo.setCurrentIndex(0)
    widget.start()
    assert widget.points_layer.ndim == 2
    widget.points_layer.add(np.array([10.0, 10.0]))  # one click, then the user changes their mind
    widget.image_combo.setCurrentText("volume")
    widget.model_combo.setCurrentText("dextr_light.objects3d")
    widget.mode_combo.setCurrentIndex(1)
    widget.start()
    assert widget.points_layer.ndim == 3 and len(widget.points_layer.data) == 0
    value = int(np.bincount(truth.ravel())[1:].argmax()) + 1
    flat_points = extreme_points(truth[12] == value)  # six points on one slice (12)
    on_one_slice = np.array([[12, *p] for p in list(flat_points) + list(flat_points[:2])], float)
    _click(widget, qtbot, on_one_slice)
    assert "all lie on slice 12" in widget.last_error and not widget.history
    widget.last_error = ""
    _click(widget, qtbot, extreme_points(truth == value))
    assert widget.last_error == "" and len(widget.history) == 1
    assert iou(viewer.layers["volume objects"].data == 1, truth == value) > 0.5


def test_four_clicks_on_background_find_no_object(widget, qtbot):
    viewer = widget.viewer
    image, truth = object_scene((160, 160), seed=39)
    viewer.add_image(image, name="cells")
    widget.image_combo.setCurrentText("cells")
    widget.start()
    background = truth == 0
    centre = next((y, x) for y in range(20, 140) for x in range(20, 140)
                  if background[y - 16: y + 16, x - 16: x + 16].all())
    y, x = centre
    box = np.array([[y, x - 10], [y, x + 10], [y - 10, x], [y + 10, x]], float)
    _click(widget, qtbot, box)
    assert widget.last_found is False and not widget.history, widget.status.text()
    assert "No object found" in widget.status.text()
    assert not viewer.layers["cells objects"].data.any()
    widget.faint_check.setChecked(True)  # the user insists
    _click(widget, qtbot, box)
    assert len(widget.history) == 1


def _largest_object(truth: np.ndarray) -> int:
    """The id of the largest object of an instance label image."""
    sizes = np.bincount(truth.ravel())
    sizes[0] = 0
    return int(sizes.argmax())


def _correct(widget, qtbot, point, positive):
    """One corrective click in the mode the toggle sets, then wait for the object to be repainted."""
    widget.click_combo.setCurrentIndex(1 if positive else 2)
    painted = widget.current["painted"] if widget.current else None
    widget.last_error = ""
    widget.points_layer.add(np.asarray(point, float))
    qtbot.waitUntil(lambda: bool(widget.last_error) or (widget.current is not None
                                                        and widget.current["painted"] is not painted), timeout=60_000)
    qtbot.waitUntil(lambda: widget.worker is None or not widget.worker.is_running, timeout=60_000)


def test_corrective_clicks_refine_the_object_and_undo_one_click_at_a_time(widget, qtbot):
    from segarch.prompts.clicks import next_click

    viewer = widget.viewer
    seed = int(np.random.default_rng().integers(40_000, 50_000))
    image, truth = object_scene((160, 160), seed=seed)
    viewer.add_image(image, name="cells")
    widget.image_combo.setCurrentText("cells")
    widget.model_combo.setCurrentText("dextr_light.clicks2d")
    # Corrections are under test, not the faint-object guard, which refuses some generated objects without a message
    # (the zarr-labels test's draws showed it): paint every object.
    widget.faint_check.setChecked(True)
    widget.start()
    labels = viewer.layers["cells objects"]
    # Before any object, a correction is refused with a message and paints nothing.
    widget.click_combo.setCurrentIndex(2)
    widget.points_layer.add(np.array([80.0, 80.0]))
    assert "No object to correct yet" in widget.last_error and not labels.data.any()
    widget.last_error = ""
    widget.click_combo.setCurrentIndex(0)

    sizes = np.bincount(truth.ravel())
    sizes[0] = 0
    value = int(sizes.argmax())
    sizes[value] = 0
    _click(widget, qtbot, extreme_points(truth == int(sizes.argmax())))  # an earlier object stays as it is
    earlier = labels.data == 1
    _click(widget, qtbot, extreme_points(truth == value))
    labels_of = labels.data.copy()
    masks = [labels.data == 2]
    for _ in range(3):
        click = next_click(masks[-1], truth == value)
        if click is None:
            break
        _correct(widget, qtbot, click[0], click[1])
        assert widget.last_error == "" and set(np.unique(labels.data)) <= {0, 1, 2}
        np.testing.assert_array_equal(labels.data == 1, earlier)
        masks.append(labels.data == 2)
    ious = [iou(m, truth == value) for m in masks]
    assert len(ious) == 1 or ious[-1] > ious[0] - 0.01, ious
    assert len(ious) == 1 or max(ious[1:]) >= min(0.9, ious[0] + 0.02), ious
    # Undo takes back one correction at a time, then the object.
    for mask in masks[-2::-1]:
        widget.undo()
        np.testing.assert_array_equal(labels.data == 2, mask)
    np.testing.assert_array_equal(labels.data, labels_of)
    widget.undo()
    assert set(np.unique(labels.data)) == {0, 1} and widget.current is None


def test_a_stack_with_thick_slices_is_resampled_to_the_3d_model_voxels(widget, qtbot):
    from segarch import pretrained
    from segarch.prompts import segment_from_points
    from segarch.prompts.synthetic import anisotropic_scene

    viewer = widget.viewer
    image, truth = anisotropic_scene((16, 64, 64), z_spacing=4, seed=int(np.random.default_rng().integers(1 << 20)))
    viewer.add_image(image, name="stack", scale=(2.0, 0.5, 0.5))  # slices 4 times as thick as the pixels
    widget.image_combo.setCurrentText("stack")
    widget.model_combo.setCurrentText("dextr_light.objects3d")
    widget.start()
    value = _largest_object(truth)
    points = extreme_points(truth == value)
    _click(widget, qtbot, points)
    assert widget.last_error == ""
    model = pretrained.load("dextr_light.objects3d")
    # With the runtime the widget picks for a 3D click on the CPU (OpenVINO when installed): against torch's mask,
    # one full-suite run found 1.6% of the voxels differing, in one contiguous part (likely a near-tie that the
    # runtimes' slightly different probabilities resolve either way; not reproduced in 7 reruns).
    from napari_segarch._prompt_widget import _click_runtime

    expected = segment_from_points(model, image, points, pixel_size=(4, 1, 1), runtime=_click_runtime(model))
    np.testing.assert_array_equal(viewer.layers["stack objects"].data == 1, expected)
    assert iou(expected, truth == value) > 0.5
