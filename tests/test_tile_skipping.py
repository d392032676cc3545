"""One mechanism for the tiles the network need not see (segarch.tiling.skipping): left out (all NaN) and constant."""

from __future__ import annotations

import numpy as np

from segarch.tiling.skipping import TileSkipper


class _Runner:
    """Logits = per-channel sums of the input and a fixed projection; counts the tiles it is shown."""

    def __init__(self, out_channels: int = 3) -> None:
        self.tiles = 0
        self.weights = np.random.default_rng().standard_normal(out_channels).astype(np.float32)

    def __call__(self, batch, batch_size):
        assert not np.isnan(batch).any(), "a NaN reached the network"
        self.tiles += len(batch)
        return (batch.sum(1, keepdims=True) * self.weights[None, :, None, None]).astype(np.float32)


def test_left_out_constant_and_partial_tiles():
    runner = _Runner()
    skipper = TileSkipper(runner, 3)
    rng = np.random.default_rng()
    content = rng.random((1, 8, 8)).astype(np.float32)
    flat = np.full((1, 8, 8), 0.25, np.float32)
    left_out = np.full((1, 8, 8), np.nan, np.float32)
    partial = content.copy()
    partial[:, :4] = np.nan
    assert skipper.lookup(content) is None and skipper.lookup(flat) is None  # never computed yet
    out = skipper(np.stack([content, flat, left_out, partial]), 4)
    np.testing.assert_allclose(out[0], content.sum(0) * runner.weights[:, None, None], rtol=1e-6)
    assert np.isnan(out[2]).all() and np.isnan(out[3][:, :4]).all() and not np.isnan(out[3][:, 4:]).any()
    np.testing.assert_allclose(out[3][:, 4:], out[0][:, 4:], rtol=1e-6)  # NaN run as 0, elsewhere unchanged
    assert runner.tiles == 4 and skipper.skipped == 1  # the left-out tile's slot is run as zeros (batch shape)
    shown = runner.tiles
    reused = skipper.lookup(np.full((1, 8, 8), 0.25, np.float32))  # the same constant, anywhere: no network call
    np.testing.assert_array_equal(reused, out[1])
    assert np.isnan(skipper.lookup(left_out)).all() and skipper.lookup(content) is None
    assert runner.tiles == shown and skipper.skipped == 3


def test_constant_reuse_can_be_turned_off():
    runner = _Runner()
    skipper = TileSkipper(runner, 3, reuse_constant=False)
    flat = np.full((2, 1, 8, 8), 0.5, np.float32)
    skipper(flat, 2)
    assert skipper.lookup(flat[0]) is None and runner.tiles == 2
