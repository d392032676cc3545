"""Shared fixtures: a folder for test artifacts (screenshots), and the GUI-test guard."""

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
