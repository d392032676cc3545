"""What the user sees is what was computed: lazy images opened through the plugin's reader (TIFF, OME-Zarr),
Dask arrays, segmented in a real viewer (Xvfb), the drawn pixels (sliced by napari from the layer) equal to the
headless result, during the run, after it, after Cancel and Resume, while the camera pans and zooms; existing
stores never overwritten without the user's word."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

import segarch
from gui_helpers import GuiThreadMonitor, PanZoom, answer_dialog, assert_drawn_equals, drawn, wait_done
from segarch import pretrained
from segarch.io.pyramid import pyramid
from segarch.samples import nuclei

pytestmark = pytest.mark.gui


@pytest.fixture
def widget(segment_widget, qtbot):
    qtbot.waitUntil(segment_widget.models_ready, timeout=120_000)
    return segment_widget


def _levels(result: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(level) for level in pyramid(result, "YX", labels=True)]


def _look_at(viewer, qtbot, layer, zoom: float | None = None, center=None) -> None:
    """Move the camera (None: fit the whole image), then let napari slice and draw."""
    viewer.reset_view()
    if zoom is not None:
        viewer.camera.zoom = viewer.camera.zoom * zoom
    if center is not None:
        viewer.camera.center = center
    qtbot.wait(100)
    layer.refresh()
    qtbot.wait(100)


def _open(viewer, tmp_path, kind: str, image: np.ndarray):
    import dask.array as da

    if kind == "tiff":
        segarch.io.write_tiff(tmp_path / "cells.tif", image, axes="YX")
        return viewer.open(str(tmp_path / "cells.tif"), plugin="napari-segarch")[0]
    if kind == "ome-zarr":  # a multiscale image: level 0 is segmented
        segarch.io.write_ome_zarr(tmp_path / "cells.zarr", image, axes="YX", chunks=256)
        layer = viewer.open(str(tmp_path / "cells.zarr"), plugin="napari-segarch")[0]
        assert layer.multiscale
        return layer
    return viewer.add_image(da.from_array(image, chunks=300).map_blocks(lambda b: b + 0, dtype=image.dtype),
                            name="cells")


@pytest.mark.parametrize("kind", ["tiff", "ome-zarr", "dask"])
def test_a_lazy_image_is_drawn_as_computed_during_and_after_the_run(widget, qtbot, tmp_path, kind):
    from napari.utils import resize_dask_cache

    resize_dask_cache(2 ** 30)  # napari's block cache on, large: it must not matter
    viewer = widget.viewer
    image, _ = nuclei((1100, 1300), seed=int(np.random.default_rng().integers(1 << 30)))
    layer = _open(viewer, tmp_path, kind, image)
    widget.image_combo.set_layer(layer)
    widget.select_model("shipped", "unet.nuclei2d")
    expected = segarch.predict(pretrained.load("unet.nuclei2d"), image)
    levels = _levels(expected)
    assert expected.any() and len(levels) == 4

    seen_during = []

    def look_during(done, total):
        # Look at every step of the last 40%: the first rows of blocks are written by then. One look at 70% was
        # not enough on a loaded CI machine, where the writes trail the network's progress.
        if 0.6 * total < done < total:
            result.refresh()
            seen_during.append(np.count_nonzero(drawn(result)[2]))

    widget.segment_button.click()
    result = viewer.layers[f"{layer.name} segmentation"]  # shown from the click on
    assert result.multiscale and len(result.data) == 4
    widget._signals.progress.connect(look_during)
    wait_done(qtbot, widget)
    assert "done" in widget.status.text() and widget.last_error == ""
    assert seen_during and max(seen_during) > 0  # blocks appear while the run goes on

    _look_at(viewer, qtbot, result)  # the overview: a coarse level, never level 0 whole
    assert assert_drawn_equals(result, levels) >= 1
    _look_at(viewer, qtbot, result, zoom=6.0, center=(300, 900))  # zoomed in: level 0
    assert assert_drawn_equals(result, levels) == 0
    assert np.count_nonzero(drawn(result)[2]) > 0
    assert tuple(result.data[0].shape) == expected.shape


def test_panning_and_zooming_during_a_run_on_a_lazy_tiff(widget, qtbot, tmp_path):
    """A timer pans and zooms all through the run: it completes, equals the headless result, and the GUI
    thread is never busy for 250 ms at a stretch (its own CPU time, whatever the machine's load)."""
    import tifffile

    viewer = widget.viewer
    rng = np.random.default_rng()
    image, _ = nuclei((1800, 1700), seed=int(rng.integers(1 << 30)))
    tifffile.imwrite(tmp_path / "big.tif", image, tile=(256, 256))  # a tiled TIFF: read lazily, tile by tile
    layer = viewer.open(str(tmp_path / "big.tif"), plugin="napari-segarch")[0]
    assert not isinstance(layer.data, np.ndarray)
    widget.image_combo.set_layer(layer)
    widget.select_model("shipped", "unet.nuclei2d")
    widget.batch_spin.setValue(2)

    pan = PanZoom(viewer, image.shape, interval_ms=50)
    widget.segment_button.click()
    monitor = GuiThreadMonitor().start()
    pan.start()
    wait_done(qtbot, widget, timeout=900_000)
    pan.stop()
    monitor.stop()
    assert widget.last_error == "" and "done" in widget.status.text(), widget.status.text()
    assert pan.moves > 20
    print(f"GUI thread: longest CPU stretch {monitor.max_cpu_gap:.3f} s, longest wall gap {monitor.max_wall_gap:.3f} s "
          f"over {len(monitor.cpu)} ticks, {pan.moves} camera moves")
    assert monitor.max_cpu_gap < 0.25, f"the GUI thread was busy for {monitor.max_cpu_gap:.3f} s at a stretch"

    expected = segarch.predict(pretrained.load("unet.nuclei2d"), image, batch_size=2)
    result = viewer.layers["big segmentation"]
    np.testing.assert_array_equal(np.asarray(result.data[0][:]), expected)
    levels = _levels(expected)
    _look_at(viewer, qtbot, result)
    assert_drawn_equals(result, levels)
    _look_at(viewer, qtbot, result, zoom=8.0, center=(1400, 500))
    assert assert_drawn_equals(result, levels) == 0


def _tree_digest(path) -> str:
    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            digest.update(full.encode())
            with open(full, "rb") as f:
                digest.update(f.read())
    return digest.hexdigest()


def _big_dask(rng, shape=(1600, 1500)):
    import dask.array as da

    image, _ = nuclei(shape, seed=int(rng.integers(1 << 30)))
    return image, da.from_array(image, chunks=512)


def test_cancel_then_resume_equals_an_uninterrupted_run(widget, qtbot, tmp_path):
    viewer = widget.viewer
    image, lazy = _big_dask(np.random.default_rng())
    viewer.add_image(lazy, name="cells")
    widget.image_combo.setCurrentText("cells")
    widget.select_model("shipped", "unet.nuclei2d")
    widget.batch_spin.setValue(2)
    store = tmp_path / "cells.zarr"
    widget.out_edit.setText(str(store))

    widget.segment_button.click()
    qtbot.waitUntil(lambda: widget.progress_bar.value() > 0.4 * widget.progress_bar.maximum(), timeout=600_000)
    widget.cancel_button.click()
    wait_done(qtbot, widget)
    assert "cancelled" in widget.status.text() and "Resume" in widget.status.text()
    result = viewer.layers["cells segmentation"]
    partial = np.asarray(result.data[0][:])
    assert 0 < np.count_nonzero(partial)
    stored = segarch.io.open_image(store)
    np.testing.assert_array_equal(partial, np.asarray(stored.levels[0]))  # the layer shows what the store holds

    seen = answer_dialog(qtbot, "Resume")
    widget.segment_button.click()  # the same settings: the dialog offers Resume
    wait_done(qtbot, widget, timeout=900_000)
    assert seen and "unfinished" in seen[0]
    assert "done" in widget.status.text(), widget.status.text()
    assert viewer.layers["cells segmentation"] is not None
    expected = segarch.predict(pretrained.load("unet.nuclei2d"), image, batch_size=2)
    resumed = viewer.layers[-1]
    np.testing.assert_array_equal(np.asarray(resumed.data[0][:]), expected)
    levels = _levels(expected)
    for k, level in enumerate(segarch.io.open_image(store).levels):
        np.testing.assert_array_equal(np.asarray(level), levels[k])


def test_a_finished_store_is_replaced_only_when_the_user_says_so(widget, qtbot, tmp_path):
    viewer = widget.viewer
    image, lazy = _big_dask(np.random.default_rng(), (900, 700))
    viewer.add_image(lazy, name="cells")
    widget.image_combo.setCurrentText("cells")
    widget.select_model("shipped", "unet.nuclei2d")
    store = tmp_path / "cells.zarr"
    segarch.predict(pretrained.load("unet.nuclei2d"), np.zeros((900, 700), np.float32), out=store)  # an older result
    before = _tree_digest(store)
    widget.out_edit.setText(str(store))

    seen = answer_dialog(qtbot, "Cancel")
    widget.segment_button.click()
    qtbot.waitUntil(lambda: bool(seen), timeout=30_000)
    qtbot.wait(200)
    assert "finished segmentation" in seen[0]
    assert widget.worker is None and "Not started" in widget.status.text()
    assert _tree_digest(store) == before

    answer_dialog(qtbot, "Replace")
    widget.segment_button.click()
    wait_done(qtbot, widget)
    np.testing.assert_array_equal(np.asarray(segarch.io.open_image(store).levels[0]),
                                  segarch.predict(pretrained.load("unet.nuclei2d"), image))


def test_a_store_that_is_not_a_segarch_result_is_refused_and_kept(widget, qtbot, tmp_path, monkeypatch):
    import napari_segarch._segment_widget as module

    messages = []
    monkeypatch.setattr(module, "_notify_error", messages.append)
    viewer = widget.viewer
    image, _ = nuclei((300, 300), seed=3)
    viewer.add_image(image, name="cells")
    widget.image_combo.setCurrentText("cells")
    widget.select_model("shipped", "unet.nuclei2d")
    someones = tmp_path / "someones_image.zarr"
    segarch.io.write_ome_zarr(someones, image, axes="YX")  # an OME-Zarr image, not a segmentation
    before = _tree_digest(someones)
    widget.out_edit.setText(str(someones))
    widget.segment_button.click()
    qtbot.wait(200)
    assert widget.worker is None  # nothing started
    assert len(messages) == 1 and "someones_image.zarr" in messages[0] and "not a segarch result" in messages[0], \
        messages
    assert "Error" in widget.status.text()
    assert _tree_digest(someones) == before
    assert "cells segmentation" not in viewer.layers


def test_the_20000_sample_fills_in_during_the_run_and_keeps_it_after_cancel(widget, qtbot):
    viewer = widget.viewer
    viewer.open_sample("napari-segarch", "large_nuclei")
    widget.image_combo.setCurrentText("large lazy nuclei")
    widget.select_model("shipped", "unet.nuclei2d")
    widget.segment_button.click()
    result = viewer.layers["large lazy nuclei segmentation"]
    assert result.multiscale and result.data[0].shape == (20000, 20000) and result.data[-1].shape[0] <= 256
    assert "temporary" in widget.status.text() and result.metadata["store"] in widget.status.text()
    store = result.metadata["store"]

    def written() -> bool:  # the first row of blocks is in the store
        return os.path.isdir(store) and bool(np.asarray(result.data[0][:512, :4096]).any())

    qtbot.waitUntil(written, timeout=900_000)
    widget.cancel_button.click()
    wait_done(qtbot, widget)
    assert "cancelled" in widget.status.text()
    stored = segarch.io.open_image(store)
    # Zoomed on nuclei of the finished top strip: level 0 as the store holds it, nuclei drawn.
    y, x = np.argwhere(np.asarray(stored.levels[0][:512, :4096]))[0]
    _look_at(viewer, qtbot, result, zoom=40.0, center=(float(y), float(x)))
    level, index, raw = drawn(result)
    np.testing.assert_array_equal(raw, np.asarray(stored.levels[level][index]))
    assert raw.any()
    # The overview: a coarse level of the store, the finished strip in it, read from a few chunks.
    _look_at(viewer, qtbot, result)
    level, index, raw = drawn(result)
    assert level >= 4 and raw.any()
    np.testing.assert_array_equal(raw, np.asarray(stored.levels[level][index]))


def test_a_temporary_store_goes_with_its_layer(widget, qtbot):
    from pathlib import Path

    viewer = widget.viewer
    image, lazy = _big_dask(np.random.default_rng(), (700, 600))
    viewer.add_image(lazy, name="cells")
    widget.image_combo.setCurrentText("cells")
    widget.select_model("shipped", "unet.nuclei2d")
    widget.segment_button.click()
    wait_done(qtbot, widget)
    result = viewer.layers["cells segmentation"]
    store = Path(result.metadata["store"])
    assert store.is_dir() and str(store) in widget.status.text()
    viewer.layers.remove(result)
    assert not store.exists() and not store.parent.exists()


def test_an_engine_error_is_one_notification_with_the_engines_message(widget, qtbot, monkeypatch):
    from napari.utils.notifications import notification_manager

    shown = []
    monkeypatch.setattr(notification_manager, "dispatch", lambda n: shown.append(n.message))
    viewer = widget.viewer
    image, lazy = _big_dask(np.random.default_rng(), (300, 300))
    viewer.add_image(lazy, name="cells")
    widget.image_combo.setCurrentText("cells")
    widget.select_model("shipped", "unet.nuclei2d")
    widget.axes_edit.setText("XQ")  # a bad axes string: the engine refuses it
    widget.segment_button.click()
    wait_done(qtbot, widget)
    assert len(shown) == 1, shown
    assert shown[0].startswith("`axes`='XQ' is not valid"), shown[0]
    assert "cells segmentation" not in viewer.layers  # its temporary store and layer are gone


def test_instances_fill_the_live_layer_block_by_block_while_they_are_decoded(widget, qtbot, tmp_path):
    """Instance output: the network pass writes probabilities (nothing to show yet); then each decoded block
    appears in the live layer (provisional ids) before the seam merge gives the final ids."""
    viewer = widget.viewer
    image, _ = nuclei((1100, 1300), seed=int(np.random.default_rng().integers(1 << 30)))  # 2 x 2 blocks of 1024²
    viewer.add_image(image, name="cells")
    widget.image_combo.setCurrentText("cells")
    widget.select_model("shipped", "unet.nuclei2d_instances")
    widget.output_combo.setCurrentText("instances")
    out = tmp_path / "objects.zarr"
    widget.out_edit.setText(str(out))
    totals, seen = [], {}

    def look(done, total):
        totals.append(total)
        decoded = done - totals[0] if total != totals[0] else None  # block steps of the decoding (4 + 4)
        if decoded is None and "network" not in seen and done >= 1:
            result.refresh()
            seen["network"] = np.count_nonzero(drawn(result)[2])
        elif decoded is not None and 1 <= decoded <= 3 and "decoding" not in seen:
            result.refresh()
            pixels = drawn(result)[2]
            final_marks = os.listdir(out / ".segarch-instances" / "final")  # step 3 has not begun
            seen["decoding"] = (np.count_nonzero(pixels[:1024, :1024]), np.count_nonzero(pixels[1024:, 1024:]),
                                len(final_marks))

    widget.segment_button.click()
    result = viewer.layers["cells segmentation"]
    widget._signals.progress.connect(look)
    wait_done(qtbot, widget)
    assert widget.last_error == "" and "objects" in widget.status.text(), widget.status.text()
    assert seen["network"] == 0  # probabilities only, so far
    first_block, last_block, final_marks = seen["decoding"]
    assert final_marks == 0 and first_block > 1000 and last_block == 0  # block 1 shown, block 4 not yet
    expected = segarch.predict(pretrained.load("unet.nuclei2d_instances"), image, output="instances")
    np.testing.assert_array_equal(np.asarray(result.data), expected)
