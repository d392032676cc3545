"""The tile grid: where tiles sit along each axis, and how their outputs are weighted.

Tiles form a Cartesian grid (the same positions along an axis for every row), and every blend's
weight is a product of one-dimensional weights, so the normaliser ``Σ_tiles w`` at a pixel is the
product of per-axis sums: it is computed once per axis instead of being accumulated per pixel.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BLENDS", "AxisGrid", "axis_grid", "blend_weights_1d"]

BLENDS = ("gaussian", "constant", "crop")


@dataclass(frozen=True)
class AxisGrid:
    """Tiles along one axis of length ``size`` (after padding to ``padded``)."""

    size: int            # the image's extent along the axis
    padded: int          # extent after padding to a multiple of the network's size divisor
    tile: int            # tile extent along the axis
    starts: tuple[int, ...]
    weights: tuple[np.ndarray, ...]  # per tile, its 1D weight (length ``tile``)
    support: tuple[tuple[int, int], ...]  # per tile, where its weight is non-zero (absolute positions)
    norm: np.ndarray     # Σ of the weights covering each position (length ``padded``)

    def tiles_touching(self, lo: int, hi: int) -> list[int]:
        """Indices of the tiles whose weighted support overlaps ``[lo, hi)``."""
        return [k for k, (a, b) in enumerate(self.support) if a < hi and b > lo]


def _starts(padded: int, tile: int, stride: int) -> list[int]:
    starts = list(range(0, padded - tile + 1, stride))
    if starts[-1] + tile < padded:  # the last tile ends flush with the (padded) image, as MONAI's windows do
        starts.append(padded - tile)
    return starts


def blend_weights_1d(blend: str, tile: int) -> np.ndarray:
    """One axis of the blending window: MONAI-like Gaussian (σ = tile/8) or constant."""
    if blend == "gaussian":
        centre, sigma = (tile - 1) / 2, 0.125 * tile
        w = np.exp(-0.5 * ((np.arange(tile) - centre) / sigma) ** 2)
        return np.maximum(w / w.max(), 1e-3).astype(np.float64)  # never 0: border pixels keep a weight
    return np.ones(tile, np.float64)


def axis_grid(size: int, tile: int, overlap: int, divisor: int, blend: str) -> AxisGrid:
    """Plan the tiles along one axis.

    The axis is padded to a multiple of ``divisor`` and every tile starts at a multiple of it, so a
    network that down-samples sees the same pixel phase in every tile as on the whole image (tiling
    then changes nothing but the borders). ``tile`` is shrunk to the padded axis when the image is
    smaller; neighbouring tiles share at least ``overlap`` pixels.
    """
    padded = -(-size // divisor) * divisor
    tile = min(tile, padded)
    stride = max(divisor, (tile - overlap) // divisor * divisor)
    starts = _starts(padded, tile, stride)
    if blend == "crop":
        # Each tile keeps the part nearest its centre: neighbours split their overlap in the middle.
        bounds = [0] + [(starts[k] + tile + starts[k + 1]) // 2 for k in range(len(starts) - 1)] + [padded]
        weights = []
        for k, s in enumerate(starts):
            w = np.zeros(tile, np.float64)
            w[bounds[k] - s: bounds[k + 1] - s] = 1.0
            weights.append(w)
    else:
        base = blend_weights_1d(blend, tile)
        weights = [base] * len(starts)
    norm = np.zeros(padded, np.float64)
    support = []
    for s, w in zip(starts, weights):
        norm[s: s + tile] += w
        nonzero = np.flatnonzero(w)
        support.append((s + int(nonzero[0]), s + int(nonzero[-1]) + 1))
    return AxisGrid(size, padded, tile, tuple(starts), tuple(weights), tuple(support), norm)
