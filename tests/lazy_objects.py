"""A huge lazy image (Dask) of bright discs, computed chunk by chunk: never held whole in memory."""

from __future__ import annotations

import numpy as np


def disc_centres(shape, count: int, seed: int, radius=(12, 28), margin: int = 8) -> list[tuple[int, int, int]]:
    """``count`` non-overlapping discs ``(y, x, r)`` at least ``margin`` pixels inside ``shape`` (2D), from ``seed``.

    The margin keeps ``box_of(disc, pad)`` inside the image for ``pad < margin``: a window that starts before 0
    would be cut (CI once drew a disc 2 px from the edge)."""
    rng = np.random.default_rng(seed)
    discs: list[tuple[int, int, int]] = []
    while len(discs) < count:
        r = int(rng.integers(*radius))
        y, x = (int(rng.integers(r + margin, s - r - margin)) for s in shape)
        if all((y - v) ** 2 + (x - u) ** 2 > (r + q + 6) ** 2 for v, u, q in discs):
            discs.append((y, x, r))
    return discs


def disc_mask(disc, start, shape) -> np.ndarray:
    """The disc's pixels in the window of ``shape`` starting at ``start``."""
    y, x, r = disc
    yy, xx = np.ogrid[start[0]:start[0] + shape[0], start[1]:start[1] + shape[1]]
    return (yy - y) ** 2 + (xx - x) ** 2 <= r * r


def lazy_disc_image(shape, discs, *, chunks=1024, seed=0):
    """A float32 Dask image of ``shape`` with noise and the bright ``discs`` (each block made when read)."""
    import dask.array as da

    def block(block_info=None):
        info = block_info[None]
        (y0, y1), (x0, x1) = info["array-location"]
        rng = np.random.default_rng([seed, y0, x0])
        out = rng.normal(100, 8, (y1 - y0, x1 - x0)).astype(np.float32)
        for disc in discs:
            y, x, r = disc
            if y + r >= y0 and y - r < y1 and x + r >= x0 and x - r < x1:
                out[disc_mask(disc, (y0, x0), out.shape)] += 120
        return out

    return da.map_blocks(block, dtype=np.float32, chunks=da.core.normalize_chunks(chunks, shape))


def box_of(disc, pad: int = 0):
    """The ``(start, size)`` of the disc's bounding box grown by ``pad`` on each side."""
    y, x, r = disc
    return (y - r - pad, x - r - pad), (2 * r + 1 + 2 * pad,) * 2


def lazy_disc_pyramid(shape, discs, *, levels: int, chunks=1024, seed=0) -> list:
    """The same image as levels for a multiscale napari layer: level ``k`` of ``shape // 2**k`` with the discs
    scaled (each level made on its own, so an overview never computes level 0's blocks)."""
    out = []
    for k in range(levels):
        f = 2 ** k
        scaled = [(y // f, x // f, max(1, r // f)) for y, x, r in discs]
        out.append(lazy_disc_image(tuple(n // f for n in shape), scaled, chunks=chunks, seed=seed + k))
    return out
