"""Helpers for the widget tests: what napari drew, a GUI-thread load monitor, a pan/zoom driver, dialogs."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np


def drawn(layer) -> tuple[int, tuple, np.ndarray]:
    """What ``layer`` shows now: ``(level, index, pixels)``: the pixels napari sliced from the layer's data
    (not from any store), the pyramid level they come from and where they lie in it (2D views)."""
    response = layer._slice
    raw = np.asarray(response.image.raw)
    if not layer.multiscale:
        return 0, (), raw
    displayed = list(response.slice_input.displayed)
    scale = np.asarray(response.tile_to_data.scale)[displayed]
    start = np.rint(np.asarray(response.tile_to_data.translate)[displayed] / scale).astype(int)
    factors = np.asarray(layer.downsample_factors)[:, displayed]
    level = int(np.abs(factors - scale).sum(1).argmin())
    index = tuple(slice(int(s), int(s) + n) for s, n in zip(start, raw.shape))
    return level, index, raw


def assert_drawn_equals(layer, levels: list[np.ndarray]) -> int:
    """``layer``'s drawn pixels equal ``levels`` (level 0 first, 2D) where napari sliced them; returns the level."""
    level, index, raw = drawn(layer)
    expected = levels[level][index] if index else levels[level]
    np.testing.assert_array_equal(raw, expected)
    return level


class GuiThreadMonitor:
    """Ticks every 10 ms on the GUI thread and records the GUI thread's own CPU time at each tick.

    The CPU time between two ticks is what the GUI thread itself spent on other work (slots, napari's
    slicing, drawing) instead of handling events: unlike wall-clock gaps, it does not grow when other
    processes load the machine, so it measures the product, not the machine.
    """

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.cpu: list[float] = []
        self.wall: list[float] = []
        self.timer = QTimer()
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        self.cpu.append(time.thread_time())
        self.wall.append(time.perf_counter())

    def start(self) -> "GuiThreadMonitor":
        self.timer.start(10)
        return self

    def stop(self) -> None:
        self.timer.stop()

    @property
    def max_cpu_gap(self) -> float:
        return float(np.diff(self.cpu).max()) if len(self.cpu) > 1 else 0.0

    @property
    def max_wall_gap(self) -> float:
        return float(np.diff(self.wall).max()) if len(self.wall) > 1 else 0.0


class PanZoom:
    """Pans and zooms the viewer's camera every ``interval_ms``, as a user exploring the image does."""

    def __init__(self, viewer, extent_yx: tuple[float, float], interval_ms: int = 60, seed: int = 0) -> None:
        from qtpy.QtCore import QTimer

        self.viewer = viewer
        self.extent = extent_yx
        self.rng = np.random.default_rng(seed)
        self.moves = 0
        self.timer = QTimer()
        self.timer.timeout.connect(self._move)
        self.interval = interval_ms
        viewer.reset_view()
        self.fit = viewer.camera.zoom

    def _move(self) -> None:
        h, w = self.extent
        self.viewer.camera.center = (float(self.rng.uniform(0, h)), float(self.rng.uniform(0, w)))
        self.viewer.camera.zoom = self.fit * float(self.rng.choice([0.8, 1.0, 2.0, 4.0, 8.0]))
        self.moves += 1

    def start(self) -> "PanZoom":
        self.timer.start(self.interval)
        return self

    def stop(self) -> None:
        self.timer.stop()
        self.viewer.reset_view()


def answer_dialog(qtbot, button_text: str, object_name: str = "existing store", timeout: float = 30.0) -> list[str]:
    """Click ``button_text`` in the next modal dialog named ``object_name`` (polling from a timer, as the
    dialog's own event loop runs). Returns a list that receives the dialog's text when it was answered."""
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication, QMessageBox

    seen: list[str] = []
    deadline = time.perf_counter() + timeout
    timer = QTimer()

    def poll() -> None:
        box = QApplication.activeModalWidget()
        if isinstance(box, QMessageBox) and box.objectName() == object_name:
            seen.append(box.text())
            for button in box.buttons():
                if button.text() == button_text:
                    timer.stop()
                    button.click()
                    return
            raise AssertionError(f"no {button_text!r} button in {[b.text() for b in box.buttons()]}")
        if time.perf_counter() > deadline:
            timer.stop()

    timer.timeout.connect(poll)
    timer.start(20)
    seen.append  # keep the timer alive with the list
    answer_dialog._timers = getattr(answer_dialog, "_timers", []) + [timer]
    return seen


def wait_done(qtbot, widget, timeout: int = 300_000, condition: Callable[[], bool] | None = None) -> None:
    """Wait until the widget's worker has finished and its slots have run."""
    qtbot.waitUntil(lambda: widget.segment_button.isEnabled() and widget.worker is not None
                    and not widget.worker.is_running and (condition is None or condition()), timeout=timeout)


def wait_trained(qtbot, widget, timeout: int = 120_000) -> None:
    """Wait until the Train dock's worker has finished and its slots have run."""
    qtbot.waitUntil(lambda: widget.train_button.isEnabled() and widget.worker is not None
                    and not widget.worker.is_running, timeout=timeout)
