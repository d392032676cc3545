"""Shared fixtures: a folder for test artifacts (screenshots), the GUI-test guard, the Segment and Train docks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# One torch/OpenMP thread per test process: the tests' tensors are tiny, and on a 2-core machine the
# engine's reader/writer threads, Dask workers and subprocesses would otherwise oversubscribe the CPU.
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Where tests keep what a person may want to look at (screenshots): ``$SEGARCH_TEST_ARTIFACTS`` or
    ``test-artifacts/``."""
    path = Path(os.environ.get("SEGARCH_TEST_ARTIFACTS", REPO / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def pytest_collection_modifyitems(config, items):
    # napari needs an OpenGL context: without a display the GUI tests would crash the interpreter.
    # In CI a missing display is an error, never a silent skip.
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return
    if os.environ.get("CI"):
        raise pytest.UsageError("CI=true but no DISPLAY: run the tests under xvfb-run as the README says.")
    skip = pytest.mark.skip(reason="no display; run under xvfb-run (see README)")
    for item in items:
        if "gui" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def segment_widget(make_napari_viewer, qtbot):
    """A Segment dock in a shown napari viewer; a run still going at teardown is cancelled first (never close the
    viewer under a running worker)."""
    from napari_segarch._segment_widget import SegmentWidget

    viewer = make_napari_viewer(show=True)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    yield widget
    if widget.worker is not None and widget.worker.is_running:
        widget.cancel()
        qtbot.waitUntil(lambda: not widget.worker.is_running, timeout=120_000)


@pytest.fixture
def train_widget(make_napari_viewer):
    """A Train dock in a shown viewer over a 64² easy generated nuclei image ('cells') and its instance labels
    ('cells annotations'): zoo U-Net, patch 32, CPU. The session's trained models are cleared before and after."""
    from napari_segarch._train_widget import TrainWidget
    from segarch.models import SESSION
    from segarch.synthetic import Conditions, nuclei

    SESSION.clear()
    viewer = make_napari_viewer(show=True)
    easy = Conditions(radius=(4.0, 7.0), coverage=0.3, photons=300.0, blur=1.0)
    image, labels = nuclei((64, 64), seed=3, conditions=easy)
    viewer.add_image(image, name="cells")
    viewer.add_labels(labels, name="cells annotations")
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    widget.image_combo.setCurrentText("cells")
    widget.labels_combo.setCurrentText("cells annotations")
    widget.select_model("zoo", "unet")
    widget.patch_spin.setValue(32)
    widget.device_combo.setCurrentText("cpu")
    yield widget
    SESSION.clear()
