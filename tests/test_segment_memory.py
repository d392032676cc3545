"""GUI memory during a large run stays near the headless engine's: the same 16384² generated lazy image and
model, the same number of tiles, headless and in the Segment widget with the camera panning, each in its own
process. Before the fix the GUI grew ~2.2× as much as the engine (napari cached the live layer's overview,
which read every level-0 block, and the engine's own reads)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import segarch

pytestmark = pytest.mark.gui

RUN = Path(__file__).with_name("memory_run.py")


def _run(mode: str, model, out, size: int = 16384, tiles: int = 200) -> dict:
    result = subprocess.run([sys.executable, str(RUN), mode, str(size), str(model), str(out), str(tiles)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])


def test_gui_memory_grows_as_the_headless_engine_does(tmp_path):
    import torch

    torch.manual_seed(0)
    model = segarch.Model.from_zoo("unet", features=(4, 8, 16), norm="batch", out_channels=2,
                                   class_names=["background", "cell"])
    model.trained = True
    path = segarch.save_model(model, tmp_path / "tiny.safetensors")
    headless = _run("headless", path, tmp_path / "headless.zarr")
    gui = _run("gui", path, tmp_path / "gui.zarr")
    assert "cancelled" in gui["status"]
    engine, viewer = headless["peak"] - headless["base"], gui["peak"] - gui["base"]
    print(f"RSS growth during 200 tiles of a 16384² image: headless {engine:.0f} MiB, GUI with pans {viewer:.0f} MiB "
          f"({viewer / engine:.2f}x)")
    assert viewer <= 1.5 * engine, f"the GUI grew {viewer:.0f} MiB, the headless engine {engine:.0f} MiB"
