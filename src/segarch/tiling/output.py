"""Where finished blocks go: a NumPy array, or a Zarr store that records which blocks are final."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from segarch.tiling import pyramid
from segarch.tiling.plan import BlockKey, Plan

__all__ = ["NumpySink", "ZarrSink", "output_shape", "output_axes"]

_DONE_DIR = ".segarch-done"


def output_axes(plan: Plan) -> str:
    return plan.layout.labels_axes() if plan.output == "labels" else plan.layout.probabilities_axes()


def output_shape(plan: Plan) -> tuple[int, ...]:
    sizes = dict(zip(plan.layout.axes, plan.image_shape))
    sizes["C"] = plan.out_channels
    return tuple(sizes[a] for a in output_axes(plan))


def _index(plan: Plan, key: BlockKey) -> tuple:
    plane, block = key
    loop = dict(zip(plan.layout.loop, plane))
    spatial = dict(zip(plan.layout.spatial, (slice(lo, hi) for lo, hi in plan.block_region(block))))
    return tuple(loop[a] if a in loop else spatial.get(a, slice(None)) for a in output_axes(plan))


class NumpySink:
    """Blocks written into an in-memory array."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.array = np.zeros(output_shape(plan), plan.out_dtype)

    def write(self, key: BlockKey, data: np.ndarray) -> None:
        self.array[_index(self.plan, key)] = data

    def done(self) -> set[BlockKey]:
        return set()

    def result(self):
        return self.array


class ZarrSink:
    """Blocks written into ``<path>/0`` of an OME-Zarr group, each marked final once written.

    A block's marker file is created only after its data is in the store, so after a crash or a
    cancel the markers name exactly the blocks that are complete, and ``resume`` skips them.
    The object pickles as its path, so Dask workers write straight into the store.
    """

    def __init__(self, path: str | os.PathLike, plan: Plan, settings: dict[str, Any], *, resume: bool,
                 overwrite: bool, scale: tuple[float, ...] | None = None) -> None:
        import zarr

        self.path = Path(path)
        self.plan = plan
        fingerprint = json.dumps(settings, sort_keys=True, default=str)
        exists = self.path.exists() and any(self.path.iterdir()) if self.path.exists() else False
        if exists and resume:
            group = zarr.open_group(str(self.path), mode="r+")
            previous = group.attrs.get("segarch", {}).get("fingerprint")
            if previous != fingerprint:
                raise ValueError(
                    f"`out`={str(self.path)!r} holds a run with other settings; resume needs the same model, image, "
                    f"tile, overlap, blend and output.\n  stored: {previous}\n  now:    {fingerprint}"
                )
        else:
            if exists and not overwrite:
                raise ValueError(
                    f"`out`={str(self.path)!r} already exists; pass resume=True to continue that run or "
                    "overwrite=True to replace it."
                )
            if exists:
                shutil.rmtree(self.path)
            group = zarr.open_group(str(self.path), mode="w")
            chunks = tuple(1 if a in plan.layout.loop else (plan.out_channels if a == "C" else b)
                           for a, b in zip(output_axes(plan), self._chunk_sizes()))
            group.create_array("0", shape=output_shape(plan), chunks=chunks, dtype=plan.out_dtype, fill_value=0)
            group.attrs.update(_ome_metadata(plan, settings, fingerprint, scale))
            pyramid.create_levels(group, plan)  # coarse levels, updated as blocks finish
        (self.path / _DONE_DIR).mkdir(parents=True, exist_ok=True)
        self.array = group["0"]
        self.levels = pyramid.open_levels(group)

    def _chunk_sizes(self) -> tuple[int, ...]:
        blocks = dict(zip(self.plan.layout.spatial, self.plan.block))
        return tuple(blocks.get(a, 1) for a in output_axes(self.plan))

    def __getstate__(self):
        pyramid.mark_stale(self.levels)  # Dask workers write level 0 only; the levels are rebuilt at the end
        return {"path": self.path, "plan": self.plan}

    def __setstate__(self, state):
        import zarr

        self.path, self.plan = state["path"], state["plan"]
        self.levels = pyramid.open_levels(zarr.open_group(str(self.path), mode="r+"))
        self.array = self.levels[0]

    def _marker(self, key: BlockKey) -> Path:
        plane, block = key
        return self.path / _DONE_DIR / ("_".join(map(str, plane)) + "-" + "_".join(map(str, block)))

    def write(self, key: BlockKey, data: np.ndarray) -> None:
        self.array[_index(self.plan, key)] = data
        pyramid.write_block(self.levels, self.plan, key, data)  # before the marker: a final block has its levels
        self._marker(key).touch()

    def done(self) -> set[BlockKey]:
        keys = set()
        for marker in (self.path / _DONE_DIR).iterdir():
            plane, block = marker.name.split("-")
            keys.add((tuple(int(v) for v in plane.split("_") if v), tuple(int(v) for v in block.split("_"))))
        return keys

    def mark_complete(self, complete: bool) -> None:
        if complete:
            pyramid.finish(self.levels, self.plan)
        attrs = dict(self.array.attrs)
        attrs["complete"] = complete
        self.array.attrs.update(attrs)

    def result(self):
        pyramid.flush(self.levels)  # the run ended (finished or cancelled): coarse chunks waiting in memory
        return self.array


def _ome_metadata(plan: Plan, settings: dict[str, Any], fingerprint: str, scale) -> dict[str, Any]:
    axes = output_axes(plan)
    kinds = {"T": "time", "C": "channel", "Z": "space", "Y": "space", "X": "space"}
    spatial_scale = dict(zip(plan.layout.spatial, scale or (1.0,) * len(plan.layout.spatial)))
    attrs: dict[str, Any] = {
        "multiscales": [{
            "version": "0.4",
            "name": settings.get("name", "segmentation"),
            "axes": [{"name": a.lower(), "type": kinds[a]} for a in axes],
            "datasets": [{"path": "0", "coordinateTransformations": [
                {"type": "scale", "scale": [float(spatial_scale.get(a, 1.0)) for a in axes]}]}],
        }],
        "segarch": {"fingerprint": fingerprint, "settings": settings},
    }
    if plan.output == "labels":
        attrs["image-label"] = {"version": "0.4", "source": {"image": "../../"}}
    return attrs
