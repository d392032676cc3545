"""Tiles the network need not see: one mechanism for everything ``segarch.predict`` skips.

:class:`TileSkipper` wraps the engine's batch runner and decides, per tile, in both paths (in this process,
:func:`segarch.tiling.pipeline.run_local`, and on a cluster, :mod:`segarch.tiling.distributed`):

- a tile whose pixels are all left out (NaN after pre-processing: nodata, glass around the tissue, see
  :mod:`segarch.tiling.scenes`) is not computed: its logits are NaN;
- a tile whose input is constant (empty background, a flat nodata fill, padding) is computed once per value
  and its logits reused: the network gives the same logits for the same input wherever the tile lies;
- the others run; a NaN never reaches the network (left-out pixels are run as 0 and put back as NaN in the
  logits), so after blending a left-out pixel is 0 in labels and NaN in probabilities.

:meth:`TileSkipper.lookup` answers before a tile is batched (no network call, no batch slot); the runner
itself (``skipper(batch, batch_size)``) still takes any batch, so a caller may skip the lookup.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TileSkipper", "constant_key"]


def constant_key(tile: np.ndarray) -> bytes | None:
    """For a tile ``(C, *tile)`` whose every channel is constant, its values as bytes (a cache key); else None."""
    flat = tile.reshape(tile.shape[0], -1)
    first = flat[:, :1]
    return first.tobytes() if (flat == first).all() else None


class TileSkipper:
    """The engine's batch runner with the tiles that need no network left out (see the module).

    Args:
        runner: ``runner(batch, batch_size) -> logits`` (float32 NumPy), e.g. :func:`segarch.runtimes.make_runner`'s.
        out_channels: the logits' channels.
        reuse_constant: compute a constant tile once per value (``False``: every such tile runs).

    ``skipped`` counts the tiles not computed (left out, or reused), ``computed`` the tiles run (a batch's
    zero padding included).
    """

    def __init__(self, runner, out_channels: int, reuse_constant: bool = True) -> None:
        self.runner = runner
        self.out_channels = out_channels
        self.reuse_constant = reuse_constant
        self.skipped = 0
        self.computed = 0
        self._constants: dict[bytes, np.ndarray] = {}  # a constant tile's values -> its logits

    def lookup(self, tile: np.ndarray) -> np.ndarray | None:
        """The logits of ``tile`` ``(C, *tile)`` if they need no network (all left out, or a constant tile
        computed before); ``None``: the tile must run."""
        if np.isnan(tile).all():
            self.skipped += 1
            return np.full((self.out_channels,) + tile.shape[1:], np.nan, np.float32)
        if self.reuse_constant:
            key = constant_key(tile)
            if key is not None and key in self._constants:
                self.skipped += 1
                return self._constants[key]
        return None

    def __call__(self, batch: np.ndarray, batch_size: int) -> np.ndarray:
        """Logits of ``batch`` ``(B, C, *tile)``: all-NaN tiles are not run, the batch keeps its shape (a tile's
        result does not depend on its neighbours), constant tiles' logits are kept for :meth:`lookup`."""
        bad = np.isnan(batch)
        if not bad.any():
            self.computed += len(batch)
            out = self.runner(batch, batch_size)
        else:
            left_out = bad.all(1)                                    # (B, *spatial): pixels left out
            empty = left_out.reshape(len(batch), -1).all(1)          # whole tiles left out
            keep = np.flatnonzero(~empty)
            out = np.full((len(batch), self.out_channels) + batch.shape[2:], np.nan, np.float32)
            if keep.size:
                x = np.where(bad[keep], np.float32(0), batch[keep])
                if len(keep) < len(batch):
                    x = np.concatenate([x, np.zeros((len(batch) - len(keep),) + x.shape[1:], x.dtype)])
                out[keep] = self.runner(x, batch_size)[: len(keep)]
            out[np.broadcast_to(left_out[:, None], out.shape)] = np.nan
            self.skipped += int(empty.sum())
            self.computed += int(keep.size)
        if self.reuse_constant:
            for tile, logits in zip(batch, out):
                key = constant_key(tile)
                if key is not None:
                    self._constants.setdefault(key, logits)
        return out
