"""Where finished blocks go: a NumPy array, or a Zarr store that records which blocks are final."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

import numpy as np

from segarch.destinations import LOCK_NAME, StoreBusy, WriterLock
from segarch.tiling import pyramid
from segarch.tiling.plan import BlockKey, Plan

__all__ = ["NumpySink", "ZarrSink", "output_shape", "output_axes", "finished_blocks"]

_DONE_DIR = ".segarch-done"
_TMP_SUFFIX = ".segarch-tmp"


def output_axes(plan: Plan) -> str:
    return plan.layout.output_axes(plan.output)


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

    def open(self) -> "NumpySink":
        return self

    def close(self) -> None:
        pass

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
    """Blocks written into ``<path>/0`` of an OME-Zarr (NGFF 0.5, Zarr v3) image, each marked final once written.

    A block's marker file is created only after its data is in the store, so after a crash or a
    cancel the markers name exactly the blocks that are complete, and ``resume`` skips them. The
    markers and the writer's lock live in ``0/`` next to the chunks, where zarr does not look.
    A new store is made under a temporary name and renamed into place once its metadata is written,
    so a run killed while creating it never leaves a half-made store under the requested name.
    The object pickles as its path, so Dask workers write straight into the store.

    Call :meth:`open` before writing and :meth:`close` at the end (it releases the lock).
    """

    def __init__(self, path: str | os.PathLike, plan: Plan, fingerprint: dict[str, Any],
                 provenance: dict[str, Any], *, state: str, scale: tuple[float, ...] | None = None,
                 class_names: list[str] | None = None) -> None:
        self.path = Path(path)
        self.plan = plan
        self.fingerprint = json.dumps(fingerprint, sort_keys=True, default=str)
        self.provenance = provenance
        self.state = state  # "new", "resume" or "replace", from segarch.destinations.check_output_store
        self.scale = scale
        self.class_names = class_names
        self.array = None
        self.levels: list = []
        self._lock: WriterLock | None = None

    def open(self) -> "ZarrSink":
        """Lock the store, check a resumed run's settings, or (re)create it. Nothing is deleted before the lock
        is held and the store is known to be a segarch result."""
        import zarr

        if self.state in ("resume", "replace"):
            self._lock = WriterLock(self.path / "0", self.path).acquire()
            if self.state == "resume":
                group = zarr.open_group(str(self.path), mode="r+")
                previous = dict(group.attrs).get("segarch", {}).get("fingerprint")
                if previous != self.fingerprint:
                    self.close()
                    raise ValueError(_mismatch(self.path, previous, self.fingerprint))
                self.levels = pyramid.open_levels(group)
                self.array = self.levels[0]
                return self
            shutil.rmtree(self.path / "0" / _DONE_DIR, ignore_errors=True)
            for child in self.path.iterdir():  # everything but the lock we hold
                if child.name != "0":
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            for child in (self.path / "0").iterdir():
                if child.name != LOCK_NAME:
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            self._create(self.path)
        else:
            _remove_stale_temporaries(self.path)
            tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}{_TMP_SUFFIX}")
            (tmp / "0").mkdir(parents=True)
            self._lock = WriterLock(tmp / "0", self.path).acquire()
            try:
                self._create(tmp)
                if self.path.is_dir() and not any(self.path.iterdir()):
                    self.path.rmdir()  # an empty folder the user made for it
                os.rename(tmp, self.path)  # the lock's file moves with it: still held
            except BaseException:
                self.close()
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        self.levels = pyramid.open_levels(zarr.open_group(str(self.path), mode="r+"))
        self.array = self.levels[0]
        return self

    def _create(self, where: Path) -> None:
        import zarr

        from segarch.io.ome_zarr import ome_attrs

        plan = self.plan
        group = zarr.open_group(str(where), mode="a", zarr_format=3)
        axes = output_axes(plan)
        chunks = tuple(1 if a in plan.layout.loop else (plan.out_channels if a == "C" else b)
                       for a, b in zip(axes, self._chunk_sizes()))
        group.create_array("0", shape=output_shape(plan), chunks=chunks, dtype=plan.out_dtype, fill_value=0,
                           dimension_names=[a.lower() for a in axes])
        (where / "0" / _DONE_DIR).mkdir(exist_ok=True)
        spatial = dict(zip(plan.layout.spatial, self.scale or (1.0,) * len(plan.layout.spatial)))
        properties = None
        if plan.output == "labels" and self.class_names:
            properties = [{"label-value": i, "class": n} for i, n in enumerate(self.class_names)]
        attrs = ome_attrs(axes, [float(spatial.get(a, 1.0)) for a in axes], name=self.path.stem,
                          labels=plan.output == "labels", properties=properties)
        attrs["segarch"] = {"fingerprint": self.fingerprint, "settings": self.provenance}
        group.attrs.update(attrs)
        pyramid.create_levels(group, plan)  # coarse levels, updated as blocks finish

    def close(self) -> None:
        """Release the writer's lock (the store stays as it is)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def _chunk_sizes(self) -> tuple[int, ...]:
        blocks = dict(zip(self.plan.layout.spatial, self.plan.block))
        return tuple(blocks.get(a, 1) for a in output_axes(self.plan))

    def __getstate__(self):
        pyramid.mark_stale(self.levels)  # Dask workers write level 0 only; the levels are rebuilt at the end
        return {"path": self.path, "plan": self.plan}

    def __setstate__(self, state):
        import zarr

        self.path, self.plan = state["path"], state["plan"]
        self._lock = None
        self.levels = pyramid.open_levels(zarr.open_group(str(self.path), mode="r+"))
        self.array = self.levels[0]

    def _marker(self, key: BlockKey) -> Path:
        plane, block = key
        return self.path / "0" / _DONE_DIR / ("_".join(map(str, plane)) + "-" + "_".join(map(str, block)))

    def write(self, key: BlockKey, data: np.ndarray) -> None:
        self.array[_index(self.plan, key)] = data
        pyramid.write_block(self.levels, self.plan, key, data)  # before the marker: a final block has its levels
        self._marker(key).touch()

    def done(self) -> set[BlockKey]:
        return finished_blocks(self.path)

    def mark_complete(self, complete: bool) -> None:
        if complete:
            pyramid.finish(self.levels, self.plan)
        attrs = dict(self.array.attrs)
        attrs["complete"] = complete
        self.array.attrs.update(attrs)

    def result(self):
        pyramid.flush(self.levels)  # the run ended (finished or cancelled): coarse chunks waiting in memory
        return self.array


