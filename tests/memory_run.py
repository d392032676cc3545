"""One run for tests/test_segment_memory.py, in its own process: the same lazy image and model, segmented
headless (``segarch.predict``) or in napari's Segment widget with the camera panning, until ``tiles`` tiles
are done (then cancelled). Prints ``RESULT {json}``: RSS before the run, its peak during the run (MiB)."""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import numpy as np


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


class PeakRSS(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = rss_mib()
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, rss_mib())
            time.sleep(0.05)


def lazy_pyramid(size: int) -> list:
    """A generated lazy image with its own coarse levels (each made on demand, cheaply)."""
    import dask.array as da

    rng = da.random.default_rng(0)
    levels, n = [], size
    while True:
        levels.append(rng.random((n, n), chunks=512, dtype=np.float32))
        if n <= 1024:
            return levels
        n //= 2


def main() -> None:
    mode, size, model_path, out, tiles = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
    import torch

    torch.set_num_threads(1)
    import segarch

    model = segarch.load_model(model_path)
    levels = lazy_pyramid(size)
    if mode == "headless":
        cancel = threading.Event()

        def progress(done, total):
            if done >= tiles:
                cancel.set()

        base, peak, started = rss_mib(), PeakRSS(), time.perf_counter()
        try:
            segarch.predict(model, levels[0], out=out, tile=256, batch_size=4, progress=progress, cancel=cancel)
        except segarch.PredictionCancelled:
            pass
        peak.done.set()
        print("RESULT " + json.dumps({"base": base, "peak": peak.peak, "seconds": time.perf_counter() - started}),
              flush=True)
        return

    import napari
    from qtpy.QtCore import QTimer

    import napari_segarch._segment_widget as module

    viewer = napari.Viewer()
    viewer.add_image(levels, name="large", multiscale=True, contrast_limits=(0, 1))
    widget = module.SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    widget.select_model("file")
    widget.file_edit.setText(model_path)
    widget.image_combo.setCurrentText("large")
    widget.out_edit.setText(out)
    widget.tile_spin.setValue(256)
    module.resolve_choice(widget.model_key(), path=model_path)  # torch and the model loaded, as headless
    rng = np.random.default_rng(0)
    state: dict = {}

    def start() -> None:
        state["base"], state["peak"], state["started"] = rss_mib(), PeakRSS(), time.perf_counter()
        widget.segment_button.click()

    def move() -> None:
        if "peak" in state and os.environ.get("SEGARCH_PAN", "1") == "1":
            viewer.camera.center = (float(rng.uniform(0, size)), float(rng.uniform(0, size)))
            viewer.camera.zoom = float(rng.choice([0.03, 0.1, 0.3, 1.0])) * 1000 / size

    def check() -> None:
        if "peak" not in state or widget.worker is None:
            return
        if widget.progress_bar.value() >= tiles and widget.worker.is_running:
            widget.cancel()
        if not widget.worker.is_running and widget.segment_button.isEnabled():
            checker.stop()
            mover.stop()
            state["peak"].done.set()
            print("RESULT " + json.dumps({"base": state["base"], "peak": state["peak"].peak,
                                          "seconds": time.perf_counter() - state["started"],
                                          "status": widget.status.text()}), flush=True)
            viewer.close()

    QTimer.singleShot(1500, start)
    checker, mover = QTimer(), QTimer()
    checker.timeout.connect(check)
    mover.timeout.connect(move)
    checker.start(100)
    mover.start(150)
    napari.run()


if __name__ == "__main__":
    main()
