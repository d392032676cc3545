"""segarch.destinations.store_state classifies what is at an output path (the Segment dock asks it before a run)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import zarr

import segarch
from segarch.destinations import store_state


def test_store_state_of_real_stores(tmp_path):
    rng = np.random.default_rng()
    net = torch.nn.Conv2d(1, 2, 3, padding=1).eval()
    image = rng.normal(size=(600, 80)).astype(np.float32)  # two blocks of 512 rows: a cancel leaves one undone
    assert store_state(tmp_path / "nothing.zarr") == "absent"
    (tmp_path / "empty.zarr").mkdir()
    assert store_state(tmp_path / "empty.zarr") == "absent"

    segarch.predict(net, image, axes="YX", tile=64, out=tmp_path / "done.zarr")
    assert store_state(tmp_path / "done.zarr") == "complete"

    cancel = threading.Event()

    def stop_after_first_batch(done, total):
        if done:
            cancel.set()

    with pytest.raises(segarch.PredictionCancelled):
        segarch.predict(net, image, axes="YX", tile=64, batch_size=1, out=tmp_path / "half.zarr",
                        progress=stop_after_first_batch, cancel=cancel)
    assert store_state(tmp_path / "half.zarr") == "incomplete"
    assert store_state(str(tmp_path / "half.zarr")) == "incomplete"

    zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w").create_array("0", shape=(4,), dtype="u1")
    assert store_state(tmp_path / "foreign.zarr") == "other"  # not ours: never deleted
    (tmp_path / "a.txt").write_text("x")
    assert store_state(tmp_path / "a.txt") == "other"