def finished_blocks(path: str | os.PathLike) -> set[BlockKey]:
    """The blocks of the prediction store at ``path`` marked final (empty for a store without markers)."""
    keys = set()
    folder = Path(path) / "0" / _DONE_DIR
    for marker in folder.iterdir() if folder.is_dir() else ():
        plane, block = marker.name.split("-")
        keys.add((tuple(int(v) for v in plane.split("_") if v), tuple(int(v) for v in block.split("_"))))
    return keys


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary stores of runs killed while creating ``path`` (their lock is free): removed."""
    from filelock import Timeout

    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*{_TMP_SUFFIX}"):
        lock = WriterLock(tmp / "0", tmp)
        try:
            lock.acquire()
        except (StoreBusy, Timeout, OSError):
            continue
        try:
            shutil.rmtree(tmp, ignore_errors=True)
        finally:
            lock.release()


def _mismatch(path: Path, previous: str | None, now: str) -> str:
    if previous is None:
        return (f"`out`={str(path)!r} holds no record of its settings, so it cannot be resumed safely; pass "
                "overwrite=True to start again.")
    try:
        old, new = json.loads(previous), json.loads(now)
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    except (TypeError, ValueError):
        changed = []
    what = ", ".join(changed) if changed else "the settings"
    return (f"`out`={str(path)!r} holds a run with other settings ({what} differ); resume needs the same model "
            "(weights and pre-processing), image (content), tile, overlap, blend and output. Pass overwrite=True to "
            "start again, or another `out`.")
