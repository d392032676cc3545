"""The work of one prediction: planes × output blocks × tiles, and how tile outputs become blocks.

The output is cut into blocks (the output's chunks). Tiles lie on one global grid, so a tile that
overlaps several blocks is computed once and added into each (blending is the same everywhere,
whatever the blocks). Blocks are visited column by column (a column is bounded along every axis
but the first), so the blocks open at any time — the memory in flight — are bounded by the column,
not by the image.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from segarch.axes import Layout
from segarch.tiling.grid import AxisGrid

__all__ = ["Plan", "Region", "Assembler", "BlockKey", "TileKey"]

BlockKey = tuple[tuple[int, ...], tuple[int, ...]]  # (plane index over loop axes, block index per spatial axis)
TileKey = tuple[tuple[int, ...], tuple[int, ...]]   # (plane index, tile index per spatial axis)


@dataclass(frozen=True)
class Plan:
    layout: Layout
    image_shape: tuple[int, ...]
    loop_shape: tuple[int, ...]
    grids: tuple[AxisGrid, ...]
    block: tuple[int, ...]
    column_blocks: int
    out_channels: int
    output: str
    out_dtype: np.dtype

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(g.size for g in self.grids)

    @property
    def tile_shape(self) -> tuple[int, ...]:
        return tuple(g.tile for g in self.grids)

    @property
    def blocks_per_axis(self) -> tuple[int, ...]:
        return tuple(-(-s // b) for s, b in zip(self.spatial_shape, self.block))

    def planes(self) -> Iterator[tuple[int, ...]]:
        return itertools.product(*(range(n) for n in self.loop_shape))

    def block_region(self, index: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
        return tuple((i * b, min((i + 1) * b, s)) for i, b, s in zip(index, self.block, self.spatial_shape))

    def tiles_of_block(self, key: BlockKey) -> list[TileKey]:
        plane, index = key
        per_axis = [g.tiles_touching(lo, hi) for g, (lo, hi) in zip(self.grids, self.block_region(index))]
        return [(plane, t) for t in itertools.product(*per_axis)]

    def tile_region(self, tile: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
        return tuple((g.starts[k], g.starts[k] + g.tile) for g, k in zip(self.grids, tile))

    def columns(self, done: set[BlockKey] = frozenset(), rows_per_region: int | None = None) -> list["Region"]:
        """Regions of blocks (skipping ``done`` ones), each computed with shared tiles.

        A region is a column of blocks (``column_blocks`` wide along every axis but the first);
        ``rows_per_region`` further cuts columns along the first axis (for distributed tasks).
        """
        counts = self.blocks_per_axis
        m = self.column_blocks
        regions = []
        for plane in self.planes():
            col_ranges = [range(0, n, m) for n in counts[1:]]
            for col in itertools.product(*col_ranges):
                inner = [range(c, min(c + m, n)) for c, n in zip(col, counts[1:])]
                rows = range(counts[0])
                step = rows_per_region or counts[0]
                for r0 in range(0, counts[0], step):
                    blocks = [(plane, (r,) + rest) for r in rows[r0: r0 + step] for rest in itertools.product(*inner)]
                    blocks = [b for b in blocks if b not in done]
                    if blocks:
                        regions.append(Region(self, blocks))
        return regions


class Region:
    """Blocks computed together: each tile they need is computed once, in the order blocks need them."""

    def __init__(self, plan: Plan, blocks: list[BlockKey]) -> None:
        self.blocks = blocks
        self.tiles_of = {b: plan.tiles_of_block(b) for b in blocks}
        self.blocks_of_tile: dict[TileKey, list[BlockKey]] = defaultdict(list)
        order = []
        for b in blocks:
            for t in self.tiles_of[b]:
                if t not in self.blocks_of_tile:
                    order.append(t)
                self.blocks_of_tile[t].append(b)
        self.tile_order: list[TileKey] = order


class Assembler:
    """Accumulates weighted tile logits into blocks and hands out each block when it is complete."""

    def __init__(self, plan: Plan, region: Region) -> None:
        self.plan = plan
        self.region = region
        self.remaining = {b: len(t) for b, t in region.tiles_of.items()}
        self.open: dict[BlockKey, np.ndarray] = {}

    def add(self, tile: TileKey, logits: np.ndarray) -> list[tuple[BlockKey, np.ndarray]]:
        plan = self.plan
        _, index = tile
        weight = None
        tile_region = plan.tile_region(index)
        finished = []
        for block in self.region.blocks_of_tile[tile]:
            block_region = plan.block_region(block[1])
            acc = self.open.get(block)
            if acc is None:
                acc = self.open[block] = np.zeros((plan.out_channels,) + tuple(hi - lo for lo, hi in block_region), np.float32)
            inter = [(max(a, c), min(b, d)) for (a, b), (c, d) in zip(tile_region, block_region)]
            if all(lo < hi for lo, hi in inter):
                if weight is None:
                    weight = _outer([g.weights[k] for g, k in zip(plan.grids, index)])
                t_sl = tuple(slice(lo - a, hi - a) for (lo, hi), (a, _) in zip(inter, tile_region))
                b_sl = tuple(slice(lo - c, hi - c) for (lo, hi), (c, _) in zip(inter, block_region))
                acc[(slice(None),) + b_sl] += logits[(slice(None),) + t_sl] * weight[t_sl]
            self.remaining[block] -= 1
            if self.remaining[block] == 0:
                finished.append((block, self._finish(block, self.open.pop(block))))
        return finished

    def _finish(self, block: BlockKey, acc: np.ndarray) -> np.ndarray:
        plan = self.plan
        region = plan.block_region(block[1])
        norm = _outer([g.norm[lo:hi] for g, (lo, hi) in zip(plan.grids, region)]).astype(np.float32)
        acc /= norm
        return convert(acc, plan.output, plan.out_dtype)


def convert(logits: np.ndarray, output: str, dtype: np.dtype) -> np.ndarray:
    """Blended logits ``(C, ...)`` → labels (argmax, or threshold for one channel), probabilities, or as they are
    (``"raw"``)."""
    if output == "raw":
        return logits.astype(dtype, copy=False)
    if output == "labels":
        if logits.shape[0] == 1:
            return (logits[0] > 0).astype(dtype)
        return logits.argmax(0).astype(dtype)
    if logits.shape[0] == 1:
        return (1.0 / (1.0 + np.exp(-logits))).astype(dtype)
    shifted = np.exp(logits - logits.max(0, keepdims=True))
    return (shifted / shifted.sum(0, keepdims=True)).astype(dtype)


def _outer(vectors: list[np.ndarray]) -> np.ndarray:
    out = np.asarray(vectors[0], np.float64)
    for v in vectors[1:]:
        out = np.multiply.outer(out, v)
    return out.astype(np.float32)
