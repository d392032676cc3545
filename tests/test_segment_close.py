"""Closing the napari viewer while Segment runs: the run stops within a batch, its finished blocks are kept
(resumable), and the process exits cleanly. A real napari process (a subprocess under the test's X display)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import segarch

pytestmark = pytest.mark.gui

SCRIPT = r"""
import json, sys, time
import numpy as np, dask.array as da, napari
from qtpy.QtCore import QTimer
from napari_segarch._segment_widget import SegmentWidget

model, out, how = sys.argv[1], sys.argv[2], sys.argv[3]
viewer = napari.Viewer()
image = da.from_array(np.random.default_rng(0).random((3000, 2600), dtype=np.float32), chunks=512)
viewer.add_image(image, name="big")
widget = SegmentWidget(viewer)
viewer.window.add_dock_widget(widget, name="Segment")
widget.select_model("file")
widget.file_edit.setText(model)
widget.tile_spin.setValue(128)
widget.batch_spin.setValue(2)
widget.out_edit.setText(out)
state = {"started": time.perf_counter()}

def start():
    widget.segment_button.click()

def close_when_running():
    if widget.progress_bar.value() > 3:
        timer.stop()
        state["progress_at_close"] = widget.progress_bar.value()
        state["total"] = widget.progress_bar.maximum()
        state["closed"] = time.perf_counter()
        if how == "viewer":
            viewer.close()
        else:  # the dock alone: the viewer stays, the run stops
            viewer.window.remove_dock_widget(widget)
            widget.close()
            QTimer.singleShot(3000, viewer.close)

QTimer.singleShot(300, start)
timer = QTimer()
timer.timeout.connect(close_when_running)
timer.start(50)
napari.run()
state["exited"] = time.perf_counter()
print("STATE " + json.dumps(state), flush=True)
"""


def _tiny_model(path):
    import torch

    torch.manual_seed(0)
    model = segarch.Model.from_zoo("unet", features=(4, 8, 16), norm="batch", out_channels=2,
                                   class_names=["background", "cell"])
    model.trained = True
    return segarch.save_model(model, path)


@pytest.mark.parametrize("how", ["viewer", "dock"])
def test_closing_during_a_run_cancels_it_and_exits_cleanly(tmp_path, how):
    model = _tiny_model(tmp_path / "tiny.safetensors")
    out = tmp_path / "big.zarr"
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(model), str(out), how], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "Traceback" not in result.stderr and "Segmentation fault" not in result.stderr, result.stderr[-4000:]
    state = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("STATE "))[6:])
    assert state["progress_at_close"] < state["total"]
    import zarr

    from segarch.tiling.output import finished_blocks

    stored = segarch.io.open_image(out)
    assert zarr.open_group(str(out), mode="r")["0"].attrs["complete"] is False  # stopped, not finished
    assert len(finished_blocks(out)) < 6 * 6
    assert np.asarray(stored.levels[0]).shape == (3000, 2600)
